"""Epochs and batches: the one sample order every process agrees on, and the batch loop over it.

Every training loop of the lab (one process, data-parallel ranks, the simulation, the model-parallel
master) walks an epoch the same way: a permutation from (seed, epoch), cut into consecutive batches.
"""
from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) for one epoch: the same for every process given (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def step_count(samples: int, batch_size: int) -> int:
    """Batches in an epoch of ``samples`` (the last one may be smaller)."""
    return -(-samples // batch_size)


def batch_indices(order: torch.Tensor, step: int, batch_size: int) -> torch.Tensor:
    """The indices of batch ``step`` of ``order`` (empty past its end)."""
    return order[step * batch_size:(step + 1) * batch_size]


def batches(dataset, order: torch.Tensor, batch_size: int, steps: int | None = None):
    """``(x, y)`` for each batch of ``order``, from an in-memory dataset (``ImageDataset.batch``).

    With ``steps`` longer than the epoch, the extra steps yield ``None``: a data-parallel rank whose
    shard ran out still takes part in every step's collective.
    """
    for step in range(step_count(len(order), batch_size) if steps is None else steps):
        yield dataset.batch(batch_indices(order, step, batch_size)) if step * batch_size < len(order) else None
