"""Checks for notebook 02's exercises (the Dirichlet split, the two samplers): they run the student's code in
this process on small sizes and name the likely mistake in words, with the audit's numbers.

``attempt`` runs one student function: an exception, an unwritten stub or a hang (time limit) becomes a
one-line diagnosis (``StudentError``) instead of a traceback.
"""
from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import warnings

import numpy as np

from ..data.audit import draw
from ..data.measures import check_parts, label_skew, membership
from ..errors import LabError
from .result import CheckResult, failed, passed

SECONDS = 20  # one student call may take this long before it counts as hanging
CLASSES, PROBE_SEED = 10, 1


class StudentError(Exception):
    """The student's code failed; the message says how, in one line."""


class _Hung(BaseException):  # BaseException: a student's ``except Exception`` must not swallow the time limit
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise inside the block if it runs longer than ``seconds`` (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise _Hung()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def attempt(what: str, fn, *args):
    """``fn(*args)``, the student's ``what``; a ``StudentError`` saying what went wrong if it raises or hangs.

    A ``LabError`` (the lab's own validation of what the student's code returned) keeps its message."""
    try:
        with time_limit(SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args)
    except NotImplementedError:
        raise StudentError(f"not written yet: {what} still raises NotImplementedError") from None
    except _Hung:
        raise StudentError(f"{what} did not finish within {SECONDS} s: does it loop forever?") from None
    except (StudentError, LabError) as exc:
        raise StudentError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any mistake in student code becomes a diagnosis
        text = " ".join(str(exc).split()) or "(no message)"
        raise StudentError(f"{what} raised {type(exc).__name__}: {text}") from None


def _checked(exercise: str, check, *args) -> CheckResult:
    """Run one check; its first problem (a string) fails it, a ``StudentError`` too."""
    try:
        problem, message, details = check(*args)
    except StudentError as exc:
        return failed(exercise, str(exc))
    return failed(exercise, problem, **details) if problem else passed(exercise, message, **details)


# ---------------------------------------------------------------- the samplers

def _epochs(cls, size: int, nodes: int, seed: int, epochs: int = 3) -> list[list[np.ndarray]]:
    """epochs x ranks index arrays drawn from the student's class (``len`` checked against them)."""
    name = getattr(cls, "__name__", type(cls).__name__)
    built = [attempt(f"{name}(size, rank, nodes, seed)", cls, size, rank, nodes, seed) for rank in range(nodes)]
    out = []
    for epoch in range(epochs):
        for sampler in built:
            attempt(f"{name}.set_epoch", sampler.set_epoch, epoch)
        # iterate first (a TypeError in __iter__ is the student's), then let the audit validate the indices
        items = [attempt(f"{name}.__iter__", lambda: list(itertools.islice(iter(s), 10 * size + 1))) for s in built]
        for rank, got in enumerate(items):
            if got and np.asarray(got[0]).dtype.kind == "f":
                raise StudentError(f"rank {rank}'s {name} yields floats such as {got[0]}: yield integer indices")
        out.append([attempt(f"{name}.__iter__", draw, got, rank, epoch, size) for rank, got in enumerate(items)])
    for rank, sampler in enumerate(built):
        length = attempt(f"{name}.__len__", len, sampler)
        if length != len(out[0][rank]):
            raise StudentError(f"rank {rank} yields {len(out[0][rank])} indices but len() says {length}: len() must "
                               f"be the length of the rank's epoch ({size} samples, {nodes} nodes)")
    return out


def _repeated_epoch(runs: list[list[np.ndarray]], what: str) -> str:
    for epoch in range(1, len(runs)):
        if all(np.array_equal(a, b) for a, b in zip(runs[epoch], runs[epoch - 1])):
            return (f"epoch {epoch} repeats epoch {epoch - 1}'s {what}: set_epoch is ignored (the generator "
                    "must depend on the epoch too)")
    return ""


def _ignores_seed(cls, size: int, nodes: int, first: list[np.ndarray]) -> str:
    other = _epochs(cls, size, nodes, PROBE_SEED, epochs=1)[0]
    if all(np.array_equal(a, b) for a, b in zip(first, other)):
        return f"seed={PROBE_SEED} gives the same indices as seed=0: the generator ignores seed"
    return ""


def _partition_problem(cls, size: int, nodes: int) -> str:
    runs = _epochs(cls, size, nodes, 0)
    first, share = runs[0], size // nodes
    held = membership(first, size)
    where = f" ({size} samples, {nodes} nodes)"
    if nodes > 1 and all(np.array_equal(np.sort(p), np.sort(first[0])) for p in first):
        if max(int(p.max(initial=-1)) for p in first) < share:
            return (f"together your ranks cover only {100 * held['coverage']:.1f} % of the data{where}: every rank "
                    f"takes the first slice, a permutation of indices 0..{share - 1} only; permute all {size} "
                    "indices and give each rank its own slice")
        return (f"every rank yields the same {len(first[0])} indices{where}: the slice must depend on the rank "
                "(rank r takes positions r * len .. (r + 1) * len of the permutation)")
    for rank, part in enumerate(first):
        if len(np.unique(part)) < len(part):
            values, counts = np.unique(part, return_counts=True)
            return (f"rank {rank} yields index {values[counts > 1][0]} twice in epoch 0{where}: a partition gives "
                    "each sample once; slice one permutation instead of drawing indices")
    if held["overlap"] > 0:
        return (f"your ranks overlap by {100 * held['overlap']:.1f} %{where}: every rank shuffles with its own "
                f"seed, so their slices come from different permutations (together they cover only "
                f"{100 * held['coverage']:.1f} %); build the permutation from the seed all ranks share, not the rank")
    for rank, part in enumerate(first):
        if len(part) != share:
            dropped = f" and the size % nodes = {size % nodes} left over are dropped" if size % nodes else ""
            return (f"rank {rank} yields {len(part)} indices{where}; every rank should get size // nodes = {share}"
                    f"{dropped}, so all ranks take the same number of steps")
    if held["coverage"] * size < size - (nodes - 1) - 0.5:
        return (f"together your ranks cover only {100 * held['coverage']:.1f} % of the data{where}; a partition "
                f"leaves out at most nodes - 1 = {nodes - 1} samples")
    if all(np.array_equal(np.sort(p), p) for p in first):
        return f"every rank yields its indices in increasing order{where}: nothing is shuffled; slice a permutation"
    return _repeated_epoch(runs, "order")


def check_partition_sampler(cls, nodes=(2, 3), size: int = 6000) -> CheckResult:
    """Check a random-partitioning sampler class ``cls(size, rank, nodes, seed)`` with ``set_epoch``: disjoint
    slices covering the data, one shared permutation per epoch, new every epoch, ``len`` right."""
    nodes = (nodes,) if isinstance(nodes, int) else tuple(nodes)

    def check():
        for n in nodes:
            for total in dict.fromkeys((size, size + n - 1)):  # with and without a remainder to drop
                problem = _partition_problem(cls, total, n)
                if problem:
                    return problem, "", {"nodes": n, "size": total}
        problem = _ignores_seed(cls, size, nodes[-1], _epochs(cls, size, nodes[-1], 0, epochs=1)[0])
        return problem, (f"your ranks' slices are disjoint, cover all but the size % nodes dropped samples, and "
                         f"change every epoch ({', '.join(map(str, nodes))} nodes, {size} samples)"), {"nodes": nodes}
    return _checked("RandomPartitionSampler", check)


def _sampling_problem(cls, size: int, nodes: int) -> str:
    runs = _epochs(cls, size, nodes, 0)
    first, share = runs[0], size // nodes
    where = f" ({size} samples, {nodes} nodes)"
    for rank, part in enumerate(first):
        if len(part) != share:
            return f"rank {rank} draws {len(part)} indices{where}; each rank draws size // nodes = {share} per epoch"
    repeats = sum(len(p) - len(np.unique(p)) for p in first)
    expected = sum(len(p) - size * (1 - (1 - 1 / size) ** len(p)) for p in first)
    if repeats < expected / 2:
        return (f"random sampling never repeats an index in an epoch (your ranks repeat {repeats}, i.i.d. draws "
                f"would repeat about {expected:.0f}){where}: draw with replacement")
    for rank in range(1, nodes):
        if np.array_equal(first[rank], first[0]):
            who = "both ranks" if nodes == 2 else f"ranks 0 and {rank}"
            return f"{who} draw the same indices: seed the generator with the rank too{where}"
    for rank, part in enumerate(first):
        low = float(np.mean(part < size / 2))
        if abs(low - 0.5) > 0.1:
            return (f"rank {rank} draws {100 * low:.0f} % of its indices from the lower half of the data{where}: "
                    f"every rank draws from the whole dataset, indices 0..{size - 1}")
    return _repeated_epoch(runs, "draws") or _ignores_seed(cls, size, nodes, first)


def check_sampling_sampler(cls, nodes: int = 2, size: int = 6000) -> CheckResult:
    """Check a random-sampling sampler class ``cls(size, rank, nodes, seed)`` with ``set_epoch``: size // nodes
    draws with replacement from the whole set per rank, fresh every epoch, independent across ranks."""
    def check():
        problem = _sampling_problem(cls, size, nodes)
        return problem, (f"each rank draws {size // nodes} indices with replacement from all {size}, fresh every "
                         f"epoch and different on every rank ({nodes} nodes)"), {"nodes": nodes, "size": size}
    return _checked("RandomSamplingSampler", check)


# ---------------------------------------------------------------- the Dirichlet split

def probe_labels(size: int, classes: int = CLASSES) -> np.ndarray:
    """Balanced labels 0..classes-1 in a fixed random order: the data the split is checked on."""
    return np.random.default_rng(0).permutation(np.arange(size) % classes)


def _split(fn, labels, nodes: int, alpha: float, seed: int) -> list[np.ndarray]:
    parts = attempt("dirichlet_split", fn, labels.copy(), nodes, alpha, seed)
    if not isinstance(parts, (list, tuple)):
        raise StudentError(f"dirichlet_split returned a {type(parts).__name__}: return a list of index arrays, "
                           "one per node")
    if len(parts) != nodes:
        raise StudentError(f"dirichlet_split returned {len(parts)} parts for {nodes} nodes: return one index "
                           "array per node")
    try:
        return check_parts([np.asarray(p) for p in parts], len(labels))
    except LabError as exc:
        raise StudentError(f"dirichlet_split: {exc}") from None


def _coverage_problem(parts: list[np.ndarray], size: int) -> str:
    owner = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    everything = np.concatenate(parts)
    counts = np.bincount(everything, minlength=size)
    if counts.max() > 1:
        index = int(np.argmax(counts > 1))
        holders = sorted(set(owner[everything == index].tolist()))
        if len(holders) == 1:
            return f"index {index} appears twice in node {holders[0]}'s part: every sample goes to exactly one node"
        return f"index {index} is given to two nodes ({holders[0]} and {holders[1]}): every sample goes to one node"
    missing = int((counts == 0).sum())
    if missing:
        return (f"{missing} samples missing ({100 * missing / size:.1f} %, e.g. index {int(np.argmax(counts == 0))}): "
                "every sample must go to some node")
    return ""


def check_dirichlet_split(fn, nodes: int = 10, size: int = 6000) -> CheckResult:
    """Check ``fn(labels, nodes, alpha, seed=0) -> index arrays``: a partition (every sample on exactly one
    node), seeded, with label skew that alpha controls (strong at alpha=0.1, none to speak of at alpha=100)."""
    labels = probe_labels(size)

    def check():
        low = _split(fn, labels, nodes, 0.1, 0)
        problem = _coverage_problem(low, size)
        if problem:
            return problem, "", {}
        high = _split(fn, labels, nodes, 100.0, 0)
        problem = _coverage_problem(high, size)
        if problem:
            return f"with alpha=100: {problem}", "", {}
        skews = {0.1: label_skew(labels, low), 100: label_skew(labels, high)}
        details = {"skew_alpha_0.1": skews[0.1], "skew_alpha_100": skews[100]}
        said = f"label skew {skews[0.1]:.2f} at alpha=0.1 and {skews[100]:.2f} at alpha=100"
        sizes = np.array([len(p) for p in low])
        if skews[0.1] < 0.25 and skews[100] > skews[0.1] + 0.15:
            return (f"alpha works the wrong way round ({said}): a larger alpha should give less skew; draw the "
                    "proportions from Dirichlet(alpha, ..., alpha)"), "", details
        if skews[0.1] < 0.25 and sizes.max() > 1.5 * sizes.mean():
            return (f"every node holds the global class mix, only in different amounts ({said}): draw fresh "
                    "proportions for each class, not once for all classes"), "", details
        if skews[0.1] < 0.25:
            return (f"with alpha=0.1 every node still holds all {CLASSES} classes evenly ({said}): the proportions "
                    "ignore alpha"), "", details
        if skews[100] > 0.25 or skews[0.1] - skews[100] < 0.25:
            return f"a larger alpha should give less skew ({said}): the proportions ignore alpha", "", details
        if not all(np.array_equal(a, b) for a, b in zip(low, _split(fn, labels, nodes, 0.1, 0))):
            return ("two calls with seed=0 gave different splits: draw everything from "
                    "np.random.default_rng(seed)"), "", details
        if all(np.array_equal(a, b) for a, b in zip(low, _split(fn, labels, nodes, 0.1, PROBE_SEED))):
            return f"seed={PROBE_SEED} gives the same split as seed=0: the split ignores seed", "", details
        return "", (f"every sample is on exactly one node, and the split is seeded, with {said} "
                    f"({nodes} nodes, {size} samples)"), details
    return _checked("dirichlet_split", check)
