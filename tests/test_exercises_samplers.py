"""Notebook 02's exercises: labkit's reference answers pass their checks; each typical mistake fails with its
own diagnosis; student exceptions, stubs and hangs become one-line results; from_notebook reads a saved
notebook; notebook 04's experiment trains on a student's sampler class."""
import contextlib
import io

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_notebook

from conftest import quietly
from labkit.data.samplers import FirstSliceSampler, SeedPerRankSampler
from labkit.exercises import sampler_checks, use
from labkit.exercises.from_notebook import from_notebook
from labkit.exercises.sampler_answers import RandomPartitionSampler, RandomSamplingSampler, dirichlet_split
from labkit.exercises.sampler_checks import check_dirichlet_split, check_partition_sampler, check_sampling_sampler


# ---------------------------------------------------------------- the reference answers pass, quietly

@pytest.mark.parametrize("check, answer, sizes", [
    (check_partition_sampler, RandomPartitionSampler, [{}, {"nodes": (1, 4, 7), "size": 5003}, {"nodes": 5, "size": 999}]),
    (check_sampling_sampler, RandomSamplingSampler, [{}, {"nodes": 3, "size": 6001}, {"nodes": 5, "size": 10000}]),
    (check_dirichlet_split, dirichlet_split, [{}, {"nodes": 5, "size": 3000}, {"nodes": 20, "size": 10000}]),
], ids=["partition", "sampling", "dirichlet"])
def test_the_reference_answer_passes_its_check_at_several_sizes(check, answer, sizes):
    for kwargs in sizes:
        result, stderr = quietly(check, answer, **kwargs)
        assert result.passed, (kwargs, result.message)
        assert stderr == ""
    assert use(result, answer, quiet=True) is answer  # passed: the student's own object is used


# ---------------------------------------------------------------- the samplers' mistakes

def _slice_of(order, sampler):
    share = len(sampler)
    return iter(order[sampler.rank * share:(sampler.rank + 1) * share].tolist())


class IgnoresEpoch(RandomPartitionSampler):
    def __iter__(self):
        return _slice_of(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)), self)


class WrongLength(RandomPartitionSampler):
    def __len__(self):
        return self.size // self.nodes - 1

    def __iter__(self):
        order, share = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 99 + self.epoch)), \
            self.size // self.nodes
        return iter(order[self.rank * share:(self.rank + 1) * share].tolist())


class KeepsRemainder(RandomPartitionSampler):
    """The last rank takes the size % nodes left-over samples too."""

    def __len__(self):
        return self.size // self.nodes + (self.rank == self.nodes - 1) * (self.size % self.nodes)

    def __iter__(self):
        order, share = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 99 + self.epoch)), self.size // self.nodes
        return iter(order[self.rank * share:None if self.rank == self.nodes - 1 else (self.rank + 1) * share].tolist())


class SameSliceEverywhere(RandomPartitionSampler):
    def __iter__(self):
        return iter(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.epoch))[:len(self)].tolist())


class NotShuffled(RandomPartitionSampler):
    def __iter__(self):
        return iter(range(self.rank * len(self), (self.rank + 1) * len(self)))


class IgnoresSeed(RandomPartitionSampler):
    def __iter__(self):
        return _slice_of(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.epoch)), self)


@pytest.mark.parametrize("mistake, phrase", [
    (SeedPerRankSampler, "every rank shuffles with its own seed"),
    (FirstSliceSampler, "every rank takes the first slice"),
    (IgnoresEpoch, "epoch 1 repeats epoch 0's order: set_epoch is ignored"),
    (WrongLength, "rank 0 yields 3000 indices but len() says 2999"),
    (KeepsRemainder, "size % nodes = 1 left over are dropped"),
    (SameSliceEverywhere, "every rank yields the same 3000 indices"),
    (NotShuffled, "nothing is shuffled"),
    (IgnoresSeed, "the generator ignores seed"),
], ids=lambda v: getattr(v, "__name__", "")[:20])
def test_each_partition_sampler_mistake_fails_with_its_own_diagnosis(mistake, phrase):
    result, stderr = quietly(check_partition_sampler, mistake)
    assert not result.passed and result.exercise == "RandomPartitionSampler"
    assert phrase in result.message, result.message
    assert stderr == ""


