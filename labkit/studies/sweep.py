"""A resumable sweep: every config of a grid x every seed, in this process or a pool of processes.

Each run is keyed by a stable hash of its config (seed included) and the stable name of the function
that runs it (``@keyed("name")``), never its module path: moving code does not re-run finished runs.
Its rows are appended to ``results/<table>.csv`` the moment it finishes, so a sweep that is
interrupted (Stop button, a killed process, a closed laptop) loses only the runs in flight: run
it again and it does only what is missing. A run that raises is recorded with its error message
and the rest of the grid goes on; failed runs are tried again on the next call.

``runner(config) -> (history, fields)``: per-epoch rows plus run-level fields. It must be a
module-level function (spawned pool workers import it) marked with ``@keyed``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pandas as pd

from .. import results
from ..errors import LabError
from ..runtime.progress import bar as progress_bar
from . import stats

NOT_IN_KEY = ("timeout",)  # fields that cannot change a run's numbers
# Fields added after results were first recorded, with their defaults: at its default a field is left
# out of the key, so every run recorded before it existed keeps its key.
KEYED_WHEN_SET = {"test_subset": 0, "eval_every": 0, "epoch_end": "longest", "epoch_steps": 0}


@dataclass(frozen=True)
class Job:
    """One run to do: a config (with its seed) and its key."""

    key: str
    config: object


@dataclass(frozen=True)
class Sweep:
    """What a sweep produced: ``runs`` (all rows of the grid's runs, new and earlier) and counts."""

    runs: pd.DataFrame
    ran: int
    reused: int
    failed: int

    @property
    def final(self) -> pd.DataFrame:
        """One row per run: its last epoch (or its error row if it failed)."""
        return final_rows(self.runs)

    @property
    def errors(self) -> pd.DataFrame:
        """The error rows of the runs that failed."""
        runs = self.runs
        return runs.loc[runs["status"] == "failed"] if len(runs) else runs


def keyed(name: str):
    """Decorator: give a sweep runner the stable ``name`` its runs are keyed by. Never change a name
    once results exist: every finished run of that runner would run again."""
    def mark(runner):
        runner.sweep_name = name
        return runner
    return mark


def runner_name(runner) -> str:
    """The stable name of a runner (set by ``@keyed``)."""
    name = getattr(runner, "sweep_name", None)
    if not isinstance(name, str) or not name:
        raise LabError(f"the sweep runner {getattr(runner, '__qualname__', runner)!r} has no stable name; "
                       "mark it with @labkit.studies.sweep.keyed('a-name') so its run keys survive moving the code.")
    return name


def run_key(config, runner) -> str:
    """A stable id for (config, runner): the same in every session, on every machine."""
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in NOT_IN_KEY and not (k in KEYED_WHEN_SET and v == KEYED_WHEN_SET[k])}
    text = json.dumps({"runner": runner_name(runner), "config": fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_key(config, runner) -> str:
    """The key of a config whatever its seed: the seeds of one grid point share it."""
    return run_key(dataclasses.replace(config, seed=0), runner)


def expand(configs, seeds, runner) -> list[Job]:
    """Every config with every seed, duplicates (the same key twice) removed, order kept."""
    seeds = list(seeds)
    if not seeds:
        raise LabError("give at least one seed.")
    jobs: dict[str, Job] = {}
    for config in configs:
        for seed in seeds:
            one = dataclasses.replace(config, seed=int(seed))
            key = run_key(one, runner)
            jobs.setdefault(key, Job(key, one))
    return list(jobs.values())


def finished_keys(table: str) -> set[str]:
    """Keys of the runs in ``results/<table>.csv`` that finished and were written completely."""
    done = results.load(table)
    if done.empty or "run_key" not in done:
        return set()
    ok = done[done["status"] == "ok"]
    counts = ok.groupby("run_id").agg(key=("run_key", "first"), rows=("run_key", "size"),
                                      expected=("rows_in_run", "first"))
    return set(counts.loc[counts["rows"] == counts["expected"], "key"])


def sweep(configs, runner, *, seeds=(0, 1, 2), table: str = "sweep", workers: int = 1,
          progress: bool = True, log=print) -> Sweep:
    """Run every config x seed not yet in ``results/<table>.csv``; return all the grid's rows.

    ``workers > 1`` runs that many spawned processes with one torch thread each.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise LabError(f"workers must be an integer >= 1, got {workers!r}.")
    jobs = expand(configs, seeds, runner)
    done = finished_keys(table)
    todo = [job for job in jobs if job.key not in done]
    log(f"{len(jobs)} runs: {len(jobs) - len(todo)} already in {table}.csv, {len(todo)} to run"
        + (f" on {workers} process{'es' * (workers > 1)}" if todo else ""))
    failed = 0

    def record(rows: list[dict]) -> None:
        nonlocal failed
        results.append(rows, table)
        failed += rows[0]["status"] == "failed"
        if rows[0]["status"] == "failed":
            log(f"run failed: {rows[0]['error']}")

    _execute(todo, runner, workers, record, progress, desc=table)
    keys = [job.key for job in jobs]
    return Sweep(latest_runs(results.load(table), keys), ran=len(todo), reused=len(jobs) - len(todo), failed=failed)


def _execute(jobs, runner, workers, record, progress, desc) -> None:
    bar = progress_bar(total=len(jobs), desc=desc, disable=not progress or not jobs)
    try:
        if workers == 1 or not jobs:
            for job in jobs:
                record(attempt(runner, job))
                bar.update()
        else:
            _in_pool(jobs, runner, workers, record, bar)
    finally:
        bar.close()


_POOL: dict = {}  # workers -> the live ProcessPoolExecutor, kept between sweeps (see ``pool``)


def pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, started once and reused by later sweeps, so a
    notebook pays the start-up (import torch, load MNIST) once. ``shutdown()`` stops it; so does
    the end of this process, and its workers exit by themselves if this process dies."""
    for size in [n for n in _POOL if n != workers]:
        shutdown(size)
    if workers not in _POOL:
        context = multiprocessing.get_context("spawn")
        _POOL[workers] = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                             initargs=(os.getpid(),))
    return _POOL[workers]


def shutdown(workers: int | None = None, terminate: bool = False) -> None:
    """Stop the kept pool (or all pools); ``terminate`` kills runs in flight instead of waiting."""
    for size in [n for n in _POOL if workers in (None, n)]:
        executor = _POOL.pop(size)
        if terminate:  # the executor's manager thread sees the pool broken, stops and joins the rest
            for process in list((getattr(executor, "_processes", None) or {}).values()):  # public in 3.14
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)  # joins the manager thread: nothing left running


