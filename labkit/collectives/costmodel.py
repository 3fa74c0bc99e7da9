"""The alpha-beta cost model of communication: latency plus bytes over bandwidth.

Sending one message of n bytes costs ``alpha + n * beta``. With the textbook algorithms on N nodes,
for a message of n bytes (all-gather: n = bytes of the gathered result, n/N from each node):

    broadcast  (binomial tree)   ceil(log2 N) * (alpha + n * beta)
    all-reduce (ring)            2(N-1) * alpha + 2(N-1)/N * n * beta
    all-gather (ring)             (N-1) * alpha +  (N-1)/N * n * beta

``fit`` finds a machine's alpha and beta from measured timings (``labkit.collectives.bench``);
``predict_speedup`` and ``speedup_table`` turn a model into data-parallel speed-ups.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import LabError

OPS = ("broadcast", "all_reduce", "all_gather")


def terms(op: str, nbytes, nodes):
    """(number of latencies, number of bytes on the critical path) of a collective: cost = a*alpha + b*beta."""
    n, N = np.asarray(nbytes, dtype=float), np.asarray(nodes, dtype=float)
    if op == "broadcast":
        steps = np.ceil(np.log2(np.maximum(N, 1)))
        return steps, steps * n
    if op == "all_reduce":
        return 2 * (N - 1), 2 * (N - 1) / N * n
    if op == "all_gather":
        return N - 1, (N - 1) / N * n
    raise LabError(f"unknown collective {op!r}; choose from {', '.join(OPS)}.")


@dataclass(frozen=True)
class CostModel:
    """alpha: seconds per message (latency); beta: seconds per byte (1 / bandwidth)."""

    alpha: float
    beta: float

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0:
            raise LabError(f"alpha and beta cannot be negative, got {self.alpha}, {self.beta}.")

    @classmethod
    def link(cls, gbit: float, alpha: float) -> "CostModel":
        """A network link of ``gbit`` Gbit/s with latency ``alpha`` seconds."""
        if gbit <= 0:
            raise LabError(f"bandwidth must be positive, got {gbit} Gbit/s.")
        return cls(alpha=alpha, beta=8 / (gbit * 1e9))

    @property
    def bandwidth(self) -> float:
        """Bytes per second."""
        return math.inf if self.beta == 0 else 1 / self.beta

    @property
    def gbit(self) -> float:
        return self.bandwidth * 8 / 1e9

    def seconds(self, op: str, nbytes, nodes):
        """Modelled time of one collective (arrays broadcast)."""
        a, b = terms(op, nbytes, nodes)
        return a * self.alpha + b * self.beta


def fit(table, ops=("all_reduce",)) -> CostModel:
    """Least-squares alpha and beta from measured rows (op, bytes, nodes, seconds), in relative error.

    Relative error weighs small messages (which pin down alpha) as much as large ones (beta).
    """
    rows = table[table["op"].isin(ops) & (table["nodes"] > 1)]
    if len(rows) < 2 or rows["bytes"].nunique() < 2:
        raise LabError(f"fitting alpha and beta needs at least two message sizes of {', '.join(ops)} "
                       "on 2 or more nodes; measure more sizes.")
    a, b = np.zeros(len(rows)), np.zeros(len(rows))
    for op in ops:
        mask = (rows["op"] == op).to_numpy()
        a[mask], b[mask] = terms(op, rows["bytes"].to_numpy()[mask], rows["nodes"].to_numpy()[mask])
    y = rows["seconds"].to_numpy(dtype=float)
    design = np.column_stack([a, b]) / y[:, None]
    candidates = [np.linalg.lstsq(design, np.ones(len(y)), rcond=None)[0]]
    for keep in (0, 1):  # if the free fit goes negative, the best fit has that parameter at 0
        only = np.linalg.lstsq(design[:, [keep]], np.ones(len(y)), rcond=None)[0][0]
        candidates.append(np.array([only, 0.0]) if keep == 0 else np.array([0.0, only]))
    feasible = [c for c in candidates if (c >= 0).all()]
    best = min(feasible, key=lambda c: float(np.sum((design @ c - 1) ** 2)))
    return CostModel(alpha=float(best[0]), beta=float(best[1]))


def predict_speedup(compute_seconds: float, grad_bytes: float, nodes, model: CostModel, scaling: str = "weak"):
    """Data-parallel speed-up over one machine, one step = compute + a ring all-reduce of the gradients.

    weak: each node keeps the per-node batch (N times the work per step): N*c / (c + allreduce);
    strong: the global batch is split over the nodes: c / (c/N + allreduce). No overlap assumed.
    """
    N = np.asarray(nodes, dtype=float)
    comm = model.seconds("all_reduce", grad_bytes, N)
    if scaling == "weak":
        return N * compute_seconds / (compute_seconds + comm)
    if scaling == "strong":
        return compute_seconds / (compute_seconds / N + comm)
    raise LabError(f"scaling must be 'weak' or 'strong', got {scaling!r}.")


def speedup_table(compute_seconds: float, grad_bytes: float, alpha: float, nodes=(8, 16, 32, 64),
                  gbits=(1, 10, 100), scaling: str = "weak"):
    """Predicted all-reduce time and speed-up for each node count and link speed (a DataFrame)."""
    import pandas as pd
    rows = []
    for gbit in gbits:
        model = CostModel.link(gbit, alpha)
        for n in nodes:
            rows.append({"gbit": gbit, "nodes": n, "allreduce_seconds": float(model.seconds("all_reduce", grad_bytes, n)),
                         "speedup": float(predict_speedup(compute_seconds, grad_bytes, n, model, scaling)),
                         "efficiency": float(predict_speedup(compute_seconds, grad_bytes, n, model, scaling)) / n})
    return pd.DataFrame(rows)
