"""Collective micro-benchmarks: broadcast, all-reduce and all-gather timed over message sizes on N
worker processes (``labkit run comm``), so ``costmodel.fit`` can find this machine's alpha and beta."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import LabError
from ..runtime.context import rank, report, world_size
from ..runtime.launcher import launch
from .costmodel import OPS, fit

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


def run(cfg: CommConfig, progress: bool = True, save: bool = True, log=print):
    """CLI kind ``comm``: measure, fit, print alpha and beta, append rows to results/comm.csv."""
    table = measure(cfg)
    model = fit(table)
    log(f"alpha (latency) {model.alpha * 1e6:.1f} us, beta {model.beta * 1e9:.3f} ns/byte "
        f"= bandwidth {model.bandwidth / 1e9:.2f} GB/s ({model.gbit:.1f} Gbit/s), from {len(table)} timings")
    from .. import results
    rows = results.run_rows(cfg, table.to_dict("records"), kind="comm", alpha=model.alpha, beta=model.beta)
    if save:
        log(f"results appended to {results.append(rows, 'comm')}")
    return table
