"""The arithmetic of keeping N replicas in step, written once for the real workers and the simulation.

* Gradients (synchronous SGD): ``GradientBuffer`` makes every parameter's ``.grad`` a view into one
  flat buffer with one extra slot that counts the ranks that had a batch. The buffers of all ranks
  are summed (an all-reduce, or a loop in the simulation) and ``average`` divides by that count.
* Models (local SGD): ``average_models`` sums the parameters and float buffers of the replicas this
  process holds (one in a worker, all of them in the simulation), lets ``reduce_sum`` add the other
  processes' (an all-reduce), and writes the mean back into every local replica.
"""
from __future__ import annotations

import torch
from torch import nn


class GradientBuffer:
    """One flat buffer holding every gradient of ``model``, plus a slot counting contributors.

    Backward accumulates straight into the buffer, so one collective moves every gradient with no copies.
    """

    def __init__(self, model: nn.Module):
        params = list(model.parameters())
        self.flat = torch.zeros(sum(p.numel() for p in params) + 1)
        offset = 0
        for p in params:
            p.grad = self.flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    @property
    def numel(self) -> int:
        """Number of gradient values (the count slot not included)."""
        return self.flat.numel() - 1

    def clear(self) -> None:
        """Zero the gradients and the count before a step (never ``zero_grad(set_to_none=True)``: the
        gradients must stay views of the buffer)."""
        self.flat.zero_()

    def contributed(self) -> None:
        """This rank computed gradients on a batch in this step."""
        self.flat[-1] = 1.0

    def average(self) -> None:
        """After the buffers were summed over ranks: the mean gradient over the ranks that had a batch."""
        self.flat[:-1] /= self.flat[-1]


def state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """What model averaging averages: the parameters and the floating-point buffers (BatchNorm's)."""
    return [p.data for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]


def average_models(replicas: list[nn.Module], count: int, reduce_sum=None) -> None:
    """Replace every local replica's state by the mean over ``count`` replicas in all processes."""
    per_replica = [state_tensors(m) for m in replicas]
    total = torch.cat([torch.stack(same).sum(0).reshape(-1) for same in zip(*per_replica)])  # tensor by tensor
    if reduce_sum is not None:
        reduce_sum(total)
    total /= count
    for tensors in per_replica:
        offset = 0
        for t in tensors:
            t.copy_(total[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
