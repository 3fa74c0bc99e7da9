"""A student's data-parallel code in real workers: the probes notebook 03's checks launch (a tiny model
on fixed random data, so they can be compared with one process on the global batch), and a short
MNIST training that runs the student's ``train_step`` next to labkit's.

Every probe logs what its rank does through ``collective_watch.Watch``, so a deadlock, or an exception
on one rank while the others wait in a collective, still ends within seconds and can be explained.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import datasets
from ..data.batches import batches
from ..data_parallel.config import DPConfig, make_sampler, train_labels
from ..runtime.context import report
from ..runtime.launcher import launch
from ..train import models
from ..train.loop import evaluate
from . import gradient_answers
from .collective_watch import Watch

FEATURES, HIDDEN, CLASSES = 12, 7, 10   # no size equals a world size, so a wrong dimension shows
BATCH, STEPS, LR, MOMENTUM = 32, 5, 0.1, 0.9


class TinyNet(nn.Module):
    """The checks' model: fc1 (12 -> 7), ReLU, fc2 (7 -> 10); the same parameters for a given seed."""

    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.fc1, self.fc2 = nn.Linear(FEATURES, HIDDEN), nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def global_batch(step: int, nodes: int, seed: int = 0):
    """Step ``step``'s global batch of random inputs and labels: ``BATCH`` samples per rank."""
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return torch.randn(BATCH * nodes, FEATURES, generator=g), torch.randint(0, CLASSES, (BATCH * nodes,), generator=g)


def shard(batch, rank: int):
    """Rank ``rank``'s part of a global batch."""
    x, y = batch
    return x[rank * BATCH:(rank + 1) * BATCH], y[rank * BATCH:(rank + 1) * BATCH]


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The checks' optimizer: SGD with momentum, so a wrong gradient also shows in later steps."""
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def snapshot(tensors) -> dict:
    """{name: a copy} of named tensors (None stays None)."""
    return {n: None if t is None else t.detach().clone() for n, t in tensors}


def one_process(nodes: int, steps: int = STEPS, seed: int = 0) -> dict:
    """What one process computes on the global batch: per step its gradient and each rank's loss on
    its shard (before the step), and the parameters after ``steps`` steps."""
    model = TinyNet(seed)
    opt = optimizer(model)
    out = {"grads": [], "losses": []}
    for step in range(steps):
        batch = global_batch(step, nodes, seed)
        with torch.no_grad():
            out["losses"].append([F.cross_entropy(model(x), y).item() for x, y in (shard(batch, r) for r in range(nodes))])
        opt.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        out["grads"].append(snapshot((n, p.grad) for n, p in model.named_parameters()))
        opt.step()
    out["params"] = snapshot(model.named_parameters())
    return out


@contextlib.contextmanager
def quiet():
    """No warnings and no stderr from the student's code (a passing check must print nothing to stderr)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def note_raised(watch: Watch, exc: Exception, where: str) -> None:
    """Log the student's exception in one line: where, type, first line of its message, last gradient touched."""
    message = (str(exc).strip().splitlines() or [""])[0].replace("\t", " ")[:300]
    last = [w for w in watch.path.read_text().splitlines() if w.startswith("enter")] if watch.path.exists() else []
    param = last[-1].split("\t")[2] if last else "-"
    watch.note("raised", where, type(exc).__name__, message, param)


def usable(model: nn.Module) -> bool:
    """Every parameter has a gradient of its own shape (else the optimizer cannot step)."""
    return all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def probe_averages(fns: list, folder: str, grace: float, steps: int = STEPS, seed: int = 0) -> list[dict]:
    """Worker (every rank): ``probe_average`` of each function in turn, each logging into ``folder/<k>``."""
    return [probe_average(fn, f"{folder}/{k}", grace, steps, seed) for k, fn in enumerate(fns)]


