"""The single-machine baseline: a plain SGD loop over in-memory tensors.

Everything else in the lab is compared with this loop, so it is kept as fast as a fair
single process can be: batches are gathered from one pre-normalised tensor per step.
"""
from __future__ import annotations

import time

import torch

from .. import results
from ..data import datasets
from ..data.batches import batches, epoch_order, step_count
from ..runtime.group import prepare_process
from ..runtime.progress import bar as progress_bar
from . import models
from .config import SingleConfig
from .loop import evaluate, evaluation_due, forward_backward, make_optimizer, midway_row


def run(cfg: SingleConfig, progress: bool = True, save: bool = True, log=print) -> list[dict]:
    """Train on one process; print and return one result row per epoch (and append them to results/)."""
    threads = cfg.torch_threads
    prepare_process(threads)
    train = datasets.load(cfg.dataset, train=True)
    test = datasets.load(cfg.dataset, train=False)
    train.normalized  # normalise the whole set once, before the clock starts
    n = min(cfg.train_subset, len(train)) if cfg.train_subset else len(train)
    model = models.build(cfg.model, seed=cfg.seed)
    opt = make_optimizer(model, cfg)
    steps = step_count(n, cfg.batch_size)
    history, wall, done = [], 0.0, 0
    for epoch in range(cfg.epochs):
        order = epoch_order(n, cfg.seed, epoch)
        bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        model.train()
        start, paused, loss_sum = time.perf_counter(), 0.0, 0.0
        for step, batch in enumerate(batches(train, order, cfg.batch_size)):
            opt.zero_grad(set_to_none=True)
            loss = forward_backward(model, batch)
            opt.step()
            loss_sum, done = loss_sum + loss, done + 1
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if evaluation_due(done, cfg.eval_every) and step + 1 < steps:
                pause = time.perf_counter()
                history.append(midway_row(epoch + (step + 1) / steps, done, wall + pause - start - paused,
                                          *evaluate(model, test, limit=cfg.test_subset)))
                paused += time.perf_counter() - pause
        bar.close()
        seconds = time.perf_counter() - start - paused
        wall += seconds
        test_loss, test_acc = evaluate(model, test, limit=cfg.test_subset)
        row = {"epoch": epoch + 1, "step": done, "train_loss": loss_sum / steps, "test_loss": test_loss,
               "test_acc": test_acc, "epoch_seconds": seconds, "wall_seconds": wall,
               "samples_per_s": n / seconds, "end_of_epoch": True}
        history.append(row)
        log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
            f"test acc {test_acc:.2f} %  {seconds:.1f} s  {row['samples_per_s']:.0f} samples/s")
    rows = results.run_rows(cfg, history, kind="single", threads_used=threads, train_size=n)
    if save:
        path = results.append(rows, "single")
        log(f"wall time {wall:.1f} s; results appended to {path}")
    return rows


def step_ms(model: str, batch_size: int = 32, steps: int = 100, threads: int = 1, seed: int = 0,
            warmup: int = 5) -> float:
    """Milliseconds per training step of the whole model in this process, after ``warmup`` untimed
    steps (the single-machine reference for a step time)."""
    torch.set_num_threads(threads)
    train = datasets.load("mnist", train=True)
    net = models.build(model, seed=seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    chosen = list(batches(train, epoch_order(len(train), seed, 0), batch_size, steps + warmup))
    for i, batch in enumerate(chosen):   # gathered before the clock starts, as the model-parallel timing does
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        forward_backward(net, batch)
        opt.step()
    return 1e3 * (time.perf_counter() - start) / steps