def test_the_original_labs_seed_per_rank_sampler_is_told_its_overlap_in_numbers():
    message = check_partition_sampler(SeedPerRankSampler).message
    overlap = float(message.split("overlap by ")[1].split(" %")[0])
    assert 45 < overlap < 55 and "cover only 7" in message  # about half shared, about 75 % covered
    assert "cover only 50.0 % of the data" in check_partition_sampler(FirstSliceSampler).message


class WithoutReplacement(RandomSamplingSampler):
    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.rank, self.epoch))
        return iter(rng.permutation(self.size)[:len(self)].tolist())


class SameDrawsOnEveryRank(RandomSamplingSampler):
    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.epoch)).integers(0, self.size, len(self)).tolist())


class SameDrawsEveryEpoch(RandomSamplingSampler):
    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.rank)).integers(0, self.size, len(self)).tolist())


class DrawsFromItsHalf(RandomSamplingSampler):
    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.rank, self.epoch))
        return iter((self.rank * len(self) + rng.integers(0, len(self), len(self))).tolist())


class DrawsTheWholeSize(RandomSamplingSampler):
    def __len__(self):
        return self.size

    def __iter__(self):
        return iter(np.random.default_rng((self.seed, self.rank, self.epoch)).integers(0, self.size, self.size).tolist())


@pytest.mark.parametrize("mistake, phrase", [
    (WithoutReplacement, "random sampling never repeats an index in an epoch"),
    (SameDrawsOnEveryRank, "both ranks draw the same indices: seed the generator with the rank too"),
    (SameDrawsEveryEpoch, "epoch 1 repeats epoch 0's draws: set_epoch is ignored"),
    (DrawsFromItsHalf, "every rank draws from the whole dataset"),
    (DrawsTheWholeSize, "each rank draws size // nodes = 3000 per epoch"),
], ids=lambda v: getattr(v, "__name__", "")[:20])
def test_each_sampling_sampler_mistake_fails_with_its_own_diagnosis(mistake, phrase):
    result, stderr = quietly(check_sampling_sampler, mistake)
    assert not result.passed and result.exercise == "RandomSamplingSampler"
    assert phrase in result.message, result.message
    assert stderr == ""


# ---------------------------------------------------------------- the Dirichlet split's mistakes

def duplicates(labels, nodes, alpha, seed=0):
    parts = dirichlet_split(labels, nodes, alpha, seed)
    parts[1] = np.concatenate([parts[1], parts[0][:1]])
    return parts