def probe_average(fn, folder: str, grace: float, steps: int = STEPS, seed: int = 0) -> dict:
    """``steps`` SGD steps of ``TinyNet`` on this rank's shard, averaging with ``fn(model)``. Returns
    per step the gradients before and after ``fn``, and the final parameters (None if it stopped)."""
    rank, nodes = dist.get_rank(), dist.get_world_size()
    watch = Watch(folder, rank, nodes, grace)
    model = TinyNet(seed)
    opt = optimizer(model)
    out = {"rank": rank, "local": [], "averaged": [], "params": None}
    with quiet(), watch.collectives():
        for step in range(steps):
            opt.zero_grad()
            x, y = shard(global_batch(step, nodes, seed), rank)
            F.cross_entropy(model(x), y).backward()
            out["local"].append(snapshot((n, p.grad) for n, p in model.named_parameters()))
            watch.name_gradients(model)
            try:
                fn(model)
            except Exception as exc:  # noqa: BLE001 - the student's mistake, reported by the check
                note_raised(watch, exc, "average")
                watch.stop()
                return out
            out["averaged"].append(snapshot((n, p.grad) for n, p in model.named_parameters()))
            if not usable(model) or not watch.reached(f"step {step}"):
                watch.stop()
                return out
            opt.step()
        out["params"] = snapshot(model.named_parameters())
        watch.reached("end")
    return out


class Recorder:
    """What a training step does, in order: forward, backward (and "stale" if gradients from before were
    still there when backward began), average, zero_grad, step; ``average`` is the traced function."""

    def __init__(self, model: nn.Module, opt, average, watch: Watch | None = None):
        self.events, self.in_average = None, False
        params = list(model.parameters())

        def on_backward(grad):
            self.add("backward")
            if any(p.grad is not None and bool(p.grad.any()) for p in params):
                self.add("stale")

        def on_forward(module, inputs, output):
            self.add("forward")
            if self.events is not None and output.requires_grad:
                output.register_hook(on_backward)

        model.register_forward_hook(on_forward)
        for owner, name in ((opt, "step"), (opt, "zero_grad"), (model, "zero_grad")):
            setattr(owner, name, self.traced(getattr(owner, name), name))
        traced = self.traced(average, "average")

        def named_average(module):
            if watch is not None:
                watch.name_gradients(model)   # so a message can name the gradient a collective was given
            return traced(module)
        self.average = named_average

    def add(self, event: str) -> None:
        if self.events is not None:
            self.events.append(event)

    def traced(self, fn, event: str):
        def call(*args, **kwargs):
            self.add(event)
            try:
                return fn(*args, **kwargs)
            except Exception:
                self.in_average = self.in_average or event == "average"
                raise
        return call


def probe_steps(step_fns: list, average, folder: str, grace: float, steps: int = STEPS, seed: int = 0) -> list[dict]:
    """Worker (every rank): ``probe_step`` of each step function in turn, each logging into ``folder/<k>``."""
    return [probe_step(fn, average, f"{folder}/{k}", grace, steps, seed) for k, fn in enumerate(step_fns)]


def probe_step(step_fn, average, folder: str, grace: float, steps: int = STEPS, seed: int = 0) -> dict:
    """``steps`` calls of the student's ``step_fn(model, optimizer, batch, average)``
    on this rank's shard. Returns per step the events in order, the loss returned and the loss of the
    batch, and the final parameters."""
    rank, nodes = dist.get_rank(), dist.get_world_size()
    watch = Watch(folder, rank, nodes, grace)
    model = TinyNet(seed)
    opt = optimizer(model)
    recorder = Recorder(model, opt, average, watch)
    out = {"rank": rank, "steps": [], "params": None}
    with quiet(), watch.collectives():
        for step in range(steps):
            x, y = shard(global_batch(step, nodes, seed), rank)
            with torch.no_grad():
                expected = F.cross_entropy(model(x), y).item()
            recorder.events = events = []
            try:
                loss = step_fn(model, opt, (x, y), recorder.average)
            except Exception as exc:  # noqa: BLE001 - the student's mistake, reported by the check
                note_raised(watch, exc, "average" if recorder.in_average else "train_step")
                watch.stop()
                return out
            recorder.events = None
            number = isinstance(loss, (int, float)) and not isinstance(loss, bool)
            out["steps"].append({"events": events, "loss": float(loss) if number else None,
                                 "loss_type": type(loss).__name__, "expected": expected})
            if not watch.reached(f"step {step}"):
                watch.stop()
                return out
        out["params"] = snapshot(model.named_parameters())
        watch.reached("end")
    return out


