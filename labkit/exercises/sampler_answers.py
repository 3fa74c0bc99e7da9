"""labkit's reference answers to notebook 02's exercises: a Dirichlet label-skew split and the two samplers.

They are what ``use`` falls back on while an exercise is open. Both samplers give exactly the orders of
labkit's own (``samplers.make("iid" | "sampling", ...)``), so notebook 04 reuses the runs recorded for those.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def dirichlet_split(labels, nodes: int, alpha: float, seed: int = 0) -> list[np.ndarray]:
    """Non-IID label skew: each class's samples, shuffled, go to the nodes in proportions drawn from
    Dirichlet(alpha, ..., alpha); small alpha gives each node few classes. One sorted index array per node."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(nodes)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(nodes, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for node, chunk in enumerate(np.split(members, cuts)):
            parts[node].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


class ScaffoldSampler(Sampler):
    """What the notebook's scaffold gives both samplers: the constructor, ``set_epoch`` and ``len``."""

    def __init__(self, size: int, rank: int, nodes: int, seed: int = 0):
        super().__init__()
        self.size, self.rank, self.nodes, self.seed, self.epoch = size, rank, nodes, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration gives."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.nodes


class RandomPartitionSampler(ScaffoldSampler):
    """Random partitioning: a disjoint slice of one permutation per epoch that every rank computes alike."""

    def __iter__(self):
        generator = torch.Generator()
        # One number from seed and epoch, the same on every rank and new every epoch. (seed + epoch, as
        # PyTorch's DistributedSampler does, would give seed 1's epoch 0 the order of seed 0's epoch 1.)
        generator.manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        share = len(self)  # the last size % nodes indices of the permutation are left out
        return iter(order[self.rank * share:(self.rank + 1) * share].tolist())


class RandomSamplingSampler(ScaffoldSampler):
    """Random sampling: ``size // nodes`` draws with replacement per epoch, independent across ranks."""

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.rank, self.epoch))  # its own stream per rank and epoch
        return iter(rng.integers(0, self.size, len(self)).tolist())
