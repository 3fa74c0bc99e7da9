"""Measures for ANY list of per-node index arrays, right or broken: who holds what, and how skewed.

Label skew is the total variation (TV) distance between a node's label distribution p and the
global one q: TV = 1/2 sum_c |p_c - q_c|, the fraction of the node's samples that would have to
change class to match the global mix (0 = same mix, 0.9 = one class out of ten equal ones). Class
ids are categories, so TV is the headline. The earth mover's distance along the label axis
(classes as points 0..C-1, EMD = sum_c |P_c - Q_c| over the cumulative distributions) is given
too; it also counts how far labels move, which only means something if neighbouring labels are
alike. With every class equally far from every other, EMD equals TV (Zhao et al. 2018 sum |p - q|,
which is 2 TV).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import LabError

DISTANCES = ("tv", "emd")


@dataclass(frozen=True)
class PartitionReport:
    """``counts``: nodes x classes (samples, repeats included); ``per_node``: sizes and skew; ``summary``."""

    counts: pd.DataFrame
    per_node: pd.DataFrame
    summary: pd.Series

    @property
    def table(self) -> pd.DataFrame:
        """Class counts and per-node measures side by side, one row per node."""
        return pd.concat([self.counts, self.per_node], axis=1)

    def __repr__(self) -> str:
        return f"{self.summary.to_string()}\n\n{self.table.to_string(max_rows=20)}"

    def _repr_html_(self) -> str:
        return (self.summary.to_frame("value").T.to_html(float_format="{:.3f}".format)
                + self.table.to_html(max_rows=20, float_format="{:.3f}".format))


def as_labels(labels) -> np.ndarray:
    """Labels as a 1-D int64 numpy array (accepts lists, numpy arrays and torch tensors)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise LabError(f"labels must be a non-empty 1-D array, got shape {arr.shape}.")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise LabError(f"labels must be integers (class ids), got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


def check_parts(parts, n: int) -> list[np.ndarray]:
    """The parts as int64 arrays, or a LabError naming the node whose indices are not valid for size n."""
    if isinstance(parts, np.ndarray) and parts.ndim == 1 and parts.dtype != object:
        raise LabError("pass a list of index arrays, one per node, not a single array.")
    parts = list(parts)
    if not parts:
        raise LabError("the partition is empty: give one index array per node.")
    checked = []
    for node, part in enumerate(parts):
        arr = np.asarray(part)
        if arr.size == 0:
            checked.append(np.empty(0, dtype=np.int64))
            continue
        if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise LabError(f"node {node}'s part must be a 1-D array of integer indices, got {arr.dtype} {arr.shape}.")
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            raise LabError(f"node {node} holds index {bad}, outside 0..{n - 1} for a dataset of {n} samples.")
        checked.append(arr.astype(np.int64, copy=False))
    return checked


def membership(parts, n: int) -> dict:
    """Who holds which index: per node sizes, distinct, duplicates and shared; coverage and overlap overall.

    ``shared``: a node's distinct indices that some other node holds too. ``overlap``: shared over
    distinct, summed over nodes (0 for a partition; 0.5 when two nodes share half their samples).
    """
    parts = check_parts(parts, n)
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    node = np.repeat(np.arange(len(parts)), sizes)
    pairs = np.unique(node * n + np.concatenate(parts))  # distinct (node, index) pairs
    pair_node, pair_index = pairs // n, pairs % n
    holders = np.bincount(pair_index, minlength=n)
    distinct = np.bincount(pair_node, minlength=len(parts))
    shared = np.bincount(pair_node, weights=holders[pair_index] > 1, minlength=len(parts)).astype(np.int64)
    return {"sizes": sizes, "distinct": distinct, "duplicates": sizes - distinct, "shared": shared,
            "coverage": float((holders > 0).mean()),
            "overlap": float(shared.sum() / distinct.sum()) if distinct.sum() else 0.0,
            "cross_duplicates": int((holders > 1).sum())}


def _class_counts(labels: np.ndarray, parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(labels)
    node = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    column = np.searchsorted(classes, labels[np.concatenate(parts)])
    counts = np.bincount(node * len(classes) + column, minlength=len(parts) * len(classes))
    return classes, counts.reshape(len(parts), len(classes))


def _distances(labels: np.ndarray, classes: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    sizes = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / sizes  # NaN rows for empty nodes: an empty node has no label distribution
    q = np.unique(labels, return_counts=True)[1] / len(labels)
    gaps = np.diff(classes).astype(float)
    emd = (np.abs(np.cumsum(p, axis=1) - np.cumsum(q))[:, :-1] * gaps).sum(axis=1)
    emd[sizes[:, 0] == 0] = np.nan
    return {"tv": 0.5 * np.abs(p - q).sum(axis=1), "emd": emd}


def label_distances(labels, parts, distance: str = "tv") -> np.ndarray:
    """Per node, the distance of its label distribution from the global one (NaN for an empty node)."""
    if distance not in DISTANCES:
        raise LabError(f"unknown distance {distance!r}; choose one of: {', '.join(DISTANCES)}.")
    labels = as_labels(labels)
    classes, counts = _class_counts(labels, check_parts(parts, len(labels)))
    return _distances(labels, classes, counts)[distance]


def label_skew(labels, parts, distance: str = "tv") -> float:
    """One number per partition: the mean over non-empty nodes of ``label_distances`` (0 = no skew)."""
    return _nanmean(label_distances(labels, parts, distance))


def measure(labels, parts) -> PartitionReport:
    """Tables and measures for any per-node index arrays over ``labels`` (right, skewed or broken)."""
    labels = as_labels(labels)
    parts = check_parts(parts, len(labels))
    classes, counts = _class_counts(labels, parts)
    held = membership(parts, len(labels))
    dist = _distances(labels, classes, counts)
    index = pd.RangeIndex(len(parts), name="node")
    count_table = pd.DataFrame(counts, index=index, columns=pd.Index(classes.tolist(), name="class"))
    per_node = pd.DataFrame({"size": held["sizes"], "distinct": held["distinct"], "duplicates": held["duplicates"],
                             "shared": held["shared"], "tv": dist["tv"], "emd": dist["emd"]}, index=index)
    sizes = held["sizes"]
    mean = sizes.mean()
    summary = pd.Series({
        "nodes": len(parts), "samples": int(sizes.sum()), "coverage": held["coverage"],
        "duplicates": int(held["duplicates"].sum()), "overlap": held["overlap"],
        "size_min": int(sizes.min()), "size_max": int(sizes.max()),
        "size_imbalance": float(sizes.max() / mean) if mean else float("nan"),
        "empty_nodes": int((sizes == 0).sum()),
        "label_skew_tv": _nanmean(dist["tv"]), "label_skew_emd": _nanmean(dist["emd"]),
    }, dtype=object, name="summary")
    return PartitionReport(count_table, per_node, summary)


def summaries(reports: dict) -> pd.DataFrame:
    """One row per named report with its summary measures (e.g. for the output of ``partition.compare``)."""
    return pd.DataFrame({name: r.summary for name, r in reports.items()}).T.infer_objects().rename_axis("strategy")


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
