"""The speed-up study of notebook 03: one training workload measured on single-process baselines
and on N data-parallel workers, collected as one table with speed-up and efficiency.

Fairness: N workers with 1 thread each are compared with one process using N threads (the same
cores) as well as with one process on one thread. Every measurement is a real run. Speed runs
evaluate on the first ``test_subset`` test images only (1,000 by default): evaluation is not timed,
and on the whole test set it took cnn longer than its timed training.
"""
from __future__ import annotations

import pandas as pd

from .. import results
from ..collectives.costmodel import speedup_table
from ..data_parallel import DPConfig
from ..data_parallel import run as run_data_parallel
from ..train import models, single

QUIET = dict(progress=False, save=False, log=lambda *_: None)


def _single(model, batch_size, samples, threads, seed, test_subset) -> dict:
    cfg = single.SingleConfig(model=model, batch_size=batch_size, epochs=1, threads=threads,
                              train_subset=samples, test_subset=test_subset, seed=seed)
    row = single.run(cfg, **QUIET)[0]
    return {"setup": f"1 process x {threads} thread{'s' * (threads > 1)}", "sync": "none", "workers": 1,
            "cores": threads, "samples_per_s": row["samples_per_s"], "epoch_seconds": row["epoch_seconds"],
            "compute_s": row["epoch_seconds"], "comm_s": 0.0, "wait_s": 0.0, "bytes_per_step": 0.0,
            "test_acc": row["test_acc"]}


def _parallel(model, batch_size, samples, nodes, sync, seed, test_subset, straggler=None) -> dict:
    cfg = DPConfig(model=model, batch_size=batch_size, nodes=nodes, sync=sync, epochs=1, train_subset=samples,
                   test_subset=test_subset, seed=seed, straggler=straggler or {})
    row = run_data_parallel(cfg, **QUIET)[0]
    keep = ("samples_per_s", "epoch_seconds", "compute_s", "comm_s", "wait_s", "bytes_per_step", "test_acc")
    return {"setup": f"{nodes} worker{'s' * (nodes > 1)} {sync}", "sync": sync, "workers": nodes,
            "cores": nodes, **{k: row[k] for k in keep}}


def measure(model: str = "lenet5", batch_size: int = 32, nodes=(1, 2, 4), syncs=("ddp",), samples: int = 9600,
            seed: int = 0, table: str | None = "scaling", progress: bool = True,
            test_subset: int = 1000) -> pd.DataFrame:
    """Baselines (1 thread, and N threads for each N) and N workers per sync mode, on ``samples`` samples.

    Adds ``speedup`` (over 1 process x 1 thread) and ``efficiency`` (speed-up per core) and appends
    the rows to ``results/<table>.csv`` unless ``table`` is None.
    """
    from tqdm.auto import tqdm
    jobs = [("single", 1, None)] + [("single", n, None) for n in nodes if n > 1]
    jobs += [("dp", n, s) for s in syncs for n in nodes]
    out = []
    for kind, n, sync in tqdm(jobs, desc=f"{model} scaling", disable=not progress):
        out.append(_single(model, batch_size, samples, n, seed, test_subset) if kind == "single"
                   else _parallel(model, batch_size, samples, n, sync, seed, test_subset))
    frame = with_speedup(pd.DataFrame(out).assign(model=model, batch_size=batch_size, samples=samples, seed=seed,
                                                  test_subset=test_subset))
    _save(frame, table)
    return frame


def with_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    base = frame.loc[frame["setup"] == "1 process x 1 thread", "samples_per_s"].iloc[0]
    frame = frame.copy()
    frame["speedup"] = frame["samples_per_s"] / base
    frame["efficiency"] = frame["speedup"] / frame["cores"]
    return frame


def compute_vs_comm(tables, sync: str = "allreduce") -> pd.DataFrame:
    """For each model's table: the 2-worker run's compute and communication seconds, their ratio and speed-up."""
    rows = pd.concat(tables)
    rows = rows[(rows["workers"] == 2) & (rows["sync"] == sync)].copy()
    rows["compute_per_comm"] = rows["compute_s"] / rows["comm_s"].clip(lower=1e-9)
    return rows[["model", "setup", "speedup", "efficiency", "compute_s", "comm_s", "compute_per_comm"]]


def projection(tables, alpha: float, nodes=(2, 4, 8, 16, 32, 64), gbits=(1, 10, 100)):
    """Alpha-beta speed-up predictions (weak scaling, ring all-reduce, no overlap) for each model's table.

    Compute per step comes from the table's 1-process x 1-thread run, gradient bytes from the model.
    Returns (predicted, measured): measured are the table's all-reduce runs, speed-up over 1 thread.
    """
    predicted, measured = [], []
    for table in tables:
        one = table[table["setup"] == "1 process x 1 thread"].iloc[0]
        step = one["compute_s"] / (one["samples"] / one["batch_size"])
        grad_bytes = 4 * models.count_parameters(models.build(one["model"]))
        predicted.append(speedup_table(step, grad_bytes, alpha=alpha, nodes=nodes, gbits=gbits)
                         .assign(model=one["model"], step_ms=step * 1e3, grad_mb=grad_bytes / 1e6))
        measured.append(table[table["sync"] == "allreduce"])
    return pd.concat(predicted, ignore_index=True), pd.concat(measured, ignore_index=True)


def straggler_study(delays_ms=(0, 10, 30), nodes: int = 2, sync: str = "allreduce", model: str = "lenet5",
                    batch_size: int = 32, samples: int = 6400, seed: int = 0, table: str | None = "straggler",
                    progress: bool = True, test_subset: int = 1000) -> pd.DataFrame:
    """The same run with rank ``nodes-1`` delayed by each of ``delays_ms`` per step."""
    from tqdm.auto import tqdm
    out = []
    for delay in tqdm(delays_ms, desc="straggler", disable=not progress):
        row = _parallel(model, batch_size, samples, nodes, sync, seed, test_subset,
                        {nodes - 1: float(delay)} if delay else None)
        out.append({**row, "delay_ms": delay})
    frame = pd.DataFrame(out).assign(model=model, batch_size=batch_size, samples=samples, seed=seed,
                                     test_subset=test_subset)
    _save(frame, table)
    return frame


def _save(frame: pd.DataFrame, table: str | None) -> None:
    if table:
        env = results.run_rows({}, [{}])[0]  # run_id + environment columns
        env["machine_cores"] = env.pop("cores")  # "cores" here means the cores a setup used
        results.append([{**env, **row} for row in frame.to_dict("records")], table)
