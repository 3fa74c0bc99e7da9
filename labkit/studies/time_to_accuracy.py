"""Time to accuracy: the fair comparison of one machine, data parallelism and model parallelism.

Samples per second flatter a method that learns less per sample (data parallelism doubles the global
batch at the same learning rate; local SGD averages models only every H steps). What a user wants is a
model this good, this soon: every method trains the reference workload (lenet5, batch 32 per process,
SGD lr 0.01 momentum 0.9) with an evaluation every ``eval_samples`` training samples (untimed), and
the table gives the training time until the test accuracy first reached ``target``.
"""
from __future__ import annotations

import math

import pandas as pd

from .. import data_parallel, model_parallel
from ..data_parallel import DPConfig
from ..model_parallel import MPConfig
from ..runtime.progress import bar as progress_bar
from ..train import single

QUIET = dict(progress=False, save=False, log=lambda *_: None)


def methods(model: str = "lenet5") -> dict[str, tuple]:
    """name -> (kind, processes, cores, config factory(epochs, seed, train_subset, eval_every for 32 samples))."""
    def single_cfg(threads):
        return lambda **kw: single.SingleConfig(model=model, threads=threads, **kw)

    def dp_cfg(sync, **extra):
        return lambda eval_every, **kw: DPConfig(model=model, sync=sync, nodes=2, eval_every=max(1, eval_every // 2),
                                                 **extra, **kw)

    def mp_cfg(micro):
        return lambda **kw: MPConfig(model=model, micro_batches=micro, **kw)
    return {
        "1 process x 1 thread": ("one process", 1, 1, single_cfg(1)),
        "1 process x 2 threads": ("one process", 1, 2, single_cfg(2)),
        "2 workers ddp": ("data parallel", 2, 2, dp_cfg("ddp")),
        "2 workers allreduce": ("data parallel", 2, 2, dp_cfg("allreduce")),
        "2 workers allgather": ("data parallel", 2, 2, dp_cfg("allgather")),
        "2 workers local SGD (H=50)": ("data parallel", 2, 2, dp_cfg("local", local_steps=50)),
        "model parallel": ("model parallel", 3, 3, mp_cfg(1)),
        "model parallel, 4 micro-batches": ("model parallel", 3, 3, mp_cfg(4)),
    }


def _run(name: str, cfg):
    if isinstance(cfg, MPConfig):
        return model_parallel.run(cfg, **QUIET).rows
    if isinstance(cfg, DPConfig):
        return data_parallel.run(cfg, **QUIET)
    return single.run(cfg, **QUIET)


def measure(target: float = 98.0, epochs: int = 2, seeds=(0, 1), eval_samples: int = 7680, train_subset: int = 0,
            only=None, model: str = "lenet5", progress: bool = True) -> pd.DataFrame:
    """Every method (or ``only`` those named) once per seed; one row per evaluation: method, kind,
    seed, epoch (fractional), training seconds so far, test accuracy."""
    chosen = {k: v for k, v in methods(model).items() if only is None or k in only}
    rows = []
    bar = progress_bar(total=len(chosen) * len(seeds), desc="time to accuracy", disable=not progress)
    for name, (kind, processes, cores, make) in chosen.items():
        for seed in seeds:
            cfg = make(epochs=epochs, seed=seed, train_subset=train_subset, eval_every=max(1, eval_samples // 32))
            for row in _run(name, cfg):
                rows.append({"method": name, "kind": kind, "processes": processes, "cores": cores, "seed": seed,
                             "epoch": float(row["epoch"]), "wall_seconds": row["wall_seconds"],
                             "test_acc": row["test_acc"], "target": target})
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method: seconds (and epochs) until the test accuracy first reached the target, over seeds as
    mean with the range (min-max), the final accuracy, and how many seeds reached the target. A method
    that missed the target on some seed has no mean time (a miss is not a fast run)."""
    rows = []
    for method, part in curves.groupby("method", sort=False):
        reached, finals = [], []
        for _, run in part.groupby("seed"):
            run = run.sort_values("wall_seconds")
            hit = run[run["test_acc"] >= run["target"].iloc[0]]
            reached.append((hit["wall_seconds"].iloc[0], hit["epoch"].iloc[0]) if len(hit) else (math.nan, math.nan))
            finals.append(run["test_acc"].iloc[-1])
        seconds = [s for s, _ in reached if math.isfinite(s)]
        every = len(seconds) == len(reached)
        rows.append({"method": method, "kind": part["kind"].iloc[0], "cores": part["cores"].iloc[0],
                     "seconds_to_target": sum(seconds) / len(seconds) if every else math.nan,
                     "seconds_min": min(seconds, default=math.nan), "seconds_max": max(seconds) if every else math.nan,
                     "epochs_to_target": pd.Series([e for _, e in reached]).mean(),
                     "reached": f"{len(seconds)} of {len(reached)}", "final_acc": sum(finals) / len(finals)})
    table = pd.DataFrame(rows)
    table.attrs["target"] = float(curves["target"].iloc[0]) if len(curves) else None
    return table


def verdict(reached: pd.DataFrame) -> list[str]:
    """Which method reached the target first, and every other method's final accuracy, in words."""
    hit = reached[reached["seconds_to_target"].notna()]
    target = reached.attrs.get("target")
    lines = []
    if hit.empty:
        lines.append("No method reached the target accuracy on every seed in this budget.")
    else:
        first = hit.loc[hit["seconds_to_target"].idxmin()]
        tied = hit[(hit["seconds_min"] <= first["seconds_max"]) & (hit["method"] != first["method"])]
        lines.append(f"First to the target on every seed: {first['method']} after {first['seconds_to_target']:.1f} s "
                     f"(range over seeds {first['seconds_min']:.1f}-{first['seconds_max']:.1f} s)"
                     + (f"; within that range also: {', '.join(tied['method'])}." if len(tied) else "."))
    lines += [f"{r.method}: final accuracy {r.final_acc:.2f} %, {r.reached} seeds reached the target"
              + ("" if target is None else f" of {target:g} %") for r in reached.itertuples()]
    return lines
