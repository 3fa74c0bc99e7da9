"""Per-rank torch Samplers for data-parallel training, built on ``labkit.data.partition``.

Every sampler is deterministic in (seed, rank, epoch): call ``set_epoch(e)`` before each epoch
(as with torch's DistributedSampler), then iterate it or take ``indices()`` as one index tensor.
``len(sampler)`` is this rank's epoch length; ``epoch_lengths`` gives every rank's (they differ
for skewed shards). ``make(kind, rank, nodes, labels, seed)`` picks a sampler by name:

* ``"iid"`` -> ``PartitionSampler``: one global permutation per epoch (the same on every rank,
  from the shared seed), cut into disjoint slices. Never pads by repeating samples: with
  ``drop_last=True`` (default) the last ``n % nodes`` samples of that epoch's permutation are
  left out, a different few each epoch; with ``drop_last=False`` the first ``n % nodes`` ranks
  get one extra sample instead.
* ``"sampling"`` -> ``ReplacementSampler``: fresh i.i.d. draws with replacement each epoch.
* any other strategy of ``labkit.data.partition`` -> ``ShardSampler``: the partition is computed once
  from the shared seed; each rank keeps its shard and reshuffles it inside every epoch.
* ``BROKEN`` names -> deliberately wrong samplers (teaching examples; see below).

``record(factory, nodes, size, epochs)`` runs any sampler class (one written in a notebook too) and
returns ``RecordedSampler``s that replay its orders, so the lab's loops can train on it.
"""
from __future__ import annotations

import abc

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import LabError
from . import partition as partitioning
from .audit import draw
from .batches import epoch_order
from .measures import as_labels


class EpochSampler(Sampler, abc.ABC):
    """Base: a rank's sample order for the current epoch, as a tensor (``indices``) or an iterator."""

    def __init__(self, rank: int, nodes: int, seed: int = 0):
        super().__init__()
        _check_rank(rank, nodes)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise LabError(f"seed must be a non-negative integer, got {seed!r}.")
        self.rank, self.nodes, self.seed, self.epoch = int(rank), int(nodes), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``__iter__`` and ``indices()`` give."""
        self.epoch = int(epoch)

    @abc.abstractmethod
    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's sample indices (int64 tensor) for ``epoch`` (default: the one set last)."""

    def __iter__(self):
        return iter(self.indices().tolist())

    def _rng(self, epoch: int | None) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.rank, self.epoch if epoch is None else epoch))


class ShardSampler(EpochSampler):
    """A fixed shard of the data for this rank, reshuffled inside each epoch."""

    def __init__(self, shard, rank: int, nodes: int, seed: int = 0):
        super().__init__(rank, nodes, seed)
        self.shard = torch.as_tensor(np.asarray(shard, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.shard)

    def indices(self, epoch=None):
        return self.shard[torch.from_numpy(self._rng(epoch).permutation(len(self.shard)))]


class PartitionSampler(EpochSampler):
    """Random partitioning: this rank's disjoint slice of one permutation per epoch shared by all ranks."""

    def __init__(self, size: int, rank: int, nodes: int, seed: int = 0, drop_last: bool = True):
        super().__init__(rank, nodes, seed)
        if size < nodes:
            raise LabError(f"cannot split {size} samples over {nodes} nodes; use at most {size} nodes.")
        self.size, self.drop_last = int(size), bool(drop_last)
        per, extra = divmod(self.size, self.nodes)
        self.start = self.rank * per + (0 if drop_last else min(self.rank, extra))
        self.stop = self.start + per + (0 if drop_last or self.rank >= extra else 1)

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self, epoch=None):
        # epoch_order: with one node this is exactly the single-machine order.
        return epoch_order(self.size, self.seed, self.epoch if epoch is None else epoch)[self.start:self.stop]


class ReplacementSampler(EpochSampler):
    """Random sampling: ``draws`` i.i.d. indices with replacement from the whole set, fresh each epoch."""

    def __init__(self, size: int, rank: int, nodes: int, seed: int = 0, draws: int | None = None):
        super().__init__(rank, nodes, seed)
        self.size = int(size)
        share = self.size // self.nodes + (self.rank < self.size % self.nodes)  # nodes together draw `size`
        self.draws = share if draws is None else int(draws)
        if self.draws < 1:
            raise LabError(f"draws must be at least 1, got {draws}.")

    def __len__(self) -> int:
        return self.draws

    def indices(self, epoch=None):
        return torch.from_numpy(self._rng(epoch).integers(0, self.size, self.draws, dtype=np.int64))


class RecordedSampler(EpochSampler):
    """Replays the orders another sampler gave, one index array per epoch (see ``record``)."""

    def __init__(self, orders, rank: int, nodes: int, seed: int = 0):
        super().__init__(rank, nodes, seed)
        self.orders = [torch.as_tensor(np.asarray(order, dtype=np.int64)) for order in orders]
        if not self.orders:
            raise LabError("a recorded sampler needs the order of at least one epoch.")

    def __len__(self) -> int:
        return len(self.orders[0])

    def indices(self, epoch=None):
        epoch = self.epoch if epoch is None else epoch
        if not 0 <= epoch < len(self.orders):
            raise LabError(f"rank {self.rank}'s sampler was recorded for epochs 0..{len(self.orders) - 1}, "
                           f"not epoch {epoch}; record as many epochs as the run trains.")
        return self.orders[epoch]