def _in_pool(jobs, runner, workers, record, bar) -> None:
    executor = pool(workers)
    try:
        futures = [executor.submit(attempt, runner, job) for job in jobs]
        for future in as_completed(futures):
            record(future.result())
            bar.update()
    except BrokenProcessPool:
        shutdown(workers, terminate=True)
        raise LabError("a sweep worker process died (killed, out of memory, or a script that starts the sweep "
                       "without `if __name__ == '__main__':`, which spawned workers re-run). Finished runs "
                       "are saved; run the sweep again to do the rest.") from None
    except BaseException:
        shutdown(workers, terminate=True)  # interrupted: stop the runs in flight now, not when they finish
        raise


def _init_worker(parent_pid: int) -> None:
    """Pool worker start-up: one torch thread, deaf to Ctrl-C, and exit if the parent process disappears.

    Jupyter interrupts and shuts down a kernel by signalling its whole process group, pool workers
    included; each would die printing a KeyboardInterrupt traceback. The parent decides instead:
    an interrupted sweep stops its workers with ``shutdown(terminate=True)``.
    """
    import torch
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def attempt(runner, job: Job) -> list[dict]:
    """Run one job; on any exception return one ``failed`` row carrying the error message."""
    start = time.perf_counter()
    try:
        history, fields = runner(job.config)
    except Exception as exc:  # noqa: BLE001 - a failing config must not stop the grid
        message = str(exc) if isinstance(exc, LabError) else f"{type(exc).__name__}: {exc}"
        return results.run_rows(job.config, [{}], run_key=job.key, config_key=config_key(job.config, runner),
                                status="failed", error=message,
                                rows_in_run=1, run_seconds=time.perf_counter() - start)
    return results.run_rows(job.config, history, run_key=job.key, config_key=config_key(job.config, runner),
                            status="ok", error="",
                            rows_in_run=len(history), run_seconds=time.perf_counter() - start, **fields)


def latest_runs(table: pd.DataFrame, keys) -> pd.DataFrame:
    """The rows of ``keys`` in a result table: each key's complete successful run if there is one,
    else its most recent failure. Rows come in the order of ``keys``."""
    if table.empty or "run_key" not in table:
        return pd.DataFrame()
    table = table[table["run_key"].isin(set(keys))]
    picked = []
    for key, rows in table.groupby("run_key", sort=False):
        ok = rows[rows["status"] == "ok"]
        complete = [r for _, r in ok.groupby("run_id", sort=False) if len(r) == r["rows_in_run"].iloc[0]]
        picked.append(complete[-1] if complete else rows[rows["status"] == "failed"].tail(1))
    if not picked:
        return pd.DataFrame()
    order = {k: i for i, k in enumerate(keys)}
    out = pd.concat(picked)
    return out.sort_values("run_key", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def final_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The last row of every run (its final epoch, or its error row)."""
    if runs.empty:
        return runs
    return runs.groupby("run_id", sort=False).tail(1).reset_index(drop=True)


def summarize(runs: pd.DataFrame, by, metric: str = "test_acc", also=()) -> pd.DataFrame:
    """Per group of ``by``: mean and 95 % CI half-width of the final ``metric`` over seeds, the
    number of seeds, the error message of the group's failed runs (empty if none failed), and
    the plain mean of each column in ``also``. Runs of different configs never share a group,
    even when their ``by`` labels agree."""
    by = [by] if isinstance(by, str) else list(by)
    by_config = by + (["config_key"] if "config_key" not in by else [])
    final = final_rows(runs)
    if final.empty:
        return pd.DataFrame(columns=[*by, "mean", "ci95", "n", "failed", "error", *also])
    rows = []
    for group, part in final.groupby(by_config, sort=False, dropna=False):
        ok = part[part["status"] == "ok"]
        mean, half = stats.mean_ci(ok[metric]) if len(ok) else (float("nan"), float("nan"))
        errors = part.loc[part["status"] == "failed", "error"].dropna().unique()
        rows.append({**dict(zip(by, group if isinstance(group, tuple) else (group,))), "mean": mean,
                     "ci95": half, "n": len(ok), "failed": len(part) - len(ok), "error": "; ".join(errors),
                     **{c: ok[c].mean() if c in ok and len(ok) else float("nan") for c in also}})
    return pd.DataFrame(rows)
