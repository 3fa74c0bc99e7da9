"""The speed-up study of notebook 03: one training workload on one process and on N data-parallel
workers, measured interleaved (``labkit.studies.interleaved``), as one table with 95 % intervals.

Fairness: N workers with 1 thread each are compared with one process using N threads (the same
cores) as well as with one process on one thread. A speed-up is the mean over rounds of the ratio of
two setups' samples/s in the same round; its interval comes from the spread of those ratios.
Synchronous modes (ddp, allreduce, allgather) compute exactly what one process computes on the
global batch; local SGD is another algorithm, so it is kept apart (``kind``).
"""
from __future__ import annotations

import math

import pandas as pd

from .. import results
from ..collectives.costmodel import speedup_table
from ..data_parallel import DPConfig
from ..data_parallel import run as run_data_parallel
from ..runtime.launcher import launch
from ..runtime.progress import bar as progress_bar
from ..train import models
from . import stats
from .interleaved import run_blocks, setups

QUIET = dict(progress=False, save=False, log=lambda *_: None)
SYNCHRONOUS = ("ddp", "allreduce", "allgather")
KINDS = {"none": "one process", "local": "local SGD"}


def kind_of(sync: str) -> str:
    """"one process", "synchronous" or "local SGD"."""
    return KINDS.get(sync, "synchronous")


def measure(model: str = "lenet5", batch_size: int = 32, nodes=(2, 4), syncs=("ddp", "allreduce"), rounds: int = 6,
            block: int = 50, seed: int = 0, table: str | None = "scaling", progress: bool = True,
            local_steps: int = 50, averaging: dict | None = None) -> pd.DataFrame:
    """For each N in ``nodes``, one launch of N workers measuring one process (1 and N threads) and N
    workers in each sync mode, ``rounds`` interleaved rounds of ``block`` steps each (local SGD averages
    every ``local_steps``; make ``block`` a multiple of it, so every block holds as many averages).

    One row per setup: median samples/s; ``speedup`` over 1 process x 1 thread and ``vs_threads``
    over 1 process x N threads (means of per-round ratios) with ``*_ci95`` half-widths; efficiency;
    per step and worker the compute, communication and waiting milliseconds; bytes sent per step.
    Rows are appended to ``results/<table>.csv`` unless ``table`` is None. ``averaging``: {"allreduce" or
    "allgather": a function ``average(model)``} times a student's averaging in that mode instead of labkit's.
    """
    rows = []
    counts = [n for n in nodes if n >= 2]
    bar = progress_bar(total=len(counts), desc=f"{model} speed-up", disable=not progress)
    for n in counts:
        chosen = setups(n, syncs)
        measured = launch(run_blocks, n, model, batch_size, chosen, rounds, block, seed, local_steps=local_steps,
                          averaging=averaging, timeout=3600)[0]
        one, same_cores = measured[chosen[0].name], measured[chosen[1].name]
        for setup in chosen[(1 if rows else 0):]:   # 1 process x 1 thread once, from the first launch
            rows.append(_row(setup, n, measured[setup.name], one, same_cores))
        bar.update(1)
    bar.close()
    frame = pd.DataFrame(rows).assign(model=model, batch_size=batch_size, rounds=rounds, block=block, seed=seed)
    _save(frame, table)
    return frame


def _row(setup, launch_nodes: int, rounds: list[dict], one: list[dict], same_cores: list[dict]) -> dict:
    def ratio_ci(base):
        return stats.mean_ci([r["samples_per_s"] / b["samples_per_s"] for r, b in zip(rounds, base)])
    speedup, speedup_ci = ratio_ci(one)
    vs_threads, vs_threads_ci = ratio_ci(same_cores)
    workers = 1 if setup.alone else launch_nodes
    cores = setup.threads * workers
    frame = pd.DataFrame(rounds)
    return {"setup": setup.name, "kind": kind_of(setup.sync), "sync": setup.sync, "workers": workers,
            "threads": setup.threads, "cores": cores, "samples_per_s": frame["samples_per_s"].median(),
            "speedup": speedup, "speedup_ci95": speedup_ci, "vs_threads": vs_threads, "vs_threads_ci95": vs_threads_ci,
            "efficiency": speedup / cores, "compute_ms": frame["compute_ms"].median(),
            "comm_ms": frame["comm_ms"].median(), "wait_ms": frame["wait_ms"].median(),
            "bytes_per_step": frame["bytes_per_step"].median()}


