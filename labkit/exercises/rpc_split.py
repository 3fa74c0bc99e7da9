"""Notebook 05's exercise, what labkit gives around it: ``Stage`` (one half of a model, created on a worker
with ``rpc.remote``), ``RpcSplit`` (the student's three functions), and training or comparing with them.

``run`` and ``compare_to_local`` put a student's split in place of labkit's model-parallel driver, so the
notebook's measurements (loss, accuracy, timeline, bytes per step) run the student's own code; ``within``
runs one of the student's functions under a time limit, for the check.
"""
from __future__ import annotations

import functools
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch.distributed import rpc
from torch.distributed.optim import DistributedOptimizer

from ..errors import LabError
from ..model_parallel import stage as mp_stage
from ..model_parallel import train as mp_train
from ..model_parallel.config import MPConfig
from ..train import models


class Stage(mp_stage.Stage):
    """Part ``part`` (1 or 2) of the seeded model ``model``, cut at its natural split, living on the worker
    that creates it: ``rpc.remote("worker1", Stage, args=("lenet5", 1))``. ``forward(x)`` takes a tensor
    or an RRef to the previous stage's output (fetched straight from the worker holding it)."""

    def __init__(self, model: str, part: int, seed: int = 0):
        if part not in (1, 2):
            raise LabError(f"a model is split in two: part must be 1 or 2, got {part!r}.")
        super().__init__(f"stage {part}", model, seed, models.build(model).split, False, f"stage{part}")
        self.part = part
        self.calls: list[tuple[float, bool]] = []   # (when, whether the input was an RRef), one per forward

    def forward(self, x):
        """This stage's output for ``x`` (a tensor, or an RRef to one)."""
        self.calls.append((time.perf_counter(), hasattr(x, "to_here")))
        return super().forward(len(self.calls) - 1, x)

    def parameter_rrefs(self) -> list:
        """An RRef to each of this stage's parameters, for a ``DistributedOptimizer``."""
        return super().parameter_rrefs()


def distributed_optimizer(stages, lr: float = 0.01, momentum: float = 0.9) -> DistributedOptimizer:
    """SGD over both stages' parameters, each updated on the worker that holds it."""
    params = [p for stage in stages for p in stage.rpc_sync().parameter_rrefs()]
    return DistributedOptimizer(torch.optim.SGD, params, lr=lr, momentum=momentum)


class RecordingOptimizer:
    """Wraps the ``DistributedOptimizer`` a student's ``train_step`` receives: before each update it calls
    ``on_step(context_id)`` (to read the step's gradients) and times the update."""

    def __init__(self, optimizer: DistributedOptimizer, on_step=None):
        self.optimizer, self.on_step = optimizer, on_step
        self.steps, self.last, self.error = 0, (0.0, 0.0), ""

    def step(self, context_id: int) -> None:
        """Update every stage's parameters with the gradients of the distributed autograd context ``context_id``."""
        try:
            if self.on_step is not None:
                self.on_step(context_id)
            start = time.perf_counter()
            self.optimizer.step(context_id)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"   # what the check reports: the step itself failed
            raise
        self.steps, self.last = self.steps + 1, (start, time.perf_counter())


@dataclass(frozen=True)
class RpcSplit:
    """A model split over RPC: ``make_stages(model, seed)`` -> (RRef to stage 1 on worker1, RRef to stage 2 on
    worker2); ``forward(stages, x)`` -> the output; ``train_step(stages, optimizer, x, y)`` -> the loss."""

    make_stages: Callable
    forward: Callable
    train_step: Callable

    def run(self, cfg: MPConfig, progress: bool = True, save: bool = True, log=print) -> mp_train.MPRun:
        """Train with this split (see ``labkit.model_parallel.run``)."""
        return run(self, cfg, progress=progress, save=save, log=log)

    def compare_to_local(self, cfg: MPConfig, steps: int = 2) -> pd.DataFrame:
        """Largest differences from the whole model in one process (see ``labkit.model_parallel.compare_to_local``)."""
        return compare_to_local(self, cfg, steps)