def record(factory, nodes: int, size: int, epochs: int, seed: int = 0) -> list[RecordedSampler]:
    """Every rank's order in each of ``epochs`` epochs from ``factory(rank, nodes)`` (any torch Sampler with
    ``set_epoch``, e.g. a class written in a notebook), as ``RecordedSampler``s the lab's loops can train on."""
    _check_nodes(nodes)
    built = [factory(rank, nodes) for rank in range(nodes)]
    return [RecordedSampler([draw(sampler, rank, epoch, size) for epoch in range(epochs)], rank, nodes, seed)
            for rank, sampler in enumerate(built)]


# ---- Teaching examples: the two broken samplers of the original lab (see DESIGN.md). ----
# Both ignore set_epoch, as the originals did: every epoch repeats the first one's order.

class _BrokenSampler(EpochSampler):
    """What both broken samplers share: every rank holds size // nodes indices."""

    def __init__(self, size: int, rank: int, nodes: int, seed: int = 0):
        super().__init__(rank, nodes, seed)
        self.size = int(size)

    def __len__(self) -> int:
        return self.size // self.nodes


class SeedPerRankSampler(_BrokenSampler):
    """BROKEN on purpose: each rank shuffles with its own seed (seed + rank) and takes "its" slice.

    The slices come from different permutations, so they overlap: with 2 nodes each rank holds a
    random half, about half of it also on the other rank, and together they cover only ~75 %.
    """

    def indices(self, epoch=None):
        perm = epoch_order(self.size, self.seed + self.rank, 0)
        return perm[self.rank * len(self):(self.rank + 1) * len(self)]


class FirstSliceSampler(_BrokenSampler):
    """BROKEN on purpose: every rank shuffles only indices 0 .. size/nodes - 1, with the same seed.

    All ranks train on the same first 1/N of the data (in the same order); the rest is never seen.
    """

    def indices(self, epoch=None):
        return epoch_order(len(self), self.seed, 0)


BROKEN = {"seed_per_rank": SeedPerRankSampler, "first_slice": FirstSliceSampler}
KINDS = partitioning.STRATEGIES + tuple(BROKEN)


def make(kind: str, rank: int, nodes: int, labels, seed: int = 0, **params) -> EpochSampler:
    """The sampler for ``rank`` of ``nodes``: a partition strategy name or a ``BROKEN`` one (see module doc).

    ``params``: ``drop_last`` for "iid", ``draws`` for "sampling", the strategy's own for the others.
    """
    return _build(kind, [rank], nodes, labels, seed, params)[0]


def make_all(kind: str, nodes: int, labels, seed: int = 0, **params) -> list[EpochSampler]:
    """The samplers of all ranks, as each rank would build them (for audits and in-process simulation)."""
    _check_nodes(nodes)
    return _build(kind, range(nodes), nodes, labels, seed, params)


def _build(kind, ranks, nodes, labels, seed, params) -> list[EpochSampler]:
    labels = as_labels(labels)
    if kind not in KINDS:
        raise LabError(f"unknown sampler kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    for rank in ranks:
        _check_rank(rank, nodes)
    allowed = {"drop_last"} if kind == "iid" else set(partitioning.PARAMS.get(kind, ()))
    if set(params) - allowed:
        raise LabError(f"sampler {kind!r} does not take {', '.join(sorted(set(params) - allowed))}; "
                       f"it accepts {', '.join(sorted(allowed)) or 'no parameters'}.")
    n = len(labels)
    if kind == "iid":
        return [PartitionSampler(n, r, nodes, seed, **params) for r in ranks]
    if kind == "sampling":
        return [ReplacementSampler(n, r, nodes, seed, **params) for r in ranks]
    if kind in BROKEN:
        return [BROKEN[kind](n, r, nodes, seed) for r in ranks]
    parts = partitioning.partition(labels, nodes, kind, seed=seed, **params)
    return [ShardSampler(parts[r], r, nodes, seed) for r in ranks]


def epoch_lengths(kind: str, nodes: int, labels, seed: int = 0, **params) -> list[int]:
    """Samples per epoch on each rank (they differ for skewed shards, so steps per epoch differ too)."""
    return [len(s) for s in make_all(kind, nodes, labels, seed, **params)]


def _check_nodes(nodes) -> None:
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 1:
        raise LabError(f"nodes must be an integer >= 1, got {nodes!r}.")


def _check_rank(rank, nodes) -> None:
    _check_nodes(nodes)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < nodes:
        raise LabError(f"rank must be an integer in 0..{nodes - 1}, got {rank!r}.")
