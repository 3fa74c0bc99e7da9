"""Data-parallel training: N workers, each training on its node's sampler, kept in step by a
synchroniser from ``labkit.sync``; rank 0 evaluates on the full test set (or its first
``test_subset`` images) once per epoch.

``run(cfg)`` launches the workers, gathers their timings and appends one row per epoch to
``results/dp.csv``. ``train_worker(cfg)`` is the per-rank loop; it runs unchanged under
``labkit.launch`` on one machine and under ``torchrun`` on several.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import data, models, results, samplers
from .errors import LabError
from .sync import SYNCS
from .training import check_common, evaluate, make_optimizer


def parse_straggler(text: str) -> dict:
    """``"1:50"`` or ``"1:50,3:10"`` -> {rank: delay_ms}; ``""`` -> no straggler."""
    try:
        return {int(r): float(ms) for r, ms in (item.split(":") for item in text.split(",") if item.strip())}
    except ValueError:
        raise LabError(f"straggler {text!r} is not RANK:DELAY_MS[,RANK:DELAY_MS...], e.g. 1:50.") from None


def parse_local_steps(text: str):
    return "epoch" if str(text).strip().lower() == "epoch" else int(text)


@dataclass(frozen=True)
class DPConfig:
    """N workers train one model data-parallel (reference: 2 nodes, lenet5, batch 32 per node)."""

    model: str = "lenet5"
    dataset: str = "mnist"
    nodes: int = 2
    sync: str = field(default="allreduce", metadata={"help": "ddp | allreduce | allgather | local"})
    partition: str = field(default="iid", metadata={"help": "a labkit.partition strategy"})
    alpha: float = field(default=0.5, metadata={"help": "Dirichlet concentration (partition=dirichlet)"})
    beta: float = field(default=0.5, metadata={"help": "Dirichlet concentration of node sizes (quantity)"})
    k: int = field(default=2, metadata={"help": "classes per node (label_k) or shards per node (shards)"})
    local_steps: int | str = field(default=50, metadata={"parse": parse_local_steps,
                                                          "help": "H for sync=local: an int or 'epoch'"})
    epochs: int = 2
    batch_size: int = field(default=32, metadata={"help": "per node"})
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    threads: int = field(default=1, metadata={"help": "torch threads per worker"})
    straggler: dict = field(default_factory=dict, metadata={"parse": parse_straggler,
                                                            "help": "RANK:DELAY_MS added to every step"})
    train_subset: int = field(default=0, metadata={"help": "use only the first N training samples; 0 = all"})
    test_subset: int = field(default=0, metadata={"help": "evaluate on the first N test images; 0 = all"})
    timeout: float = field(default=900.0, metadata={"help": "seconds before the launch is stopped"})

    def __post_init__(self):
        check_common(self)
        if self.sync not in SYNCS:
            raise LabError(f"unknown sync mode {self.sync!r}; choose one of: {', '.join(SYNCS)}.")
        if self.nodes < 1:
            raise LabError(f"nodes must be at least 1, got {self.nodes}.")
        if self.local_steps != "epoch" and (not isinstance(self.local_steps, int) or self.local_steps < 1):
            raise LabError(f"local_steps (H) must be an integer >= 1 or 'epoch', got {self.local_steps!r}.")
        bad = [r for r in self.straggler if not 0 <= r < self.nodes]
        if bad:
            raise LabError(f"straggler rank {bad[0]} does not exist with {self.nodes} nodes "
                           f"(ranks are 0..{self.nodes - 1}).")
        if any(ms < 0 for ms in self.straggler.values()):
            raise LabError("straggler delays must be >= 0 ms.")

    def partition_params(self) -> dict:
        return {"dirichlet": {"alpha": self.alpha}, "quantity": {"beta": self.beta},
                "label_k": {"k": self.k}, "shards": {"k": self.k}}.get(self.partition, {})


def make_sampler(cfg: DPConfig, rank: int, labels: torch.Tensor):
    return samplers.make(cfg.partition, rank, cfg.nodes, labels.numpy(), seed=cfg.seed, **cfg.partition_params())


def make_all_samplers(cfg: DPConfig, labels: torch.Tensor):
    return samplers.make_all(cfg.partition, cfg.nodes, labels.numpy(), seed=cfg.seed, **cfg.partition_params())


def check_feasible(cfg: DPConfig) -> None:
    """Fail in the parent, before any process starts, if some node would get no data."""
    labels = _train_labels(cfg)
    for rank, sampler in enumerate(make_all_samplers(cfg, labels)):
        if len(sampler) == 0:
            raise LabError(f"partition {cfg.partition!r} gives node {rank} no samples with {cfg.nodes} nodes "
                           f"and {len(labels)} training samples; use fewer nodes or another partition.")


def _train_labels(cfg) -> torch.Tensor:
    labels = data.load(cfg.dataset).labels
    return labels[: cfg.train_subset] if cfg.train_subset else labels


def _broadcast_from_rank0(model: torch.nn.Module) -> None:
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def _progress(enabled: bool):
    from .launcher import report
    return report if enabled else (lambda **_: None)


def _step_range(my_steps: int) -> tuple[int, int]:
    """(fewest, most) steps any rank has this epoch, in one collective."""
    t = torch.tensor([-my_steps, my_steps], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[0]), int(t[1])


def train_worker(cfg: DPConfig, return_model: bool = False, progress: bool = True) -> dict:
    """One rank's training loop. Rank 0 returns the per-epoch history; every rank its timings."""
    rank, nodes = dist.get_rank(), dist.get_world_size()
    report = _progress(progress)
    train = data.load(cfg.dataset)
    train.normalized  # normalise the whole set now, not inside the first timed step
    sampler = make_sampler(cfg, rank, _train_labels(cfg))
    model = models.build(cfg.model, seed=cfg.seed)
    _broadcast_from_rank0(model)  # initial parameters always come from rank 0
    sync = SYNCS[cfg.sync](model, make_optimizer(model, cfg), nodes, cfg)
    delay = cfg.straggler.get(rank, 0.0) / 1000.0
    test = data.load(cfg.dataset, train=False) if rank == 0 else None
    history, wall = [], 0.0
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        order = sampler.indices()
        my_steps = math.ceil(len(order) / cfg.batch_size)
        fewest, most = _step_range(my_steps)
        steps = most if sync.pads_uneven else my_steps
        batch_at = lambda s: train.batch(order[s * cfg.batch_size:(s + 1) * cfg.batch_size])  # noqa: E731
        if hasattr(sync, "calibrate"):
            sync.calibrate(batch_at(0) if my_steps else None)
        dist.barrier()
        comm_per_step = torch.zeros(steps, dtype=torch.float64)
        compute = loss_sum = 0.0
        batches = 0
        start = time.perf_counter()
        with sync.epoch(uneven=fewest != most):
            for s in range(steps):
                batch = batch_at(s) if s < my_steps else None
                if delay and batch is not None:
                    time.sleep(delay)
                t = sync.step(batch)
                compute += t.compute + (delay if batch is not None else 0.0)
                comm_per_step[s] = t.comm
                if t.loss is not None:
                    loss_sum, batches = loss_sum + t.loss, batches + 1
                if s % 25 == 0 or s == steps - 1:
                    report(epoch=epoch + 1, epochs=cfg.epochs, step=s + 1, total=steps,
                           loss=(loss_sum / batches) if batches else float("nan"))
            comm_end = sync.end_epoch()
        seconds = time.perf_counter() - start
        stats = _gather_epoch_stats(seconds, compute, comm_per_step, comm_end, loss_sum, batches,
                                    len(order), sync.pads_uneven)
        if rank == 0:
            wall += stats["epoch_seconds"]
            # never a DDP forward: that would synchronise with ranks that do not evaluate
            test_loss, test_acc = evaluate(unwrap(sync.module), test, limit=cfg.test_subset)
            history.append({"epoch": epoch + 1, **stats, "wall_seconds": wall, "test_loss": test_loss,
                            "test_acc": test_acc, "bytes_per_step": sync.bytes_per_step(),
                            "samples_per_s": stats["samples"] / stats["epoch_seconds"]})
            report(epoch=epoch + 1, epochs=cfg.epochs, step=steps, total=steps, acc=test_acc)
        dist.barrier()  # other ranks wait for rank 0's evaluation outside the timed loop
    out = {"rank": rank, "history": history}
    if return_model and rank == 0:
        out["state"] = {k: v.clone() for k, v in unwrap(sync.module).state_dict().items()}
    return out


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)


