"""Data-parallel training: N workers, each training on its node's sampler, kept in step by a
``Synchronizer``; rank 0 evaluates on the test set (or its first ``test_subset`` images) once per epoch.

``run(cfg)`` launches the workers, gathers their timings and appends one row per epoch to
``results/dp.csv``. ``train_worker(cfg)`` is the per-rank loop; it runs unchanged under
``labkit.launch`` on one machine and under ``torchrun`` on several.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist

from .. import results
from ..data import datasets
from ..data.batches import batch_indices, batches, step_count
from ..runtime.context import report
from ..runtime.launcher import launch
from ..train import models
from ..train.loop import evaluate, evaluation_due, make_optimizer, midway_row
from . import sync as synchronizers
from .averaging import average_models
from .config import DPConfig, check_feasible, make_sampler, steps_in_epoch, train_labels


def _broadcast_from_rank0(model: torch.nn.Module) -> None:
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def _step_range(my_steps: int) -> tuple[int, int]:
    """(fewest, most) steps any rank has this epoch, in one collective."""
    t = torch.tensor([-my_steps, my_steps], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0]), int(t[1])


def _evaluate_midway(cfg: DPConfig, sync, test, rank: int, nodes: int) -> tuple[float, float] | None:
    """Evaluate between two steps, every rank taking part: rank 0 evaluates (local SGD: the average of
    the ranks' models, which they would reach if they averaged now) while the others wait."""
    model = synchronizers.unwrap(sync.module)
    if cfg.sync == "local":
        model = copy.deepcopy(model)
        average_models([model], nodes, dist.all_reduce)
    result = evaluate(model, test, limit=cfg.test_subset) if rank == 0 else None
    dist.barrier()
    return result


def _slowdown(cfg: DPConfig, rank: int, nodes: int, bottleneck):
    """What delays this rank before each step, as a function returning its seconds (None: nothing):
    ``bottleneck(rank, world_size, delay_ms)`` if given (notebook 03's exercise; ``delay_ms`` is the
    config's straggler delay), else the config's straggler sleep for this rank."""
    if bottleneck is not None:
        delay_ms = max(cfg.straggler.values(), default=0.0)

        def timed() -> float:
            start = time.perf_counter()
            bottleneck(rank, nodes, delay_ms)
            return time.perf_counter() - start
        return timed
    delay = cfg.straggler.get(rank, 0.0) / 1000.0
    return (lambda: time.sleep(delay) or delay) if delay else None


def train_worker(cfg: DPConfig, return_model: bool = False, progress: bool = True, bottleneck=None) -> dict:
    """One rank's training loop. Rank 0 returns the history (a row per epoch, and one per evaluation
    inside an epoch with ``eval_every``); every rank its timings. ``bottleneck``: see ``_slowdown``."""
    rank, nodes = dist.get_rank(), dist.get_world_size()
    show = report if progress else (lambda **_: None)
    train = datasets.load(cfg.dataset)
    train.normalized  # normalise the whole set now, not inside the first timed step
    sampler = make_sampler(cfg, rank, train_labels(cfg))
    model = models.build(cfg.model, seed=cfg.seed)
    _broadcast_from_rank0(model)  # initial parameters always come from rank 0
    sync = synchronizers.build(cfg.sync, model, make_optimizer(model, cfg), nodes, cfg.average_every)
    slowdown = _slowdown(cfg, rank, nodes, bottleneck)
    test = datasets.load(cfg.dataset, train=False) if rank == 0 else None
    history, wall, group_steps = [], 0.0, 0
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        order = sampler.indices()
        my_steps = step_count(len(order), cfg.batch_size)
        fewest, most = _step_range(my_steps)
        group = steps_in_epoch(cfg, fewest, most)   # the epoch's optimizer steps (see DPConfig.epoch_end)
        steps = group if sync.pads_uneven else min(my_steps, group)   # DDP: each rank its own, inside Join
        uneven = min(fewest, group) != group
        sync.before_epoch(train.batch(batch_indices(order, 0, cfg.batch_size)) if my_steps else None)
        dist.barrier()
        comm_per_step = torch.zeros(steps, dtype=torch.float64)
        compute = loss_sum = paused = 0.0
        done = 0
        start = time.perf_counter()
        with sync.epoch(uneven=uneven):
            for s, batch in enumerate(batches(train, order, cfg.batch_size, steps)):
                slept = slowdown() if slowdown and batch is not None else 0.0
                t = sync.step(batch)
                compute += t.compute + slept
                comm_per_step[s] = t.comm
                if t.loss is not None:
                    loss_sum, done = loss_sum + t.loss, done + 1
                if s % 25 == 0 or s == steps - 1:
                    show(epoch=epoch + 1, epochs=cfg.epochs, step=s + 1, total=steps,
                         loss=(loss_sum / done) if done else float("nan"))
                if evaluation_due(group_steps + s + 1, cfg.eval_every) and s + 1 < min(steps, fewest):
                    pause = time.perf_counter()   # every rank still has data here, so all of them are at step s
                    result = _evaluate_midway(cfg, sync, test, rank, nodes)
                    if rank == 0:
                        history.append(midway_row(epoch + (s + 1) / group, group_steps + s + 1,
                                                  wall + pause - start - paused, *result))
                    paused += time.perf_counter() - pause
            comm_end = sync.end_epoch()
        seconds = time.perf_counter() - start - paused
        group_steps += group
        stats = _gather_epoch_stats(seconds, compute, comm_per_step, comm_end, loss_sum, done,
                                    min(len(order), steps * cfg.batch_size), sync.pads_uneven)
        if rank == 0:
            wall += stats["epoch_seconds"]
            # never a DDP forward: that would synchronise with ranks that do not evaluate
            test_loss, test_acc = evaluate(synchronizers.unwrap(sync.module), test, limit=cfg.test_subset)
            history.append({"epoch": epoch + 1, "step": group_steps, **stats, "wall_seconds": wall,
                            "test_loss": test_loss, "test_acc": test_acc, "bytes_per_step": sync.bytes_per_step(),
                            "samples_per_s": stats["samples"] / stats["epoch_seconds"], "end_of_epoch": True})
            show(epoch=epoch + 1, epochs=cfg.epochs, step=steps, total=steps, acc=test_acc)
        dist.barrier()  # other ranks wait for rank 0's evaluation outside the timed loop
    out = {"rank": rank, "history": history}
    if return_model and rank == 0:
        out["state"] = {k: v.clone() for k, v in synchronizers.unwrap(sync.module).state_dict().items()}
    return out


def _all_gather(tensor: torch.Tensor, nodes: int) -> torch.Tensor:
    """Every rank's copy of a 1-D tensor, stacked: (nodes, len)."""
    out = torch.empty(nodes * tensor.numel(), dtype=tensor.dtype)
    dist.all_gather_single(out, tensor)
    return out.view(nodes, -1)


def split_waiting(comm_per_step: torch.Tensor, padded: bool = True) -> tuple[float, float]:
    """(communication, waiting) seconds summed over steps, from every rank's per-step collective times
    (every rank calls it). In a blocking collective the last rank to arrive waits for nobody, so the
    minimum over ranks of a step's collective time is its communication, and the rest, on each rank,
    is waiting (mean over ranks). Unpadded (DDP): ranks may take different numbers of steps and the
    per-step time is an estimate that overlaps backward, so it all counts as communication."""
    nodes = dist.get_world_size()
    if not padded:
        return _all_gather(torch.tensor([comm_per_step.sum().item()], dtype=torch.float64), nodes).mean().item(), 0.0
    if not comm_per_step.numel():
        return 0.0, 0.0
    per_step = _all_gather(comm_per_step, nodes)
    least = per_step.min(dim=0).values.sum().item()
    return least, (per_step.sum(dim=1) - least).mean().item()


def _gather_epoch_stats(seconds, compute, comm_per_step, comm_end, loss_sum, batches_done, samples,
                        padded) -> dict:
    """Combine every rank's timings into the epoch's row (see ``split_waiting`` for comm and wait)."""
    nodes = dist.get_world_size()
    every = _all_gather(torch.tensor([seconds, compute, loss_sum, batches_done, samples], dtype=torch.float64), nodes)
    comm, wait = split_waiting(comm_per_step, padded)
    comm += comm_end
    return {"epoch_seconds": every[:, 0].max().item(), "compute_s": every[:, 1].mean().item(),
            "comm_s": comm, "wait_s": wait, "train_loss": (every[:, 2].sum() / every[:, 3].sum()).item(),
            "samples": int(every[:, 4].sum().item()),
            "compute_s_per_rank": [round(v, 4) for v in every[:, 1].tolist()]}


def run(cfg: DPConfig, progress: bool = True, save: bool = True, log=print, return_model: bool = False,
        bottleneck=None):
    """Launch ``cfg.nodes`` workers, print one line per epoch, append rows to results/dp.csv.
    ``bottleneck(rank, world_size, delay_ms)``, if given, delays the ranks instead of ``cfg.straggler``."""
    check_feasible(cfg)
    outs = launch(train_worker, cfg.nodes, cfg, return_model, progress, threads=cfg.torch_threads,
                  timeout=cfg.timeout, bottleneck=bottleneck)
    root = next(o for o in outs if o["rank"] == 0)
    for row in (r for r in root["history"] if r["end_of_epoch"]):
        log(f"epoch {row['epoch']}/{cfg.epochs}  train loss {row['train_loss']:.4f}  test acc {row['test_acc']:.2f} %"
            f"  {row['epoch_seconds']:.1f} s  {row['samples_per_s']:.0f} samples/s  compute {row['compute_s']:.1f} s"
            f"  comm {row['comm_s']:.1f} s  wait {row['wait_s']:.1f} s")
    rows = results.run_rows(cfg, root["history"], kind="dp")
    if save:
        log(f"results appended to {results.append(rows, 'dp')}")
    return (rows, root.get("state")) if return_model else rows