def _synchronous(table: pd.DataFrame, workers: int | None) -> pd.DataFrame:
    rows = table[table["kind"] == "synchronous"]
    workers = workers or (int(rows["workers"].min()) if len(rows) else 0)
    return rows[rows["workers"] == workers]


def best_synchronous(table: pd.DataFrame, workers: int | None = None) -> pd.Series | None:
    """The synchronous mode with the highest speed-up on ``workers`` workers (default: the fewest
    measured); None if no synchronous mode was measured."""
    rows = _synchronous(table, workers)
    return rows.loc[rows["speedup"].idxmax()] if len(rows) else None


def _ratio(value: float, half: float) -> str:
    return f"{value:.2f} ± {half:.2f}x" if math.isfinite(half) else f"{value:.2f}x (one round: no interval)"


def verdict(table: pd.DataFrame, workers: int | None = None) -> str:
    """Did synchronous data parallelism beat one process with the same cores? Said only where the 95 %
    interval of the best mode's ratio excludes 1 (it is the best of the modes measured, which the
    sentence says), with every mode's ratio and the compute and communication per step behind it."""
    rows, best = _synchronous(table, workers), best_synchronous(table, workers)
    if best is None:
        return "No synchronous mode was measured (add ddp, allreduce or allgather to syncs)."
    one = table[(table["kind"] == "one process") & (table["threads"] == 1)].iloc[0]
    low, high = best["vs_threads"] - best["vs_threads_ci95"], best["vs_threads"] + best["vs_threads_ci95"]
    if not math.isfinite(best["vs_threads_ci95"]):
        outcome = "cannot be told apart from it: measure more than one round"
    elif low > 1:
        outcome = "beat it"
    elif high < 1:
        outcome = "lost to it"
    else:
        outcome = "did not differ from it beyond the noise"
    modes = "; ".join(f"{r.sync} {_ratio(r.vs_threads, r.vs_threads_ci95)}" for r in rows.itertuples())
    n = int(best["workers"])
    return (f"{best['model']}, {n} workers against one process with {n} threads (95 % intervals over "
            f"{int(best['rounds'])} rounds): {modes}. The best of these {len(rows)} synchronous mode(s), "
            f"{best['sync']}, {outcome}. A step computes {one['compute_ms']:.1f} ms on one thread; its gradient "
            f"exchange costs {best['comm_ms']:.2f} ms of communication and {best['wait_ms']:.2f} ms of waiting per "
            f"worker, {(best['comm_ms'] + best['wait_ms']) / max(best['compute_ms'], 1e-9):.0%} of the worker's compute.")


def allgather_over_allreduce(table: pd.DataFrame) -> tuple[float, float, int]:
    """(bytes ratio, communication-time ratio, workers) of all-gather over all-reduce at the largest
    worker count measured with both; NaNs and 0 if one of them was not measured."""
    rows = table[table["kind"] == "synchronous"]
    both = [n for n in sorted(set(rows["workers"]), reverse=True)
            if {"allreduce", "allgather"} <= set(rows.loc[rows["workers"] == n, "sync"])]
    if not both:
        return math.nan, math.nan, 0
    at = rows[rows["workers"] == both[0]].set_index("sync")
    ar, ag = at.loc["allreduce"], at.loc["allgather"]
    return ag["bytes_per_step"] / ar["bytes_per_step"], ag["comm_ms"] / max(ar["comm_ms"], 1e-9), both[0]


def collective_cost(table: pd.DataFrame) -> str:
    """All-gather against all-reduce, in words (see ``allgather_over_allreduce``)."""
    volume, seconds, workers = allgather_over_allreduce(table)
    if not workers:
        return "Measure both allreduce and allgather (syncs) to compare them."
    return (f"With {workers} workers all-gather sends {volume:.1f}x the bytes of all-reduce per step and spends "
            f"{seconds:.1f}x its communication time.")