def loses_half(labels, nodes, alpha, seed=0):
    return [part[: len(part) // 2] for part in dirichlet_split(labels, nodes, alpha, seed)]


def iid_split(labels, nodes, alpha, seed=0):
    return np.array_split(np.random.default_rng(seed).permutation(len(labels)), nodes)


def fixed_alpha(labels, nodes, alpha, seed=0):
    return dirichlet_split(labels, nodes, 0.5, seed)


def inverse_alpha(labels, nodes, alpha, seed=0):
    return dirichlet_split(labels, nodes, 1 / alpha, seed)


def one_draw_for_all_classes(labels, nodes, alpha, seed=0):
    rng = np.random.default_rng(seed)
    shares, parts = rng.dirichlet(np.full(nodes, alpha)), [[] for _ in range(nodes)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for node, chunk in enumerate(np.split(members, (np.cumsum(shares)[:-1] * len(members)).astype(int))):
            parts[node].append(chunk)
    return [np.concatenate(chunks) for chunks in parts]


def unseeded(labels, nodes, alpha, seed=0):
    return dirichlet_split(labels, nodes, alpha, int(np.random.randint(1 << 30)))


def ignores_seed(labels, nodes, alpha, seed=0):
    return dirichlet_split(labels, nodes, alpha, 0)


def too_few_parts(labels, nodes, alpha, seed=0):
    return dirichlet_split(labels, nodes, alpha, seed)[:-1]


@pytest.mark.parametrize("mistake, phrase", [
    (duplicates, "is given to two nodes (0 and 1)"),
    (loses_half, "samples missing"),
    (iid_split, "with alpha=0.1 every node still holds all 10 classes evenly"),
    (fixed_alpha, "a larger alpha should give less skew"),
    (inverse_alpha, "alpha works the wrong way round"),
    (one_draw_for_all_classes, "draw fresh proportions for each class"),
    (unseeded, "two calls with seed=0 gave different splits"),
    (ignores_seed, "the split ignores seed"),
    (too_few_parts, "returned 9 parts for 10 nodes"),
], ids=lambda v: getattr(v, "__name__", "")[:20])
def test_each_dirichlet_mistake_fails_with_its_own_diagnosis(mistake, phrase):
    result, stderr = quietly(check_dirichlet_split, mistake)
    assert not result.passed and result.exercise == "dirichlet_split"
    assert phrase in result.message, result.message
    assert stderr == ""


# ---------------------------------------------------------------- stubs, exceptions, hangs

class Stub(RandomPartitionSampler):
    def __iter__(self):
        raise NotImplementedError()


class Crashes(RandomSamplingSampler):
    def __iter__(self):
        return iter([1 / 0])


class BadConstructor(RandomPartitionSampler):
    def __init__(self, size, rank, nodes, seed=0):
        raise ValueError("oops\nsecond line")


class LoopsForever(RandomPartitionSampler):
    def __iter__(self):
        while True:
            try:
                pass
            except Exception:  # noqa: BLE001 - a student's catch-all must not swallow the time limit
                pass


def test_student_exceptions_become_one_line_results_naming_the_function(monkeypatch):
    assert check_partition_sampler(Stub).message == "not written yet: Stub.__iter__ still raises NotImplementedError"
    assert check_sampling_sampler(Crashes).message == "Crashes.__iter__ raised ZeroDivisionError: division by zero"
    message = check_partition_sampler(BadConstructor).message
    assert message == "BadConstructor(size, rank, nodes, seed) raised ValueError: oops second line"

    def stub(labels, nodes, alpha, seed=0):
        raise NotImplementedError()
    assert check_dirichlet_split(stub).message == "not written yet: dirichlet_split still raises NotImplementedError"
    monkeypatch.setattr(sampler_checks, "SECONDS", 0.5)
    result = check_partition_sampler(LoopsForever)
    assert not result.passed and "did not finish within 0.5 s: does it loop forever?" in result.message
    note = io.StringIO()
    with contextlib.redirect_stdout(note):
        assert use(result, LoopsForever) is RandomPartitionSampler  # not passed: labkit's reference
    assert "RandomPartitionSampler is not done yet" in note.getvalue()


# ---------------------------------------------------------------- from_notebook

SETUP = {"nbgrader": {"grade": False, "grade_id": "setup", "locked": True, "schema_version": 3,
                      "solution": False, "task": False}}


def saved(tmp_path, *cells):
    path = tmp_path / "02_data_partitioning.ipynb"
    nbformat.write(new_notebook(cells=list(cells)), path)
    return path


def test_from_notebook_takes_the_class_from_a_saved_notebook_and_checks_it(tmp_path):
    setup = new_code_cell("%matplotlib inline\nimport torch\nfrom torch.utils.data import Sampler\n"
                          "from labkit.exercises.sampler_answers import ScaffoldSampler\nprint('noise')", metadata=SETUP)
    mine = new_code_cell("class RandomPartitionSampler(ScaffoldSampler):\n    def __iter__(self):\n"
                         "        g = torch.Generator().manual_seed(self.seed + self.epoch)\n"
                         "        order, share = torch.randperm(self.size, generator=g), len(self)\n"
                         "        return iter(order[self.rank * share:(self.rank + 1) * share].tolist())")
    other = new_code_cell("raise RuntimeError('this cell must not run')")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cls, result = from_notebook(saved(tmp_path, setup, other, mine), "RandomPartitionSampler", check_partition_sampler)
    assert result.passed and cls.__name__ == "RandomPartitionSampler" and out.getvalue() == ""
    assert use(result, cls, quiet=True) is cls

    cls, result = from_notebook(saved(tmp_path, setup, new_code_cell(mine.source.replace("seed + self.epoch", "seed"))),
                                "RandomPartitionSampler", check_partition_sampler)
    assert not result.passed and "set_epoch is ignored" in result.message


def test_from_notebook_says_why_when_it_cannot_take_the_class(tmp_path):
    cls, result = from_notebook(tmp_path / "missing.ipynb", "RandomSamplingSampler", check_sampling_sampler)
    assert cls is None and result.exercise == "RandomSamplingSampler" and "missing.ipynb was not found" in result.message
    (tmp_path / "corrupt.ipynb").write_text("{not json")
    assert "could not be read as a notebook" in from_notebook(tmp_path / "corrupt.ipynb", "X", check_sampling_sampler,
                                                              exercise="RandomSamplingSampler")[1].message
    path = saved(tmp_path, new_code_cell("x = 1"))
    assert "no cell of 02_data_partitioning.ipynb defines RandomSamplingSampler" in \
        from_notebook(path, "RandomSamplingSampler", check_sampling_sampler)[1].message
    path = saved(tmp_path, new_code_cell("class RandomSamplingSampler(NoSuchBase):\n    pass"))
    cls, result = from_notebook(path, "RandomSamplingSampler", check_sampling_sampler)
    assert cls is None and not result.passed
    assert result.message == ("02_data_partitioning.ipynb's cell that defines RandomSamplingSampler raised "
                              "NameError: name 'NoSuchBase' is not defined")
    assert use(result, cls, quiet=True) is RandomSamplingSampler


# ---------------------------------------------------------------- notebook 04 trains on a student's class

class PyTorchStyle(RandomPartitionSampler):
    """Right, but seeded as PyTorch's DistributedSampler (seed + epoch): not labkit's orders."""

    def __iter__(self):
        return _slice_of(torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)), self)


def test_the_sampler_experiment_trains_on_a_students_class_and_reuses_identical_orders():
    from labkit.studies import impact, own_samplers, sweep
    grid = impact.samplers_grid(nodes=2, train_subset=256, epochs=1, batch_size=64)[:2]  # sampling, iid
    quiet = dict(seeds=(0, 1), workers=1, progress=False, log=lambda *_: None)
    done = own_samplers.run(grid, {"iid": PyTorchStyle, "sampling": RandomSamplingSampler}, **quiet)
    assert done.ran == 4 and done.failed == 0
    final = done.final
    assert list(final["setting"]) == ["sampling", "sampling", "iid", "iid"]  # the grid's order
    mine = final[final["setting"] == "iid"]
    assert mine["sampler"].str.startswith("PyTorchStyle ").all() and mine["coverage"].eq(1.0).all()
    assert len(impact.summary(done)) == 2  # the seeds of one sampler form one group
    # labkit's reference draws exactly labkit's orders: it runs (and is keyed) as labkit's own sampler
    labkit_keys = {sweep.run_key(job.config, impact.simulated_run) for job in sweep.expand(grid[:1], (0, 1), impact.simulated_run)}
    assert set(final.loc[final["setting"] == "sampling", "run_key"]) == labkit_keys
    again = own_samplers.run(grid, {"iid": PyTorchStyle, "sampling": RandomSamplingSampler}, **quiet)
    assert again.ran == 0 and again.reused == 4  # the same orders: the same keys
    assert own_samplers.run(grid, {"iid": IgnoresSeed}, **quiet).ran == 2  # other orders: new runs


class WrongArguments(RandomPartitionSampler):
    def __iter__(self):
        return iter(torch.randperm(self.size, 5).tolist())


class YieldsFloats(RandomPartitionSampler):
    def __iter__(self):
        return iter([0.5] * len(self))


def test_a_type_error_inside_iter_is_the_students_and_floats_are_named():
    assert check_partition_sampler(WrongArguments).message.startswith("WrongArguments.__iter__ raised TypeError: randperm()")
    assert check_partition_sampler(YieldsFloats).message == "rank 0's YieldsFloats yields floats such as 0.5: yield integer indices"


def test_notebook_04_falls_back_on_labkits_samplers_with_notebook_02s_student_release(tmp_path):
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    from conftest import ROOT
    nb = nbformat.read(ROOT / "notebooks" / "02_data_partitioning.ipynb", as_version=4)
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    path = tmp_path / "02_data_partitioning.ipynb"
    nbformat.write(nb, path)
    for name, check, reference in (("RandomPartitionSampler", check_partition_sampler, RandomPartitionSampler),
                                   ("RandomSamplingSampler", check_sampling_sampler, RandomSamplingSampler)):
        cls, result = from_notebook(path, name, check)
        assert result.message == f"not written yet: {name}.__iter__ still raises NotImplementedError"
        assert use(result, cls, quiet=True) is reference