class SplitDriver:
    """The master's side of a model-parallel run with a student's split, in place of labkit's ``Driver``:
    one ``train_step`` per batch, timed, and the stages' events, parameters and gradients on request."""

    def __init__(self, split: RpcSplit, cfg: MPConfig, at: int):
        self.split, self.cfg = split, cfg
        stages = split.make_stages(cfg.model, cfg.seed)
        self.stages = {"stage1": stages[0], "stage2": stages[1]}
        self.optimizer = RecordingOptimizer(distributed_optimizer(stages, cfg.lr, cfg.momentum))
        self.seq, self.master_events = 0, []

    def step(self, x: torch.Tensor, y: torch.Tensor, context=None) -> float:
        """One ``train_step``; ``context`` receives the distributed autograd context id (for checks)."""
        began, self.optimizer.on_step = time.perf_counter(), context
        loss = self.split.train_step(tuple(self.stages.values()), self.optimizer, x, y)
        end = time.perf_counter()
        self.master_events += [(self.seq, mp_stage.OPT, *self.optimizer.last, 0, 0),
                               (self.seq, mp_stage.STEP, began, end, 0, 0)]
        self.seq += 1
        return float(loss)

    def take_events(self) -> dict[str, torch.Tensor]:
        """The recorded events of the master and both stages, forgotten once taken."""
        events = {"master": torch.tensor(self.master_events, dtype=torch.float64).reshape(-1, 6)}
        self.master_events = []
        for k, stage in enumerate(self.stages.values(), start=1):
            events[f"worker{k}"] = stage.rpc_sync().take_events()
        return events

    def states(self) -> dict[str, dict]:
        """Each stage's parameters and buffers, by the stage's own names."""
        return {part: stage.rpc_sync().state() for part, stage in self.stages.items()}

    def gradients(self, context_id: int) -> dict[str, dict]:
        """Each stage's gradients in a distributed autograd context."""
        return {part: stage.rpc_sync().gradients(context_id) for part, stage in self.stages.items()}

    def close(self) -> None:
        """Drop every RRef before RPC shuts down."""
        self.stages.clear()
        self.optimizer = None


def _usable(cfg: MPConfig) -> MPConfig:
    if cfg.horizontal or cfg.micro_batches != 1 or cfg.at != models.build(cfg.model).split:
        raise LabError("a student's split runs the model cut at its natural split, one micro-batch per step: "
                       "use MPConfig(split=None, micro_batches=1, horizontal=False), or labkit's model_parallel.run.")
    return cfg


def run(split: RpcSplit, cfg: MPConfig, progress: bool = True, save: bool = True, log=print) -> mp_train.MPRun:
    """Train with ``split`` over three processes, as ``labkit.model_parallel.run`` does with labkit's own."""
    return mp_train.run(_usable(cfg), progress=progress, save=save, log=log, driver=functools.partial(SplitDriver, split))


def compare_to_local(split: RpcSplit, cfg: MPConfig, steps: int = 2) -> pd.DataFrame:
    """``labkit.model_parallel.compare_to_local`` with ``split``: per parameter, the largest difference of
    the first step's gradient and of the parameters after ``steps`` steps from the whole model's."""
    return mp_train.compare_to_local(_usable(cfg), steps, driver=functools.partial(SplitDriver, split))


def as_split(split) -> RpcSplit:
    """``split`` as an ``RpcSplit``: one already, or the three functions (make_stages, forward, train_step)."""
    if isinstance(split, RpcSplit):
        return split
    if isinstance(split, (tuple, list)) and len(split) == 3 and all(callable(f) for f in split):
        return RpcSplit(*split)
    raise LabError(f"expected RpcSplit(make_stages, forward, train_step) or those three functions, "
                   f"got {type(split).__name__}.")


class StudentError(Exception):
    """A student's function raised (or did not return in time); ``args`` = (function name, one-line reason, full text)."""


def within(limit: float, name: str, fn, *args):
    """``fn(*args)`` on a helper thread; StudentError naming ``name`` if it raises or takes over ``limit`` s."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the student's exception is the diagnosis
            box["error"] = exc
    thread = threading.Thread(target=target, name=f"student-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise StudentError(name, f"did not return within {limit:.0f} s (waiting for a stage that never answers?)", "")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, NotImplementedError):
            raise StudentError(name, "NotImplementedError", "")
        raise StudentError(name, one_line(exc), str(exc))
    return box.get("value")


def one_line(exc: BaseException) -> str:
    """An exception in one line; one raised on another worker says where ("on worker2: RuntimeError(...)")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    where = re.match(r"On WorkerInfo\(id=\d+, name=(\w+)\):", lines[0]) if lines else None
    if where and len(lines) > 1:
        return f"{type(exc).__name__} on {where.group(1)}: {lines[1][:300]}"
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
