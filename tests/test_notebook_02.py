"""Notebook 02 is committed clean, teaches in the lab's shape, holds its three exercises in nbgrader's format,
and runs headless with test parameters: the solutions pass their checks, and the student release (solutions
and hidden tests removed by nbgrader's own preprocessors) runs to the end on labkit's reference answers."""
import os
import re

import nbformat
import papermill
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

from conftest import ROOT
from labkit.data import partition
from nbutil import NOTEBOOKS, count_images, execute, is_exercise, outputs_text, read_lab_notebook

NAME = "02_data_partitioning.ipynb"


def cell_output(nb, marker: str) -> str:
    """The text outputs of the one code cell whose source contains ``marker``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, marker
    return outputs_text(nbformat.v4.new_notebook(cells=cells))


EXERCISES = {"dirichlet_split": 3, "RandomPartitionSampler": 3, "RandomSamplingSampler": 2}  # name: points
QUICK = dict(quick=True, nodes=4, audit_epochs=2)


def test_notebook_02_is_clean_and_has_the_lab_structure():
    nb, _, source = read_lab_notebook(NAME, answers=5)
    for strategy in partition.STRATEGIES:
        assert f'"{strategy}"' in source, strategy
    assert not re.search(r"^\s*(for|while|def|class) ", source, re.MULTILINE)  # loops and code live in labkit


def test_notebook_02_holds_three_exercises_in_nbgraders_format():
    nb = nbformat.read(NOTEBOOKS / NAME, as_version=4)
    marked = [(i, c, c.metadata["nbgrader"]) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata]
    ids = [meta["grade_id"] for _, _, meta in marked]
    assert len(ids) == len(set(ids)) and ids.count("setup") == 1
    setup = next(c for _, c, meta in marked if meta["grade_id"] == "setup")
    assert setup.metadata["nbgrader"]["locked"] and "import" in setup.source
    assert all(meta["schema_version"] == 3 for _, _, meta in marked)
    for name, points in EXERCISES.items():
        i, cell, meta = next(m for m in marked if m[2]["grade_id"] == name)
        assert is_exercise(cell) and not meta["grade"] and not meta["locked"]
        assert re.search(rf"^(def|class) {name}\b", cell.source, re.M)
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
        solution = cell.source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0].strip().splitlines()
        assert 2 <= len(solution) <= 25, (name, len(solution))
        assert nb.cells[i - 1].cell_type == "markdown"  # explained first
        check = nb.cells[i + 1]
        assert check.metadata["nbgrader"] == {"grade": True, "grade_id": f"check_{name}", "locked": True,
                                              "points": points, "schema_version": 3, "solution": False, "task": False}
        assert "### BEGIN HIDDEN TESTS" in check.source and ".show()" in check.source
        assert "use(" in nb.cells[i + 2].source or "use(" in nb.cells[i + 3].source  # then theirs is used


def check_output(nb, name: str) -> str:
    """The text outputs of exercise ``name``'s check cell."""
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"check_{name}"]
    assert len(cells) == 1, name
    return outputs_text(nbformat.v4.new_notebook(cells=cells))


def student_release(tmp_path):
    """The notebook as nbgrader's assignment generation leaves it: solutions and hidden tests removed."""
    nb = nbformat.read(NOTEBOOKS / NAME, as_version=4)
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    path = tmp_path / "release" / NAME
    path.parent.mkdir()
    nbformat.write(nb, path)
    return nb, path


def test_notebook_02_runs_headless_and_exposes_the_broken_samplers(tmp_path, monkeypatch):
    # The kernel must import this checkout's labkit, not whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = execute(NAME, tmp_path, quick=True, nodes=4, audit_epochs=2)  # = QUICK
    assert "6000 labels" in outputs_text(nb)
    for name in EXERCISES:  # the solutions pass, the hidden tests too, and the cells after them use them
        shown = check_output(nb, name)
        assert shown.count("PASS ") >= 2 and "FAIL " not in shown, shown
    assert "is not done yet" not in outputs_text(nb) and "(yours)" in outputs_text(nb)
    assert count_images(nb) >= len(partition.STRATEGIES) + 2  # every strategy, the grid, the audit plot
    for marker in ("random_partitioning = ", "fixed_shards = ", "with_replacement = "):
        assert "no problems found" in cell_output(nb, marker), marker
    seed_per_rank = cell_output(nb, "seed_per_rank = ")
    assert re.search(r"the ranks cover 7\d\.\d% of the data", seed_per_rank)
    assert re.search(r"overlap (4[6-9]|5[0-4])\.\d%", seed_per_rank)
    assert "set_epoch missing or ignored" in seed_per_rank
    first_slice = cell_output(nb, "first_slice = ")
    assert "the ranks cover 50% of the data" in first_slice and "overlap 100%" in first_slice
    assert "overlap" in cell_output(nb, "torch_sampler = ")  # PyTorch pads by repeating samples


def test_the_student_release_has_no_solution_and_runs_to_the_end_on_labkits_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb, path = student_release(tmp_path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in code and "HIDDEN TESTS" not in code and "nodes=5, size=3000" not in code
    assert "rng.dirichlet" not in code and "torch.randperm" not in code and "rng.integers" not in code
    assert code.count("raise NotImplementedError()") == len(EXERCISES)
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(path), str(out), parameters=QUICK, kernel_name="python3", cwd=str(NOTEBOOKS),
                               progress_bar=False, execution_timeout=600)
    text = outputs_text(nbformat.read(out, as_version=4))
    for name, what in (("dirichlet_split", "dirichlet_split"), ("RandomPartitionSampler", "RandomPartitionSampler.__iter__"),
                       ("RandomSamplingSampler", "RandomSamplingSampler.__iter__")):
        assert f"not written yet: {what} still raises NotImplementedError" in text, name
        assert f"Note: {name} is not done yet" in text, name
    assert "(labkit's)" in text and "Traceback" not in text
    executed = nbformat.read(out, as_version=4)
    for marker in ("random_partitioning = ", "with_replacement = "):  # labkit's answers, audited
        assert "no problems found" in cell_output(executed, marker), marker