def _train_two(step_fn, average, steps: int, batch_size: int, seed: int, model_name: str, test_subset: int) -> dict:
    """Worker: the student's step and labkit's, batch by batch on the same data and the same start."""
    rank = dist.get_rank()
    train = datasets.load("mnist")
    train.normalized
    cfg = DPConfig(nodes=dist.get_world_size(), seed=seed, batch_size=batch_size, model=model_name)
    sampler = make_sampler(cfg, rank, train_labels(cfg))
    sampler.set_epoch(0)
    runs = {"yours": (step_fn, average), "labkit's": (gradient_answers.train_step,
                                                     gradient_answers.allreduce_average_gradients)}
    built = {who: models.build(model_name, seed=seed) for who in runs}
    opts = {who: torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum) for who, m in built.items()}
    losses, seconds = {who: [] for who in runs}, dict.fromkeys(runs, 0.0)
    for s, batch in enumerate(batches(train, sampler.indices(), batch_size, steps)):
        for who, (fn, avg) in sorted(runs.items(), reverse=bool(s % 2)):   # who goes first alternates
            start = time.perf_counter()
            losses[who].append(float(fn(built[who], opts[who], batch, avg)))
            seconds[who] += (time.perf_counter() - start) if s or steps == 1 else 0.0   # step 1 warms up
        report(step=s + 1, total=steps, loss=losses["yours"][-1])
    if rank:
        return {}
    test = datasets.load("mnist", train=False)
    difference = max((a - b).abs().max().item() for a, b in zip(built["yours"].parameters(),
                                                                 built["labkit's"].parameters()))
    return {"losses": losses, "seconds": seconds, "difference": difference,
            "test_acc": {who: evaluate(m, test, limit=test_subset)[1] for who, m in built.items()}}


def compare_training(step_fn, average, nodes: int = 2, steps: int = 100, batch_size: int = 32, seed: int = 0,
                     model: str = "lenet5", test_subset: int = 2000, name: str = "yours", timeout: float = 600):
    """Train ``model`` on MNIST for ``steps`` steps on ``nodes`` workers twice from the same start, with
    ``step_fn`` and ``average`` (shown as ``name``) and with labkit's reference step: returns (summary
    table, rank 0's loss per step of each, largest parameter difference between the two models at the end)."""
    out = launch(_train_two, nodes, step_fn, average, steps, batch_size, seed, model, test_subset,
                 timeout=timeout)[0]
    shown = {"yours": name, "labkit's": "labkit's reference"}
    curves = pd.DataFrame({"step": range(1, steps + 1), **{shown[who]: v for who, v in out["losses"].items()}})
    table = pd.DataFrame([{"train_step": shown[who], "steps": steps, "last_10_loss": sum(v[-10:]) / len(v[-10:]),
                           "test_acc": out["test_acc"][who], "ms_per_step": 1e3 * out["seconds"][who] / max(1, steps - 1)}
                          for who, v in out["losses"].items()])
    return table, curves, out["difference"]


def labelled(table: pd.DataFrame, names: dict) -> pd.DataFrame:
    """A copy of a speed-up table for figures, whose sync modes say whose code ran: ``names`` maps a
    sync mode to its label (e.g. "allreduce" -> "all-reduce (yours)", from ``label(result, ...)``)."""
    shown = table.copy()
    for sync, name in names.items():
        rows = shown["sync"] == sync
        shown.loc[rows, "setup"] = shown.loc[rows, "setup"].str.replace(sync, name, regex=False)
        shown.loc[rows, "sync"] = name
    return shown
