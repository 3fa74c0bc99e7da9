"""The four ways N data-parallel workers keep one model in step, behind one ``Synchronizer`` interface.

Every synchroniser runs one training step on this rank's batch, or on ``None`` when this
rank's shard has run out (unequal partitions), and returns the loss and the seconds spent
computing and in collectives. Ranks without a batch still join every collective, so a
quantity-skewed partition never hangs; see ``DDPSync`` for how DDP does the same with Join.
"""
from __future__ import annotations

import abc
import contextlib
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..train.loop import forward_backward
from .averaging import GradientBuffer, average_models


@dataclass
class StepTimes:
    loss: float | None  # None when this rank had no batch
    compute: float
    comm: float


class Synchronizer(abc.ABC):
    """What the worker loop calls. ``module`` is what runs forward (DDP's wrapper, or the model).

    ``pads_uneven``: every rank runs the same number of steps, idle ranks joining with ``None``
    (otherwise each rank runs its own steps and the synchroniser handles the difference).
    """

    pads_uneven = True

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, nodes: int):
        self.module, self.opt, self.nodes = model, opt, nodes

    def before_epoch(self, first_batch) -> None:
        """Untimed preparation with this rank's first batch of the epoch (None if it has none)."""

    def epoch(self, uneven: bool):
        """A context manager around the epoch's timed steps; ``uneven``: ranks have different step counts."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def step(self, batch) -> StepTimes:
        """One training step on ``batch`` (None: this rank has no batch but joins the collectives)."""

    def end_epoch(self) -> float:
        """Communication at the end of an epoch; returns its seconds."""
        return 0.0

    @abc.abstractmethod
    def bytes_per_step(self) -> float:
        """Bytes each rank sends per step under the textbook algorithm's model."""


class AllReduceSync(Synchronizer):
    """Hand-written synchronous SGD: one all-reduce of one flat gradient buffer per step."""

    def __init__(self, model, opt, nodes):
        super().__init__(model, opt, nodes)
        self.grads = GradientBuffer(model)

    def collect(self) -> None:
        """Sum every rank's gradient buffer."""
        dist.all_reduce(self.grads.flat)

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        self.grads.clear()
        loss = None
        if batch is not None:
            loss = forward_backward(self.module, batch)
            self.grads.contributed()
        t1 = time.perf_counter()
        self.collect()
        t2 = time.perf_counter()
        self.grads.average()
        self.opt.step()
        return StepTimes(loss, (t1 - t0) + (time.perf_counter() - t2), t2 - t1)

    def bytes_per_step(self) -> float:
        """Ring all-reduce: 2(N-1)/N x the gradient."""
        return 2 * (self.nodes - 1) / self.nodes * 4 * self.grads.numel


class AllGatherSync(AllReduceSync):
    """Every rank gathers every rank's gradient, then sums them locally: simple, N x the traffic."""

    def __init__(self, model, opt, nodes):
        super().__init__(model, opt, nodes)
        self.gathered = torch.empty(nodes * self.grads.flat.numel())

    def collect(self) -> None:
        dist.all_gather_single(self.gathered, self.grads.flat)
        torch.sum(self.gathered.view(self.nodes, -1), dim=0, out=self.grads.flat)

    def bytes_per_step(self) -> float:
        """Each rank's gradient reaches N-1 others: (N-1) x gradient sent per rank (ring all-gather)."""
        return (self.nodes - 1) * 4 * self.grads.numel


class FunctionSync(Synchronizer):
    """Synchronous SGD with a user's ``average(model)`` (notebook 03's exercises), timed as the step's
    communication. ``collective`` ("allreduce" or "allgather") names the algorithm it implements, for
    ``bytes_per_step``. A rank without a batch averages zero gradients (the mean is then over all N)."""

    def __init__(self, model, opt, nodes, average, collective: str = "allreduce"):
        super().__init__(model, opt, nodes)
        self.average, self.collective = average, collective
        self.numel = sum(p.numel() for p in model.parameters())
        for p in model.parameters():
            p.grad = torch.zeros_like(p)   # so even a first step without a batch has gradients to average

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=False)
        loss = forward_backward(self.module, batch) if batch is not None else None
        t1 = time.perf_counter()
        self.average(self.module)
        t2 = time.perf_counter()
        self.opt.step()
        return StepTimes(loss, (t1 - t0) + (time.perf_counter() - t2), t2 - t1)

    def bytes_per_step(self) -> float:
        """What the textbook algorithm sends per rank: all-gather (N-1) x, ring all-reduce 2(N-1)/N x the gradient."""
        share = self.nodes - 1 if self.collective == "allgather" else 2 * (self.nodes - 1) / self.nodes
        return share * 4 * self.numel


