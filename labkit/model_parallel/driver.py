"""The master's side of a model-parallel step: the two parts on worker1 and worker2 (``rpc.remote``),
the forward pass through their RRefs, distributed autograd's backward and the ``DistributedOptimizer``.

``placement="colocated"`` keeps stage 1 on the master (a local RRef, called without a message) and
puts stage 2 on worker1; ``optimizer="local"`` replaces the DistributedOptimizer by one SGD per stage,
stepped by one asynchronous call each (``StageOptimizers``); ``optimizer="deferred"`` sends no optimizer
message at all: each part steps when its parameters are next used (``DeferredSteps``).

``VerticalPipeline`` sends each micro-batch to stage 1 with ``rpc.remote`` and hands the resulting
RRef to stage 2, so activations go straight from worker1 to worker2 and stage 1 can start
micro-batch i+1 while stage 2 works on micro-batch i. ``HorizontalSplit`` divides one Linear
layer's output neurons between the two workers instead.
"""
from __future__ import annotations

import time

import torch
import torch.distributed.autograd as dist_autograd
import torch.nn.functional as F
from torch.distributed import rpc
from torch.distributed.optim import DistributedOptimizer

from .parts import build_part
from .stage import (BWD, FWD, OPT, STEP, DeferredOptimizer, Stage, call, call_async, call_remote,
                    step_with_context)


class StageOptimizers:
    """``optimizer="local"``: every stage steps its own SGD; the master starts all of them at once
    (one asynchronous call per remote stage) and steps its own parts meanwhile."""

    def __init__(self, stages: dict, local: dict, lr: float, momentum: float):
        self.stages = sorted(stages.values(), key=lambda rref: rref.is_owner())   # remote ones first
        for stage in self.stages:
            call(stage, "use_local_optimizer", lr, momentum)
        self.local = [(module, torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum))
                      for module in local.values()]

    def step(self, context_id: int) -> None:
        pending = [call_async(stage, "step", context_id) for stage in self.stages]
        for module, optimizer in self.local:
            step_with_context(optimizer, module, context_id)
        torch.futures.wait_all(pending)


class DeferredSteps:
    """``optimizer="deferred"``: every part keeps the gradients of its backward pass and steps when its
    parameters are next used (``DeferredOptimizer``), so the master sends no optimizer message at all."""

    def __init__(self, stages: dict, local: dict, lr: float, momentum: float):
        for stage in stages.values():
            call(stage, "use_deferred_optimizer", lr, momentum)
        self.local = [DeferredOptimizer(module, lr, momentum) for module in local.values()]

    def step(self, context_id: int) -> None:
        """Nothing to send: each part steps before its next forward."""

    def flush(self) -> None:
        for deferred in self.local:
            deferred.flush()