def compute_vs_comm(tables, sync: str = "allreduce", workers: int = 2) -> pd.DataFrame:
    """For each model's table: the N-worker run's compute and communication per step, their ratio and speed-up."""
    rows = pd.concat(tables)
    rows = rows[(rows["workers"] == workers) & (rows["sync"] == sync)].copy()
    rows["compute_per_comm"] = rows["compute_ms"] / (rows["comm_ms"] + rows["wait_ms"]).clip(lower=1e-9)
    return rows[["model", "setup", "speedup", "speedup_ci95", "compute_ms", "comm_ms", "wait_ms", "compute_per_comm"]]


DATACENTRE_ALPHA = 10e-6   # seconds per message on a datacentre network (a few µs of wire, plus the stack)


def projection(tables, alphas: dict, nodes=(2, 4, 8, 16, 32, 64), gbits=(1, 10, 100)):
    """Alpha-beta speed-up predictions for each model's table and each latency in ``alphas``
    ({"measured here": seconds, "datacentre": seconds}). Assumes weak scaling (every node keeps its batch,
    so N nodes do N times the work per step), a ring all-reduce, and no overlap of compute with
    communication. Compute per step comes from the table's 1-process x 1-thread run, gradient bytes from
    the model. Returns (predicted, measured): measured are the table's all-reduce rows."""
    predicted, measured = [], []
    for table in tables:
        one = table[table["setup"] == "1 process x 1 thread"].iloc[0]
        step = one["compute_ms"] / 1e3
        grad_bytes = 4 * models.count_parameters(models.build(one["model"]))
        for latency, alpha in alphas.items():
            predicted.append(speedup_table(step, grad_bytes, alpha=alpha, nodes=nodes, gbits=gbits)
                             .assign(model=one["model"], step_ms=step * 1e3, grad_mb=grad_bytes / 1e6,
                                     latency=latency, alpha_us=alpha * 1e6))
        measured.append(table[table["sync"] == "allreduce"])
    return pd.concat(predicted, ignore_index=True), pd.concat(measured, ignore_index=True)


def straggler_study(delays_ms=(0, 10, 30), nodes: int = 2, sync: str = "allreduce", model: str = "lenet5",
                    batch_size: int = 32, samples: int = 6400, seed: int = 0, table: str | None = "straggler",
                    progress: bool = True, test_subset: int = 1000, bottleneck=None) -> pd.DataFrame:
    """The same run with rank ``nodes-1`` delayed by each of ``delays_ms`` per step (by
    ``bottleneck(rank, world_size, delay_ms)`` on every rank if given, a student's bottleneck node)."""
    out = []
    bar = progress_bar(total=len(delays_ms), desc="straggler", disable=not progress)
    for delay in delays_ms:
        cfg = DPConfig(model=model, batch_size=batch_size, nodes=nodes, sync=sync, epochs=1, train_subset=samples,
                       test_subset=test_subset, seed=seed, straggler={nodes - 1: float(delay)} if delay else {})
        row = run_data_parallel(cfg, **QUIET, bottleneck=bottleneck)[0]
        out.append({"delay_ms": delay, **{k: row[k] for k in ("samples_per_s", "epoch_seconds", "compute_s",
                                                              "comm_s", "wait_s", "samples")}})
        bar.update(1)
    bar.close()
    frame = pd.DataFrame(out).assign(model=model, batch_size=batch_size, nodes=nodes, sync=sync, seed=seed,
                                     test_subset=test_subset)
    _save(frame, table)
    return frame


def _save(frame: pd.DataFrame, table: str | None) -> None:
    if table:
        env = results.run_rows({}, [{}])[0]  # run_id + environment columns
        env["machine_cores"] = env.pop("cores")  # "cores" here means the cores a setup used
        results.append([{**env, **row} for row in frame.to_dict("records")], table)
