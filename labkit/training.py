"""The single-machine baseline: a plain SGD loop over in-memory tensors, and evaluation.

Everything else in the lab is compared with this loop, so it is kept as fast as a fair
single process can be: batches are gathered from one pre-normalised tensor per step.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import allocator, data, models, results
from .errors import LabError


@dataclass(frozen=True)
class SingleConfig:
    """One process trains the whole model on the whole training set (the reference workload)."""

    model: str = "lenet5"
    dataset: str = "mnist"
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0
    threads: int = field(default=0, metadata={"help": "torch threads; 0 means all cores"})
    train_subset: int = field(default=0, metadata={"help": "use only the first N training samples; 0 = all"})
    test_subset: int = field(default=0, metadata={"help": "evaluate on the first N test images; 0 = all"})

    def __post_init__(self):
        check_common(self)


def check_common(cfg) -> None:
    """Validate the fields every training config shares; raise LabError naming the bad one."""
    if cfg.model not in models.MODELS:
        raise LabError(f"unknown model {cfg.model!r}; choose one of: {', '.join(models.MODELS)}.")
    if cfg.dataset.lower().replace("_", "-") not in data.CHECKSUMS:
        raise LabError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(data.CHECKSUMS)}.")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise LabError(f"{name} must be at least 1, got {getattr(cfg, name)}.")
    if cfg.lr <= 0:
        raise LabError(f"lr must be positive, got {cfg.lr}.")
    if not 0 <= cfg.momentum < 1:
        raise LabError(f"momentum must be in [0, 1), got {cfg.momentum}.")
    for name in ("threads", "train_subset", "test_subset"):
        if getattr(cfg, name, 0) < 0:
            raise LabError(f"{name} must be 0 or positive, got {getattr(cfg, name)}.")


def resolve_threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) for one epoch: the same for every process given (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: data.ImageDataset, batch_size: int = 500,
             limit: int = 0) -> tuple[float, float]:
    """Mean loss and accuracy (%) on a whole split (or its first ``limit`` images), in eval mode;
    restores the model's mode."""
    was_training = model.training
    model.eval()
    n = min(limit, len(dataset)) if limit else len(dataset)
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        x, y = dataset.normalized[start:end], dataset.labels[start:end]
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / n, 100.0 * correct / n


def train_single(cfg: SingleConfig, progress: bool = True, save: bool = True, log=print) -> list[dict]:
    """Train on one process; print and return one result row per epoch (and append them to results/)."""
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    allocator.tune()
    train = data.load(cfg.dataset, train=True)
    test = data.load(cfg.dataset, train=False)
    train.normalized  # normalise the whole set once, before the clock starts
    n = min(cfg.train_subset, len(train)) if cfg.train_subset else len(train)
    model = models.build(cfg.model, seed=cfg.seed)
    opt = make_optimizer(model, cfg)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    history, wall = [], 0.0
    for epoch in range(cfg.epochs):
        order = epoch_order(n, cfg.seed, epoch)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        model.train()
        start, loss_sum = time.perf_counter(), 0.0
        for step in range(steps):
            x, y = train.batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        wall += seconds
        test_loss, test_acc = evaluate(model, test, limit=cfg.test_subset)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps, "test_loss": test_loss,
               "test_acc": test_acc, "epoch_seconds": seconds, "wall_seconds": wall,
               "samples_per_s": n / seconds}
        history.append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
            f"test acc {test_acc:.2f} %  {seconds:.1f} s  {row['samples_per_s']:.0f} samples/s")
    rows = results.run_rows(cfg, history, kind="single", threads_used=threads, train_size=n)
    if save:
        path = results.append(rows, "single")
        log(f"wall time {wall:.1f} s; results appended to {path}")
    return rows
