"""What the three processes of a model-parallel launch do: the stage workers serve RPC; the master
builds a ``Driver`` and runs one task after another with it (train, check a few steps, time steps).

A task is a small frozen dataclass holding its config; ``task(driver)`` runs it on the master.
"""
from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass

from ..data import datasets
from ..data.batches import batches, epoch_order, step_count
from ..errors import LabError
from ..runtime.context import rank, report
from ..train.loop import evaluate, evaluation_due, midway_row
from .config import ROLES, MPConfig
from .driver import make_driver
from .parts import assemble, merge_parts
from .stage import TIMED_OUT, no_answer

WARMUP = 5          # untimed steps before ``Time`` measures


@dataclass(frozen=True)
class Train:
    """Train ``cfg.epochs`` epochs; per-epoch history (rank 0 evaluates) and the recorded events."""

    cfg: MPConfig
    progress: bool = True

    def __call__(self, driver) -> dict:
        cfg = self.cfg
        train, test = datasets.load(cfg.dataset, train=True), datasets.load(cfg.dataset, train=False)
        n = min(cfg.train_subset, len(train)) if cfg.train_subset else len(train)
        steps = step_count(n, cfg.batch_size)
        history, events, wall, done = [], [], 0.0, 0
        for epoch in range(cfg.epochs):
            order = epoch_order(n, cfg.seed, epoch)
            start, paused, loss_sum = time.perf_counter(), 0.0, 0.0
            for step, (x, y) in enumerate(batches(train, order, cfg.batch_size)):
                loss = driver.step(x, y)
                loss_sum, done = loss_sum + loss, done + 1
                if self.progress and (step % 20 == 0 or step == steps - 1):
                    report(epoch=epoch + 1, step=step + 1, total=steps, loss=loss)
                if evaluation_due(done, cfg.eval_every) and step + 1 < steps:
                    pause = time.perf_counter()
                    history.append(midway_row(epoch + (step + 1) / steps, done, wall + pause - start - paused,
                                              *self.evaluate(driver, test)))
                    paused += time.perf_counter() - pause
            seconds = time.perf_counter() - start - paused
            wall += seconds
            events.append(driver.take_events())
            test_loss, test_acc = self.evaluate(driver, test)
            if self.progress:
                report(epoch=epoch + 1, step=steps, total=steps, acc=test_acc)
            history.append({"epoch": epoch + 1, "step": done, "train_loss": loss_sum / steps, "test_loss": test_loss,
                            "test_acc": test_acc, "epoch_seconds": seconds, "wall_seconds": wall, "samples_per_s": n / seconds,
                            "step_ms": 1e3 * seconds / steps, "steps": steps, "train_size": n, "end_of_epoch": True})
        return {"history": history, "events": events}

    def evaluate(self, driver, test) -> tuple[float, float]:
        """The whole model, put together from the parts' current parameters, on the test set."""
        cfg = self.cfg
        model = assemble(cfg.model, cfg.seed, cfg.at, cfg.horizontal, driver.states())
        return evaluate(model, test, limit=cfg.test_subset)


def first_batches(cfg: MPConfig, count: int) -> list:
    """The first ``count`` batches of epoch 0 (starting over if the epoch is shorter): what checks and
    timings step through, on the master and in the single-process reference alike."""
    train = datasets.load(cfg.dataset, train=True)
    epoch = batches(train, epoch_order(len(train), cfg.seed, 0), cfg.batch_size)
    return list(itertools.islice(itertools.cycle(epoch), count))


@dataclass(frozen=True)
class Check:
    """``steps`` steps on the first batches of epoch 0: losses, first-step gradients, final parameters."""

    cfg: MPConfig
    steps: int = 1

    def __call__(self, driver) -> dict:
        cfg = self.cfg
        losses, grads = [], {}
        for step, (x, y) in enumerate(first_batches(cfg, self.steps)):
            keep = (lambda ctx: grads.update(driver.gradients(ctx))) if step == 0 else None
            losses.append(driver.step(x, y, context=keep))
        return {"losses": losses,
                "grads": merge_parts(cfg.model, cfg.at, cfg.horizontal, grads),
                "state": merge_parts(cfg.model, cfg.at, cfg.horizontal, driver.states())}


@dataclass(frozen=True)
class Time:
    """``steps`` timed training steps after ``WARMUP`` untimed ones (the first steps warm caches up)."""

    cfg: MPConfig
    steps: int = 30

    def __call__(self, driver) -> dict:
        chosen = first_batches(self.cfg, self.steps + WARMUP)
        for x, y in chosen[:WARMUP]:
            driver.step(x, y)
        driver.take_events()
        start = time.perf_counter()
        for x, y in chosen[WARMUP:]:
            driver.step(x, y)
        return {"seconds": time.perf_counter() - start, "events": driver.take_events()}


def explain(exc: Exception, roles: dict[int, str] = ROLES) -> str:
    """A stage's error as it arrives at the master, reduced to the line that names the stage."""
    text = str(exc).replace("Got the following error when running the callback: ", "")   # torch's wrapper
    if TIMED_OUT in text:   # a message no labkit call named, e.g. one of distributed autograd's backward
        return no_answer("a stage")
    named = re.search(r"^(?:RuntimeError: )?((?:stage|half) \d on \w+ failed: .*)$", text, re.MULTILINE)
    if named:
        return named.group(1).rstrip(". ")
    node = re.search(r"worker(\d)|Node (\d)", text)
    if node:
        k = int(node.group(1) or node.group(2))
        first = next((line for line in text.splitlines() if line.strip()), "")
        return f"{roles.get(k, f'rank {k}')} failed: {first}"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def run_tasks(tasks: list, driver=None):
    """The function every rank runs: the master runs the tasks, the stage workers serve RPC until it is done.
    ``driver(cfg, at)``, if given, builds the master's driver instead of labkit's (e.g. a student's split)."""
    import torch.distributed as dist
    if rank() != 0:
        dist.barrier()   # serve RPC until the master is done (a crash meanwhile is this rank's failure)
        return None
    out = [_on_master(task, driver or make_driver) for task in tasks]
    dist.barrier()
    return out


def _on_master(task, build=make_driver):
    driver = None
    try:
        driver = build(task.cfg, task.cfg.at)
        return task(driver)
    except RuntimeError as exc:
        raise LabError(f"{explain(exc, task.cfg.roles)}. The master stopped the run.") from exc   # the stage's traceback stays in the chain
    finally:
        if driver is not None:
            driver.close()
