"""Audit any distributed sampler in-process: per epoch coverage, overlap, duplicates and reshuffling.

``audit(factory, nodes, size)`` builds one sampler per rank with ``factory(rank, nodes)`` (any
callable, also one written in a notebook), calls ``set_epoch`` if the sampler has it, and simply
iterates every rank's sampler; no processes are needed. Measures follow ``labkit.data.measures``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import LabError
from .measures import membership

EXPECTATIONS = ("partition", "sampling")


@dataclass(frozen=True)
class AuditReport:
    """One row per epoch (``table``) and the problems found in plain words (``problems``)."""

    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    expect: str = "partition"

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        return f"{self.table.to_string()}\n\n{self._verdict()}"

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{p}</li>" for p in self.problems)
        verdict = f"<ul>{items}</ul>" if self.problems else f"<p>{self._verdict()}</p>"
        return self.table.to_html(float_format="{:.4f}".format) + verdict

    def _verdict(self) -> str:
        if not self.problems:
            return f"no problems found (checked as {self.expect})."
        return "problems:\n" + "\n".join(f"- {p}" for p in self.problems)


def audit(factory, nodes: int, size: int, epochs: int = 3, expect: str = "partition") -> AuditReport:
    """Run ``factory(rank, nodes)`` for every rank over ``epochs`` and report what the ranks drew.

    ``expect="partition"``: ranks must be disjoint, cover all but at most nodes-1 samples, and
    reshuffle every epoch. ``expect="sampling"`` (with replacement): coverage must match i.i.d.
    draws from the whole set, and draws must change every epoch.
    """
    if expect not in EXPECTATIONS:
        raise LabError(f"unknown expectation {expect!r}; choose one of: {', '.join(EXPECTATIONS)}.")
    for name, value in (("nodes", nodes), ("size", size), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise LabError(f"{name} must be an integer >= 1, got {value!r}.")
    samplers = [factory(rank, nodes) for rank in range(nodes)]
    rows, previous = [], None
    for epoch in range(epochs):
        draws = [draw(s, rank, epoch, size) for rank, s in enumerate(samplers)]
        held = membership(draws, size)
        changed = None if previous is None else all(
            len(a) != len(b) or not np.array_equal(a, b) for a, b in zip(draws, previous))
        rows.append({"epoch": epoch, "samples": int(held["sizes"].sum()), "min_len": int(held["sizes"].min()),
                     "max_len": int(held["sizes"].max()), "coverage": held["coverage"],
                     "overlap": held["overlap"], "cross_duplicates": held["cross_duplicates"],
                     "duplicates": int(held["duplicates"].sum()), "order_changed": changed})
        previous = draws
    return AuditReport(pd.DataFrame(rows).set_index("epoch"), _problems(rows, nodes, size, expect), expect)


def draw(sampler, rank: int, epoch: int, size: int) -> np.ndarray:
    """One epoch of one rank's sampler (``set_epoch`` called if it has it) as an index array; a LabError
    that says what is wrong if it is not a valid sampler for a dataset of ``size``."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    try:
        items = list(itertools.islice(iter(sampler), 10 * size + 1))
    except TypeError:
        raise LabError(f"the factory returned {type(sampler).__name__} for rank {rank}, which is not "
                       f"iterable; return a torch Sampler (or any iterable of indices).") from None
    if len(items) > 10 * size:
        raise LabError(f"rank {rank}'s sampler gave more than {10 * size} indices in epoch {epoch} for a "
                       f"dataset of {size}; does its iterator ever end?")
    arr = np.asarray([int(i) for i in items] if items and np.ndim(items[0]) == 0 else items)
    if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
        raise LabError(f"rank {rank}'s sampler must yield single integer indices, got {arr.dtype} {arr.shape}.")
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise LabError(f"epoch {epoch}: rank {rank} drew index {bad}, outside 0..{size - 1} "
                       f"for a dataset of {size} samples.")
    return arr.astype(np.int64)


def _problems(rows: list[dict], nodes: int, size: int, expect: str) -> list[str]:
    """Plain-language findings; the same finding in several epochs becomes one line naming them."""
    found: dict[str, list[int]] = {}
    for row in rows:
        for text in _findings(row, nodes, size, expect):
            found.setdefault(text, []).append(row["epoch"])
    return [f"epoch{'s' if len(e) > 1 else ''} {', '.join(map(str, e))}: {text}" for text, e in found.items()]


def _pct(fraction: float) -> str:
    """A fraction as a percentage with three significant digits (so 0.0133 % does not print as 0.0 %)."""
    return f"{100 * fraction:.3g}%"


def _findings(row: dict, nodes: int, size: int, expect: str) -> list[str]:
    coverage, texts = row["coverage"], []
    if expect == "partition":
        if round(coverage * size) < size - (nodes - 1):
            texts.append(f"the ranks cover {_pct(coverage)} of the data; a partition leaves out at most "
                         f"nodes - 1 = {nodes - 1} sample(s).")
        if row["overlap"] > 0:
            texts.append(f"overlap {_pct(row['overlap'])}: that share of each rank's samples is also on another "
                         f"rank ({row['cross_duplicates']} samples on more than one rank).")
        if row["duplicates"]:
            texts.append(f"{row['duplicates']} repeats inside a rank.")
    else:
        expected = 1 - (1 - 1 / size) ** row["samples"]
        if abs(coverage - expected) > 0.01 + 4 * math.sqrt(expected * (1 - expected) / size):
            texts.append(f"the draws cover {_pct(coverage)} of the data; i.i.d. draws from the whole set "
                         f"would cover about {_pct(expected)}.")
    if row["order_changed"] is False:
        texts.append("some rank repeats the previous epoch's order (set_epoch missing or ignored).")
    return texts
