"""The four ways N data-parallel workers keep one model in step, one class each.

Every synchroniser runs one training step on this rank's batch, or on ``None`` when this
rank's shard has run out (unequal partitions), and returns the loss and the seconds spent
computing and in collectives. Ranks without a batch still join every collective, so a
quantity-skewed partition never hangs; see ``DDPSync`` for how DDP does the same with Join.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class StepTimes:
    loss: float | None  # None when this rank had no batch
    compute: float
    comm: float


def attach_flat_grads(model: nn.Module) -> torch.Tensor:
    """Make every parameter's .grad a view into one flat buffer (+1 slot for the active count).

    Backward then accumulates straight into the buffer, so one collective moves every gradient
    with no copies.
    """
    params = list(model.parameters())
    flat = torch.zeros(sum(p.numel() for p in params) + 1)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def _forward_backward(model: nn.Module, batch) -> float:
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item()


def average_model(model: nn.Module, nodes: int) -> None:
    """Replace parameters and float buffers by their mean over all ranks (one all-reduce)."""
    tensors = [p.data for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= nodes
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


class AllReduceSync:
    """Hand-written synchronous SGD: one all-reduce of one flat gradient buffer per step."""

    pads_uneven = True  # every rank runs the same number of steps (idle ranks send zeros)

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, nodes: int, cfg=None):
        self.module, self.opt, self.nodes = model, opt, nodes
        self.flat = attach_flat_grads(model)

    def collect(self) -> None:
        dist.all_reduce(self.flat)

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        self.flat.zero_()
        loss = None
        if batch is not None:
            loss = _forward_backward(self.module, batch)
            self.flat[-1] = 1.0
        t1 = time.perf_counter()
        self.collect()
        t2 = time.perf_counter()
        self.flat[:-1] /= self.flat[-1]  # mean over the ranks that had a batch
        self.opt.step()
        return StepTimes(loss, (t1 - t0) + (time.perf_counter() - t2), t2 - t1)

    def epoch(self, uneven: bool):
        return contextlib.nullcontext()

    def end_epoch(self) -> float:
        return 0.0

    def bytes_per_step(self) -> float:
        """Bytes each rank sends per step under the ring all-reduce model: 2(N-1)/N x gradient."""
        return 2 * (self.nodes - 1) / self.nodes * 4 * (self.flat.numel() - 1)


class AllGatherSync(AllReduceSync):
    """Every rank gathers every rank's gradient, then averages locally: simple, N x the traffic."""

    def __init__(self, model, opt, nodes, cfg=None):
        super().__init__(model, opt, nodes, cfg)
        self.gathered = torch.empty(nodes * self.flat.numel())

    def collect(self) -> None:
        dist.all_gather_single(self.gathered, self.flat)
        torch.sum(self.gathered.view(self.nodes, -1), dim=0, out=self.flat)

    def bytes_per_step(self) -> float:
        """Each rank's gradient reaches N-1 others: (N-1) x gradient sent per rank (ring all-gather)."""
        return (self.nodes - 1) * 4 * (self.flat.numel() - 1)


class LocalSGDSync:
    """Local SGD: H local steps on each rank, then the models are averaged (FedAvg when H = an epoch).

    Momentum buffers stay local. Averaging happens at the same global step on every rank,
    including ranks whose shard has run out, so unequal shards never hang.
    """

    pads_uneven = True

    def __init__(self, model, opt, nodes, cfg):
        self.module, self.opt, self.nodes = model, opt, nodes
        self.every = None if cfg.local_steps == "epoch" else int(cfg.local_steps)
        self.numel = sum(p.numel() for p in model.parameters())
        self.since_average = 0

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        loss = None
        if batch is not None:
            self.opt.zero_grad(set_to_none=True)
            loss = _forward_backward(self.module, batch)
            self.opt.step()
        self.since_average += 1
        t1 = time.perf_counter()
        if self.every and self.since_average >= self.every:
            average_model(self.module, self.nodes)
            self.since_average = 0
        return StepTimes(loss, t1 - t0, time.perf_counter() - t1)

    def epoch(self, uneven: bool):
        return contextlib.nullcontext()

    def end_epoch(self) -> float:
        """Average whatever was trained since the last round so every epoch ends on one model."""
        if not self.since_average:
            return 0.0
        t0 = time.perf_counter()
        average_model(self.module, self.nodes)
        self.since_average = 0
        return time.perf_counter() - t0

    def bytes_per_step(self) -> float:
        every = self.every or 1
        return 2 * (self.nodes - 1) / self.nodes * 4 * self.numel / every


class DDPSync:
    """torch's DistributedDataParallel: bucketed all-reduce overlapped with backward.

    Uneven shards: the epoch runs inside ``Join``, so a rank that has run out shadows the
    others' all-reduces; gradients are averaged over the ranks still training. Even shards skip
    Join (see ``epoch``). Because
    communication overlaps backward it cannot be timed directly: compute per step is measured
    on a few ``no_sync`` calibration passes at the start of each epoch (outside the timed loop)
    and the rest of each step is reported as (exposed) communication.
    """

    pads_uneven = False

    def __init__(self, model, opt, nodes, cfg=None):
        from torch.nn.parallel import DistributedDataParallel
        self.nodes, self.opt, self.inner = nodes, opt, model
        self.numel = sum(p.numel() for p in model.parameters())
        # small buckets let the big fc1 gradient start its all-reduce while conv layers backprop
        self.module = DistributedDataParallel(model, bucket_cap_mb=1, gradient_as_bucket_view=True)
        self.compute_estimate = 0.0

    def calibrate(self, batch, passes: int = 3) -> None:
        if batch is None:
            return
        with self.module.no_sync():
            _forward_backward(self.module, batch)  # warm-up
            t0 = time.perf_counter()
            for _ in range(passes):
                _forward_backward(self.module, batch)
            forward_backward = (time.perf_counter() - t0) / passes
        self.opt.zero_grad(set_to_none=False)
        self.compute_estimate = forward_backward

    def step(self, batch) -> StepTimes:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=False)  # keep the gradients as views of DDP's buckets
        loss = _forward_backward(self.module, batch)
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

    def end_epoch(self) -> float:
        return 0.0

    def bytes_per_step(self) -> float:
        return 2 * (self.nodes - 1) / self.nodes * 4 * self.numel


SYNCS = {"ddp": DDPSync, "allreduce": AllReduceSync, "allgather": AllGatherSync, "local": LocalSGDSync}
