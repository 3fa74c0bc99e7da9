"""Model parallelism over ``torch.distributed.rpc``: a master drives two stage workers (3 processes).

Rank 0 ("master") keeps the data, creates the model's two parts on "worker1" and "worker2" with
``rpc.remote``, runs every step through their RRefs inside ``dist_autograd.context()``, and updates
both parts with a ``DistributedOptimizer``. ``micro_batches=m`` pipelines each batch in m pieces;
``horizontal=True`` divides one Linear layer's neurons between the workers instead of cutting
the layer list. ``run`` trains; ``check_step`` and ``compare_to_local`` check the split against the
whole model; ``time_steps`` measures several configurations in one launch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from .. import results
from ..errors import LabError, WorkerError
from ..runtime.launcher import launch
from ..train import models
from ..train.loop import forward_backward, make_optimizer
from . import analysis
from .config import MPConfig
from .tasks import Check, Time, Train, first_batches, run_tasks


# Ways to run the same workload that differ in where stage 1 lives and how the optimizer steps
# (``compare_variants``); the first is the course's, which the others are compared with.
VARIANTS = {"course: 3 processes, DistributedOptimizer": {},
            "per-stage optimizers (one async call each)": {"optimizer": "local"},
            "no optimizer message (deferred step)": {"optimizer": "deferred"},
            "master hosts stage 1": {"placement": "colocated"},
            "master hosts stage 1, deferred step": {"placement": "colocated", "optimizer": "deferred"}}


@dataclass
class MPRun:
    """A finished run: one row per epoch (config, metrics, environment) and every recorded event."""

    config: MPConfig
    rows: list[dict]
    events: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _launch(tasks: list, driver=None) -> list:
    """Run the tasks on the master of one launch (3 processes, or 2 with placement="colocated"); a stage's failure names that stage.
    ``driver(cfg, at)`` builds the master's driver (default: labkit's ``driver.make_driver``)."""
    cfg = max((task.cfg for task in tasks), key=lambda c: c.nodes)   # colocated configs also run among 3 processes
    try:
        return launch(run_tasks, cfg.nodes, tasks, driver, threads=cfg.torch_threads, timeout=cfg.timeout,
                      rpc=cfg.rpc_timeout)[0]
    except WorkerError as exc:
        if exc.ranks and exc.ranks[0] in (1, 2):
            raise WorkerError(f"model parallel run failed in {cfg.roles[exc.ranks[0]]}: {exc}", exc.ranks, exc.reason,
                              exc.tracebacks, exc.exitcodes) from None
        raise


def run(cfg: MPConfig, progress: bool = True, save: bool = True, log=print, driver=None) -> MPRun:
    """Train with the model split over three processes; print and return one row per epoch
    (appended to results/mp.csv) and the events behind the timeline. ``driver``: see ``_launch``."""
    out = _launch([Train(cfg, progress)], driver)[0]
    frames, history = [], out["history"]
    dp = analysis.data_parallel_bytes(cfg.model)
    epochs = [row for row in history if row["end_of_epoch"]]
    for row, raw in zip(epochs, out["events"]):
        frame = analysis.events_frame(raw, epoch=row["epoch"])
        frames.append(frame)
        row.update({"split_at": cfg.at, **analysis.summarize(frame, row["epoch_seconds"], cfg.horizontal), **dp})
    for row in epochs:
        log(f"epoch {row['epoch']}/{cfg.epochs}  train loss {row['train_loss']:.4f}  test acc {row['test_acc']:.2f} %  "
            f"{row['epoch_seconds']:.1f} s  {row['samples_per_s']:.0f} samples/s  step {row['step_ms']:.2f} ms  "
            f"idle w1 {row['worker1_idle_frac']:.0%} w2 {row['worker2_idle_frac']:.0%}")
    rows = results.run_rows(cfg, history, kind="mp", threads_used=cfg.torch_threads)
    if save:
        path = results.append(rows, "mp")
        log(f"wall time {epochs[-1]['wall_seconds']:.1f} s; results appended to {path}")
    return MPRun(cfg, rows, pd.concat(frames, ignore_index=True))


def check_step(cfg: MPConfig, steps: int = 1, driver=None) -> dict:
    """Run ``steps`` training steps over RPC on the first batches of epoch 0 and return the losses,
    the first step's gradients and the final parameters, by the whole model's parameter names."""
    return _launch([Check(cfg, steps)], driver)[0]


def local_step(cfg: MPConfig, steps: int = 1) -> dict:
    """The same as ``check_step`` on the whole model in this process: the reference to compare with."""
    model = models.build(cfg.model, seed=cfg.seed)
    opt = make_optimizer(model, cfg)
    losses, grads = [], {}
    for step, batch in enumerate(first_batches(cfg, steps)):
        opt.zero_grad(set_to_none=True)
        losses.append(forward_backward(model, batch))
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    return {"losses": losses, "grads": grads, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def compare_to_local(cfg: MPConfig, steps: int = 2, driver=None) -> pd.DataFrame:
    """Largest differences between the RPC run and the whole model in one process, per parameter:
    first-step gradient and parameters after ``steps`` steps (and the loss of every step)."""
    remote, local = check_step(cfg, steps, driver), local_step(cfg, steps)
    rows = [{"parameter": name, "max |grad difference|": (remote["grads"][name] - g).abs().max().item(),
             "max |parameter difference|": (remote["state"][name] - local["state"][name]).abs().max().item()}
            for name, g in local["grads"].items()]
    loss = max(abs(a - b) for a, b in zip(remote["losses"], local["losses"]))
    return pd.DataFrame(rows + [{"parameter": "loss (every step)", "max |grad difference|": loss}]).set_index("parameter")


def time_steps(configs: list[MPConfig], steps: int = 30) -> pd.DataFrame:
    """Time ``steps`` training steps of each config, all in one launch so they are measured under the
    same conditions (a colocated config among separate ones leaves worker2 idle, waiting). One row per config: step time, per-worker compute, rpc wait and idle
    fraction, bytes per step, and the pipelining bound from the stage times of the same model and split
    with one micro-batch (when that config is in the list)."""
    if not configs:
        raise LabError("time_steps needs at least one configuration.")
    if steps < 1:
        raise LabError(f"steps must be at least 1, got {steps}.")
    if len({c.threads for c in configs}) > 1:
        raise LabError("all configurations timed together must use the same threads per process.")
    measured = _launch([Time(cfg, steps) for cfg in configs])
    rows = []
    for cfg, out in zip(configs, measured):
        stats = analysis.summarize(analysis.events_frame(out["events"]), out["seconds"], cfg.horizontal)
        per_step = {k.replace("_s", "_ms"): 1e3 * v / steps for k, v in stats.items() if k.endswith("_s")}
        rows.append({"model": cfg.model, "split_at": cfg.at, "horizontal": cfg.horizontal,
                     "micro_batches": cfg.micro_batches, "batch_size": cfg.batch_size,
                     "step_ms": 1e3 * out["seconds"] / steps, "samples_per_s": steps * cfg.batch_size / out["seconds"],
                     **per_step, **{k: v for k, v in stats.items() if not k.endswith("_s")}})
    table = pd.DataFrame(rows)
    key = ["model", "split_at", "horizontal", "batch_size"]
    base = table[table.micro_batches == 1].groupby(key)[["step_ms", "worker1_compute_ms", "worker2_compute_ms"]].median()
    speedup, bound = [], []
    for _, row in table.iterrows():
        b = base.loc[tuple(row[key])] if tuple(row[key]) in base.index else None
        speedup.append(b.step_ms / row.step_ms if b is not None else float("nan"))
        bound.append(analysis.pipeline_bound(b.worker1_compute_ms, b.worker2_compute_ms, int(row.micro_batches))
                     if b is not None else float("nan"))
    return table.assign(speedup_vs_m1=speedup, bound=bound)


def compare_variants(variants: dict[str, dict] = VARIANTS, base: MPConfig | None = None, steps: int = 30,
                     rounds: int = 3) -> pd.DataFrame:
    """Step time of each variant of one workload (``base`` with the variant's fields), all in one launch,
    in ``rounds`` interleaved rounds: median, min and max over the rounds, the speed-up of each
    median over the first variant's, and whether it is faster beyond the spread (its slowest round
    faster than the first variant's fastest)."""
    if rounds < 1:
        raise LabError(f"rounds must be at least 1, got {rounds}.")
    base = base or MPConfig()
    configs = [replace(base, **fields) for _ in range(rounds) for fields in variants.values()]
    table = time_steps(configs, steps).assign(variant=list(variants) * rounds)
    times = table.groupby("variant", sort=False).step_ms
    out = pd.DataFrame({"processes": [replace(base, **f).nodes for f in variants.values()],
                        "median ms": times.median(), "min ms": times.min(), "max ms": times.max()})
    out["speed-up"] = out["median ms"].iloc[0] / out["median ms"]
    out["faster beyond spread"] = out["max ms"] < out["min ms"].iloc[0]
    return out
