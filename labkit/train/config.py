"""``TrainConfig``: the fields every kind of training shares (single process, data-parallel,
model-parallel), their reference defaults, and their validation in one place.

Each kind extends it with a frozen dataclass of its own; the CLI turns every field into a flag and
notebooks set fields by name. ``threads = 0`` means all cores, for every kind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..data.catalog import CHECKSUMS
from ..errors import LabError

# The models of ``labkit.train.models`` by name (kept here so a config validates without torch; a test
# checks that the two agree).
MODEL_NAMES = ("lenet5", "lenet5_bn", "lenet5_gn", "cnn", "mlp")


@dataclass(frozen=True)
class TrainConfig:
    """One model trained with SGD on MNIST (the reference workload of the original lab)."""

    model: str = "lenet5"
    dataset: str = "mnist"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    threads: int = field(default=1, metadata={"help": "torch threads per process; 0 means all cores"})
    train_subset: int = field(default=0, metadata={"help": "use only the first N training samples; 0 = all"})
    test_subset: int = field(default=0, metadata={"help": "evaluate on the first N test images; 0 = all"})
    eval_every: int = field(default=0, metadata={"help": "also evaluate every N optimizer steps (untimed), for "
                                                         "accuracy over time, while every node still has data; "
                                                         "0 = at the end of each epoch only"})

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise LabError(f"unknown model {self.model!r}; choose one of: {', '.join(MODEL_NAMES)}.")
        if self.dataset.lower().replace("_", "-") not in CHECKSUMS:
            raise LabError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(CHECKSUMS)}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise LabError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise LabError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise LabError(f"momentum must be in [0, 1), got {self.momentum}.")
        for name in ("threads", "train_subset", "test_subset", "eval_every"):
            if getattr(self, name) < 0:
                raise LabError(f"{name} must be 0 or positive, got {getattr(self, name)}.")

    @property
    def torch_threads(self) -> int:
        """Threads each process uses: ``threads``, or all cores for 0."""
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)


@dataclass(frozen=True)
class SingleConfig(TrainConfig):
    """One process trains the whole model on the whole training set (the reference workload)."""

    threads: int = field(default=0, metadata={"help": "torch threads; 0 means all cores"})
