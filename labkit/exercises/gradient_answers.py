"""labkit's reference answers to notebook 03's exercises: synchronous SGD written by hand (averaging
the gradients with all-reduce or all-gather, one worker's training step) and a bottleneck node.

They are what ``use`` falls back on while a student's exercise is open, and what the checkers are
tested against; each reads like the textbook version of the idea.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F


def allreduce_average_gradients(model: torch.nn.Module) -> None:
    """Replace every parameter's gradient by its mean over all ranks: all-reduce (SUM), then divide by N."""
    world_size = dist.get_world_size()
    for param in model.parameters():
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad /= world_size


def allgather_average_gradients(model: torch.nn.Module) -> None:
    """The same mean, by all-gather: every rank receives every rank's gradient and averages them locally."""
    world_size = dist.get_world_size()
    for param in model.parameters():
        gathered = [torch.empty_like(param.grad) for _ in range(world_size)]
        dist.all_gather(gathered, param.grad)
        param.grad.copy_(torch.stack(gathered).mean(dim=0))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, average) -> float:
    """One step of a data-parallel worker on its own ``(x, y)`` batch; returns this rank's loss."""
    x, y = batch
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    average(model)          # every rank now holds the gradient of the global batch
    optimizer.step()        # so every replica takes the same step
    return loss.item()


def bottleneck_delay(rank: int, world_size: int, delay_ms: float) -> None:
    """Make the last node (rank ``world_size - 1``) a bottleneck: it sleeps ``delay_ms`` ms; the others do not."""
    if rank == world_size - 1:
        time.sleep(delay_ms / 1000)
