"""Collective micro-benchmarks and the alpha-beta cost model (latency plus bytes over bandwidth).

Sending one message of n bytes costs ``alpha + n * beta``. With the textbook algorithms on N nodes,
for a message of n bytes (all-gather: n = bytes of the gathered result, n/N from each node):

    broadcast  (binomial tree)   ceil(log2 N) * (alpha + n * beta)
    all-reduce (ring)            2(N-1) * alpha + 2(N-1)/N * n * beta
    all-gather (ring)             (N-1) * alpha +  (N-1)/N * n * beta

``measure`` times the real collectives through ``labkit.launch``; ``fit`` finds this machine's alpha
and beta; ``predict_speedup`` and ``speedup_table`` turn a model into data-parallel speed-ups.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import LabError
from .launcher import launch, rank, report, world_size

OPS = ("broadcast", "all_reduce", "all_gather")
UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_sizes(text) -> tuple:
    """'1k,64k,1M' -> (1024, 65536, 1048576); also accepts a tuple of ints."""
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    sizes = []
    for item in filter(None, (s.strip().lower() for s in text.split(","))):
        number = item.rstrip("kmgb")
        unit = item[len(number):]
        try:
            sizes.append(int(float(number) * UNITS[unit]))
        except (ValueError, KeyError):
            raise LabError(f"cannot read message size {item!r}; write sizes like 1k,64k,1M.") from None
    return tuple(sizes)


def parse_ints(text) -> tuple:
    """'2,4' -> (2, 4); an int n -> (n,)."""
    if isinstance(text, int):
        return (text,)
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LabError(f"expected whole numbers separated by commas, got {text!r}.") from None


@dataclass(frozen=True)
class CommConfig:
    """Time broadcast, all-reduce and all-gather over message sizes on N nodes, to fit the alpha-beta model."""

    nodes: tuple = field(default=(2, 4), metadata={"parse": parse_ints, "help": "node counts, e.g. 2,4"})
    sizes: tuple = field(default=(256, 4096, 65536, 2**20, 2**22),
                         metadata={"parse": parse_sizes, "help": "message sizes in bytes, e.g. 1k,64k,1M"})
    ops: str = field(default=",".join(OPS), metadata={"help": "collectives to time"})
    repeats: int = field(default=20, metadata={"help": "timed repetitions per size (the median is kept)"})
    warmup: int = 3
    threads: int = 1
    timeout: float = 300.0

    def __post_init__(self):
        object.__setattr__(self, "nodes", parse_ints(self.nodes))
        object.__setattr__(self, "sizes", parse_sizes(self.sizes))
        if not self.nodes or min(self.nodes) < 1:
            raise LabError(f"nodes must be at least 1, got {self.nodes}.")
        if not self.sizes or min(self.sizes) < 4:
            raise LabError(f"message sizes must be at least 4 bytes (one float), got {self.sizes}.")
        unknown = set(self.op_list) - set(OPS)
        if unknown or not self.op_list:
            raise LabError(f"unknown collective(s) {sorted(unknown)}; choose from {', '.join(OPS)}.")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1 or self.timeout <= 0:
            raise LabError("repeats and threads must be at least 1, warmup 0 or more, timeout positive.")

    @property
    def op_list(self) -> tuple:
        return tuple(op.strip() for op in self.ops.split(",") if op.strip())


# ---------------------------------------------------------------- measuring (runs inside the workers)

def _collective(op: str, nbytes: int, nodes: int):
    """A zero-argument function doing one collective on ~nbytes, and the exact bytes it moves."""
    import torch
    import torch.distributed as dist
    if op == "broadcast":
        tensor = torch.ones(max(1, nbytes // 4))
        return (lambda: dist.broadcast(tensor, src=0)), tensor.numel() * 4
    if op == "all_reduce":
        tensor = torch.ones(max(1, nbytes // 4))
        return (lambda: dist.all_reduce(tensor)), tensor.numel() * 4
    piece = torch.ones(max(1, nbytes // (4 * nodes)))
    out = [torch.empty_like(piece) for _ in range(nodes)]
    return (lambda: dist.all_gather(out, piece)), piece.numel() * 4 * nodes


def time_collectives(sizes: tuple, ops: tuple, repeats: int, warmup: int) -> list[dict]:
    """Worker function: median seconds of each collective and size (slowest rank per repetition)."""
    import torch
    import torch.distributed as dist
    nodes, rows, done = world_size(), [], 0
    for op in ops:
        for size in sizes:
            run, nbytes = _collective(op, size, nodes)
            for _ in range(warmup):
                run()
            seconds = torch.empty(repeats, dtype=torch.float64)
            for i in range(repeats):
                dist.barrier()
                start = time.perf_counter()
                run()
                seconds[i] = time.perf_counter() - start
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # a collective is as slow as its slowest rank
            rows.append({"op": op, "bytes": nbytes, "nodes": nodes, "seconds": seconds.median().item(),
                         "min_seconds": seconds.min().item(), "repeats": repeats})
            done += 1
            report(step=done, total=len(ops) * len(sizes), op=op)
    return rows if rank() == 0 else []


def measure(cfg: CommConfig):
    """Run the benchmark for every node count in ``cfg.nodes``; a DataFrame with one row per (nodes, op, size)."""
    import pandas as pd
    rows = []
    for nodes in cfg.nodes:
        out = launch(time_collectives, nodes, cfg.sizes, cfg.op_list, cfg.repeats, cfg.warmup,
                     threads=cfg.threads, timeout=cfg.timeout)
        rows += out[0]
    return pd.DataFrame(rows)


def run_comm(cfg: CommConfig, progress: bool = True, save: bool = True, log=print):
    """CLI kind ``comm``: measure, fit, print alpha and beta, append rows to results/comm.csv."""
    from . import results
    table = measure(cfg)
    model = fit(table)
    log(f"alpha (latency) {model.alpha * 1e6:.1f} us, beta {model.beta * 1e9:.3f} ns/byte "
        f"= bandwidth {model.bandwidth / 1e9:.2f} GB/s ({model.gbit:.1f} Gbit/s), from {len(table)} timings")
    rows = results.run_rows(cfg, table.to_dict("records"), kind="comm", alpha=model.alpha, beta=model.beta)
    if save:
        log(f"results appended to {results.append(rows, 'comm')}")
    return table


# ---------------------------------------------------------------- the alpha-beta model

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