class Driver:
    """Shared by both splits: stages on worker1/worker2, the optimizer, numbering and timing."""

    parts: tuple[str, str]
    local_parts: tuple[str, ...] = ()

    def __init__(self, cfg, at: int):
        self.cfg, self.at = cfg, at
        self.stages = {}
        owners = ("worker1", "worker2") if cfg.placement == "separate" else (None, "worker1")
        for k, (part, owner) in enumerate(zip(self.parts, owners), start=1):
            args = (f"stage {k}" if not cfg.horizontal else f"half {k}", cfg.model, cfg.seed, at, cfg.horizontal,
                    part, cfg.fail_mode if cfg.fail_stage == k else "")
            self.stages[part] = rpc.RRef(Stage(*args)) if owner is None else rpc.remote(owner, Stage, args=args)
        self.local = {p: build_part(cfg.model, cfg.seed, at, cfg.horizontal, p) for p in self.local_parts}
        if cfg.optimizer in ("local", "deferred"):
            kind = StageOptimizers if cfg.optimizer == "local" else DeferredSteps
            self.optimizer = kind(self.stages, self.local, cfg.lr, cfg.momentum)
        else:
            params = [r for stage in self.stages.values() for r in call(stage, "parameter_rrefs")]
            params += [rpc.RRef(p) for module in self.local.values() for p in module.parameters()]
            self.optimizer = DistributedOptimizer(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum)
        self.seq = 0
        self.master_events: list[tuple] = []   # (seq, phase, start, end, 0, 0); seq = step's first for OPT/STEP

    def step(self, x: torch.Tensor, y: torch.Tensor, context=None) -> float:
        """One training step on a batch: forward in micro-batches, backward, one optimizer step.
        Returns the batch's mean loss. ``context`` receives the autograd context id (for checks)."""
        first_seq, began = self.seq, time.perf_counter()
        with dist_autograd.context() as ctx:
            outputs = self.forward(x.tensor_split(self.cfg.micro_batches), first_seq)
            targets = [t for t in y.tensor_split(self.cfg.micro_batches) if len(t)]   # as _number skips empties
            losses = [F.cross_entropy(out, t, reduction="sum") for out, t in zip(outputs, targets)]
            loss = torch.stack(losses).sum() / len(y)   # the batch mean, whatever the micro-batch sizes
            backward = time.perf_counter()
            dist_autograd.backward(ctx, [loss])
            if context is not None:
                context(ctx)
            start = time.perf_counter()
            self.optimizer.step(ctx)
            end = time.perf_counter()
        self.master_events += [(first_seq, BWD, backward, start, 0, 0), (first_seq, OPT, start, end, 0, 0),
                               (first_seq, STEP, began, time.perf_counter(), 0, 0)]
        return loss.item()

    def _number(self, micro: list[torch.Tensor], first_seq: int) -> list[tuple[int, torch.Tensor]]:
        chunks = [(first_seq + i, m) for i, m in enumerate(c for c in micro if len(c))]
        self.seq = first_seq + len(chunks)
        return chunks

    def take_events(self) -> dict[str, torch.Tensor]:
        events = {"master": torch.tensor(self.master_events, dtype=torch.float64).reshape(-1, 6)}
        self.master_events = []
        for k, stage in enumerate(self.stages.values(), start=1):
            events[f"worker{k}"] = call(stage, "take_events")
        return events

    def states(self) -> dict[str, dict]:
        if isinstance(self.optimizer, DeferredSteps):
            self.optimizer.flush()
        states = {part: call(stage, "state") for part, stage in self.stages.items()}
        states.update({p: {k: v.detach().clone() for k, v in m.state_dict().items()} for p, m in self.local.items()})
        return states

    def gradients(self, context_id: int) -> dict[str, dict]:
        grads = {part: call(stage, "gradients", context_id) for part, stage in self.stages.items()}
        local = dist_autograd.get_gradients(context_id)
        for part, module in self.local.items():
            grads[part] = {n: local[p].clone() for n, p in module.named_parameters() if p in local}
        return grads

    def close(self) -> None:
        """Drop every RRef before RPC shuts down, so the shutdown has nothing to wait for."""
        self.stages.clear()
        self.optimizer = None


class VerticalPipeline(Driver):
    """Layers [0, at) in stage 1, [at, end) in stage 2; micro-batches flow master -> 1 -> 2 -> master.
    Separate: stage 1's output stays on worker1 and stage 2 fetches it from there through an RRef.
    Colocated: the master computes stage 1 itself and sends the activation to stage 2."""

    parts = ("stage1", "stage2")

    def forward(self, micro: list[torch.Tensor], first_seq: int) -> list[torch.Tensor]:
        first, second = self.stages["stage1"], self.stages["stage2"]
        futures = []
        for seq, x in self._number(micro, first_seq):
            activation = call(first, "forward", seq, x) if first.is_owner() else call_remote(first, "forward", seq, x)
            futures.append(call_async(second, "forward", seq, activation))
        return torch.futures.wait_all(futures)


class HorizontalSplit(Driver):
    """Layer ``at`` (a Linear) divided by output neurons between worker1 and worker2; the layers
    before and after it run on the master, which sends each half the same input and joins the halves."""

    parts = ("half1", "half2")
    local_parts = ("head", "tail")

    def forward(self, micro: list[torch.Tensor], first_seq: int) -> list[torch.Tensor]:
        pending = []
        for seq, x in self._number(micro, first_seq):
            start = time.perf_counter()
            h = self.local["head"](x)
            self.master_events.append((seq, FWD, start, time.perf_counter(), 0, 0))
            pending.append((seq, [call_async(self.stages[p], "forward", seq, h) for p in self.parts]))
        outputs = []
        for seq, halves in pending:
            joined = torch.cat(torch.futures.wait_all(halves), dim=-1)
            start = time.perf_counter()
            outputs.append(self.local["tail"](joined))
            self.master_events.append((seq, FWD, start, time.perf_counter(), 0, 0))
        return outputs


def make_driver(cfg, at: int) -> Driver:
    return (HorizontalSplit if cfg.horizontal else VerticalPipeline)(cfg, at)