class LocalSGDSync(Synchronizer):
    """Local SGD: ``every`` local steps on each rank, then the models are averaged (FedAvg when
    ``every`` is None: once per epoch).

    Momentum buffers stay local. Averaging happens at the same global step on every rank,
    including ranks whose shard has run out, so unequal shards never hang.
    """

    def __init__(self, model, opt, nodes, every: int | None = None):
        super().__init__(model, opt, nodes)
        self.every = every
        self.numel = sum(p.numel() for p in model.parameters())
        self.since_average = 0

    def _average(self) -> None:
        average_models([self.module], self.nodes, dist.all_reduce)
        self.since_average = 0

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        loss = None
        if batch is not None:
            self.opt.zero_grad(set_to_none=True)
            loss = forward_backward(self.module, batch)
            self.opt.step()
        self.since_average += 1
        t1 = time.perf_counter()
        if self.every and self.since_average >= self.every:
            self._average()
        return StepTimes(loss, t1 - t0, time.perf_counter() - t1)

    def end_epoch(self) -> float:
        """Average whatever was trained since the last round so every epoch ends on one model."""
        if not self.since_average:
            return 0.0
        t0 = time.perf_counter()
        self._average()
        return time.perf_counter() - t0

    def bytes_per_step(self) -> float:
        return 2 * (self.nodes - 1) / self.nodes * 4 * self.numel / (self.every or 1)


class DDPSync(Synchronizer):
    """torch's DistributedDataParallel: bucketed all-reduce overlapped with backward.

    Uneven shards: the epoch runs inside ``Join``, so a rank that has run out shadows the
    others' all-reduces; gradients are averaged over the ranks still training. Even shards skip
    Join (see ``epoch``). Because communication overlaps backward it cannot be timed directly:
    compute per step is measured on a few ``no_sync`` calibration passes before each epoch
    (outside the timed loop) and the rest of each step is reported as (exposed) communication.
    """

    pads_uneven = False

    def __init__(self, model, opt, nodes):
        from torch.nn.parallel import DistributedDataParallel
        # small buckets let the big fc1 gradient start its all-reduce while conv layers backprop
        super().__init__(DistributedDataParallel(model, bucket_cap_mb=1, gradient_as_bucket_view=True), opt, nodes)
        self.numel = sum(p.numel() for p in model.parameters())
        self.compute_estimate = 0.0

    def before_epoch(self, first_batch, passes: int = 3) -> None:
        if first_batch is None:
            return
        with self.module.no_sync():
            forward_backward(self.module, first_batch)  # warm-up
            t0 = time.perf_counter()
            for _ in range(passes):
                forward_backward(self.module, first_batch)
            self.compute_estimate = (time.perf_counter() - t0) / passes
        self.opt.zero_grad(set_to_none=False)

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=False)  # keep the gradients as views of DDP's buckets
        loss = forward_backward(self.module, batch)
        t1 = time.perf_counter()
        self.opt.step()
        total = time.perf_counter() - t0
        compute = min(self.compute_estimate, t1 - t0) + (time.perf_counter() - t1)
        return StepTimes(loss, compute, max(0.0, total - compute))

    def epoch(self, uneven: bool):
        """Join only when shards differ in length: it costs a blocking all-reduce in every forward,
        which with even shards (the usual case) buys nothing."""
        if not uneven:
            return contextlib.nullcontext()
        from torch.distributed.algorithms.join import Join
        return Join([self.module], divide_by_initial_world_size=False)

    def bytes_per_step(self) -> float:
        return 2 * (self.nodes - 1) / self.nodes * 4 * self.numel


SYNCHRONIZERS = {"ddp": DDPSync, "allreduce": AllReduceSync, "allgather": AllGatherSync, "local": LocalSGDSync}


def build(mode: str, model: nn.Module, opt: torch.optim.Optimizer, nodes: int,
          average_every: int | None = None, average=None) -> Synchronizer:
    """The synchroniser for ``mode``; ``average_every`` is local SGD's H (None: once per epoch); ``average``,
    a user's function ``average(model)``, replaces labkit's averaging in the allreduce and allgather modes."""
    if average is not None and mode in ("allreduce", "allgather"):
        return FunctionSync(model, opt, nodes, average, mode)
    if mode == "local":
        return LocalSGDSync(model, opt, nodes, average_every)
    return SYNCHRONIZERS[mode](model, opt, nodes)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)