def _all_gather(tensor: torch.Tensor, nodes: int) -> torch.Tensor:
    """Every rank's copy of a 1-D tensor, stacked: (nodes, len)."""
    out = torch.empty(nodes * tensor.numel(), dtype=tensor.dtype)
    dist.all_gather_single(out, tensor)
    return out.view(nodes, -1)


def _gather_epoch_stats(seconds, compute, comm_per_step, comm_end, loss_sum, batches, samples, padded) -> dict:
    """Combine every rank's timings. Waiting is separated from communication per step: in a
    blocking collective the last rank to arrive waits for nobody, so the minimum over ranks of a
    step's collective time is its communication and the rest, on each rank, is waiting."""
    nodes = dist.get_world_size()
    local = torch.tensor([seconds, compute, comm_per_step.sum().item() + comm_end, loss_sum, batches, samples],
                         dtype=torch.float64)
    every = _all_gather(local, nodes)
    if padded and comm_per_step.numel():
        per_step = _all_gather(comm_per_step, nodes)
        comm = per_step.min(dim=0).values.sum().item() + comm_end
        wait = (per_step.sum(dim=1) - per_step.min(dim=0).values.sum()).mean().item()
    else:  # ddp: communication is estimated per step and overlaps; waiting is not separable
        comm, wait = every[:, 2].mean().item(), 0.0
    return {"epoch_seconds": every[:, 0].max().item(), "compute_s": every[:, 1].mean().item(),
            "comm_s": comm, "wait_s": wait, "train_loss": (every[:, 3].sum() / every[:, 4].sum()).item(),
            "samples": int(every[:, 5].sum().item()),
            "compute_s_per_rank": [round(v, 4) for v in every[:, 1].tolist()]}


def run(cfg: DPConfig, progress: bool = True, save: bool = True, log=print, return_model: bool = False):
    """Launch ``cfg.nodes`` workers, print one line per epoch, append rows to results/dp.csv."""
    from .launcher import launch
    check_feasible(cfg)
    outs = launch(train_worker, cfg.nodes, cfg, return_model, progress, threads=cfg.threads, timeout=cfg.timeout)
    root = next(o for o in outs if o["rank"] == 0)
    for row in root["history"]:
        log(f"epoch {row['epoch']}/{cfg.epochs}  train loss {row['train_loss']:.4f}  test acc {row['test_acc']:.2f} %"
            f"  {row['epoch_seconds']:.1f} s  {row['samples_per_s']:.0f} samples/s  compute {row['compute_s']:.1f} s"
            f"  comm {row['comm_s']:.1f} s  wait {row['wait_s']:.1f} s")
    rows = results.run_rows(cfg, root["history"], kind="dp")
    if save:
        log(f"results appended to {results.append(rows, 'dp')}")
    return (rows, root.get("state")) if return_model else rows
