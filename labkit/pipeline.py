"""The pieces of a model-parallel step: remote stages, and the master's forward through their RRefs.

A ``Stage`` is one part of the model living on a stage worker (created there with ``rpc.remote``).
The master drives a step: ``VerticalPipeline`` sends each micro-batch to stage 1 with
``rpc.remote`` and hands the resulting RRef to stage 2, so activations go straight from worker1
to worker2 and stage 1 can start micro-batch i+1 while stage 2 works on micro-batch i.
``HorizontalSplit`` divides one Linear layer's output neurons between the two workers instead.
Stages record when they compute (forward and backward) so the master can draw a timeline.
"""
from __future__ import annotations

import os
import threading
import time
import warnings

import torch
import torch.distributed.autograd as dist_autograd
import torch.nn.functional as F
from torch import nn
from torch.distributed import rpc
from torch.distributed.optim import DistributedOptimizer

from . import models
from .errors import LabError

FWD, BWD, OPT, STEP = 0, 1, 2, 3   # event phases; on the master BWD/OPT/STEP are whole calls it waits on
PHASES = {FWD: "fwd", BWD: "bwd", OPT: "opt", STEP: "step"}
TURN_TIMEOUT = 300.0               # seconds a backward micro-batch may wait for its turn on a stage


# ---------------------------------------------------------------- building the parts

def split_linear(layer: nn.Linear, parts: int = 2) -> list[nn.Linear]:
    """Divide a Linear layer's output neurons into ``parts`` layers (copies); concatenating
    their outputs along the last dimension gives the original layer's output."""
    if not isinstance(layer, nn.Linear):
        raise LabError(f"a horizontal split divides a Linear layer, got {type(layer).__name__}.")
    if not 1 <= parts <= layer.out_features:
        raise LabError(f"cannot divide {layer.out_features} output neurons into {parts} parts.")
    pieces = []
    for rows in torch.arange(layer.out_features).tensor_split(parts):
        piece = nn.Linear(layer.in_features, len(rows), bias=layer.bias is not None)
        with torch.no_grad():
            piece.weight.copy_(layer.weight[rows])
            if layer.bias is not None:
                piece.bias.copy_(layer.bias[rows])
        pieces.append(piece)
    return pieces


def resolve_split(model: models.StagedModel, split: int | None, horizontal: bool) -> int:
    """The layer index a config's ``split`` means for this model; LabError if it cannot be used."""
    at = model.split if split is None else split
    if horizontal:
        if not 0 <= at < len(model) or not isinstance(model[at], nn.Linear):
            linear = [i for i, layer in enumerate(model) if isinstance(layer, nn.Linear)]
            raise LabError(f"horizontal=True divides a Linear layer's neurons, but layer {at} of this model is "
                           f"{type(model[at]).__name__ if 0 <= at < len(model) else 'missing'}; "
                           f"use split= one of {linear}.")
        if model[at].out_features < 2:
            raise LabError(f"layer {at} has a single output neuron; it cannot be divided between two workers.")
    elif not 0 < at < len(model):
        raise LabError(f"split point {at} is invalid for a model of {len(model)} layers; "
                       f"use 1..{len(model) - 1} (stage 2 starts at that layer).")
    return at


def build_part(model_name: str, seed: int, at: int, horizontal: bool, part: str) -> nn.Module:
    """One part of the seeded model: "stage1"/"stage2" (vertical), "head"/"half1"/"half2"/"tail" (horizontal).
    Every process builds the same seeded model, so the parts start with the local model's weights."""
    model = models.build(model_name, seed=seed)
    layers = list(model)
    if not horizontal:
        first, second = models.stages(model, at)
        return {"stage1": first, "stage2": second}[part]
    halves = split_linear(layers[at], 2)
    return {"head": nn.Sequential(*layers[:at]), "half1": halves[0], "half2": halves[1],
            "tail": nn.Sequential(*layers[at + 1:])}[part]


def part_names(model_name: str, at: int, horizontal: bool, part: str) -> dict[str, str]:
    """Map a part's state names to the whole model's (e.g. stage2 "0.weight" -> "9.weight")."""
    names = list(models.build(model_name).state_dict())   # parameters and buffers (e.g. BatchNorm's)
    if horizontal and part in ("half1", "half2"):
        return {"weight": f"{at}.weight", "bias": f"{at}.bias"}
    offset = {"stage1": 0, "head": 0, "stage2": at, "tail": at + 1}[part]
    mapping = {}
    for name in names:
        index, rest = name.split(".", 1)
        local = int(index) - offset
        if local >= 0 and (part not in ("stage1", "head") or int(index) < at):
            mapping[f"{local}.{rest}"] = name
    return mapping


def merge_parts(model_name: str, at: int, horizontal: bool, per_part: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Tensors given per part under the parts' own names (parameters, gradients) -> by the whole
    model's names; the two halves of a horizontally split layer are joined again."""
    whole: dict[str, list] = {}
    for part, tensors in per_part.items():
        for local, name in part_names(model_name, at, horizontal, part).items():
            if local in tensors:
                whole.setdefault(name, []).append(tensors[local])
    return {name: torch.cat(ts) if len(ts) > 1 else ts[0] for name, ts in whole.items()}


def assemble(model_name: str, seed: int, at: int, horizontal: bool, states: dict[str, dict]) -> models.StagedModel:
    """A local copy of the whole model from the parts' parameters (``states[part]`` by part names)."""
    model = models.build(model_name, seed=seed)
    model.load_state_dict(merge_parts(model_name, at, horizontal, states))
    return model


# ---------------------------------------------------------------- a stage on a worker

def _quiet_optimizer_warning() -> None:
    """DistributedOptimizer makes torch print a DeprecationWarning about TorchScript on every stage
    worker, forced to "always" so filters cannot stop it; drop that one message, show all others."""
    show = warnings.showwarning
    if getattr(show, "labkit_quiet", False):
        return

    def filtered(message, category, *args, **kwargs):
        if "support for functional optimizers is deprecated" not in str(message):
            show(message, category, *args, **kwargs)
    filtered.labkit_quiet = True
    warnings.showwarning = filtered


class Stage(nn.Module):
    """One part of the model on a stage worker. It computes one micro-batch at a time, forward or
    backward (as the PyTorch RPC pipeline example does with a lock), and records when."""

    def __init__(self, name: str, model_name: str, seed: int, at: int, horizontal: bool, part: str,
                 fail: str = ""):
        super().__init__()
        _quiet_optimizer_warning()
        self.name, self.fail = name, fail
        self.net = build_part(model_name, seed, at, horizontal, part)
        self._busy = threading.Lock()     # held while this stage computes
        self._events: list[tuple] = []    # (seq, phase, start, end, in_bytes, out_bytes)
        self._lock = threading.Lock()     # guards _events

    def forward(self, seq: int, x):
        """Compute this stage for micro-batch ``seq``; ``x`` is a tensor or an RRef to the previous
        stage's output (fetched here, straight from the worker that holds it)."""
        x = x.to_here() if hasattr(x, "to_here") else x
        try:
            with self._busy:
                return self._compute(seq, x)
        except Exception as exc:
            raise RuntimeError(f"{self.name} on {rpc.get_worker_info().name} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    def _compute(self, seq: int, x: torch.Tensor) -> torch.Tensor:
        if self.fail == "crash":
            os._exit(13)   # as if the process was killed: no exception, no goodbye
        if self.fail:
            raise RuntimeError(f"injected failure (fail_stage) at micro-batch {seq}")
        start = time.perf_counter()
        out, first_node = x, None
        for layer in self.net if isinstance(self.net, nn.Sequential) else [self.net]:
            out = layer(out)
            if first_node is None and out.grad_fn is not None:
                first_node = out.grad_fn
        self._record(seq, FWD, start, time.perf_counter(), x.nelement() * x.element_size(),
                     out.nelement() * out.element_size())
        if out.grad_fn is not None:
            self._time_backward(seq, out.grad_fn, first_node)
        return out

    def _time_backward(self, seq: int, last_node, first_node) -> None:
        """Hooks on the micro-batch's graph: its backward starts at the output's node and ends after
        the first layer's node. Distributed autograd runs micro-batches on several threads at once;
        holding ``_busy`` in between makes them take turns, so each finishes (and its gradient
        travels on to the previous stage) as early as possible."""
        state = {}

        def begin(grads):
            state["held"] = self._busy.acquire(timeout=TURN_TIMEOUT)
            state["start"] = time.perf_counter()

        def finish(grad_inputs, grad_outputs):
            self._record(seq, BWD, state.get("start", time.perf_counter()), time.perf_counter(), 0, 0)
            if state.pop("held", False):
                self._busy.release()
        last_node.register_prehook(begin)
        first_node.register_hook(finish)

    def _record(self, *event) -> None:
        with self._lock:
            self._events.append(event)

    def take_events(self) -> torch.Tensor:
        """Return and forget the recorded events as a float64 tensor (N, 6)."""
        with self._lock:
            events, self._events = self._events, []
        return torch.tensor(events, dtype=torch.float64).reshape(-1, 6)

    def parameter_rrefs(self) -> list:
        return [rpc.RRef(p) for p in self.net.parameters()]

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def gradients(self, context_id: int) -> dict[str, torch.Tensor]:
        """This stage's gradients in a distributed autograd context, by parameter name."""
        grads = dist_autograd.get_gradients(context_id)
        return {n: grads[p].clone() for n, p in self.net.named_parameters() if p in grads}


def _call(rref: rpc.RRef, method: str, *args):
    """Run ``method`` on the object an RRef points to (on its owner): the RPC tutorials' helper."""
    return getattr(rref.local_value(), method)(*args)


def call(rref: rpc.RRef, method: str, *args):
    return rpc.rpc_sync(rref.owner(), _call, args=(rref, method, *args))


def call_async(rref: rpc.RRef, method: str, *args) -> torch.futures.Future:
    return rpc.rpc_async(rref.owner(), _call, args=(rref, method, *args))


def call_remote(rref: rpc.RRef, method: str, *args) -> rpc.RRef:
    """Like ``call`` but the result stays on the stage's worker; returns an RRef to it."""
    return rpc.remote(rref.owner(), _call, args=(rref, method, *args))


# ---------------------------------------------------------------- the master's side of a step

class _Driver:
    """Shared by both splits: stages on worker1/worker2, the optimizer, numbering and timing."""

    parts: tuple[str, str]
    local_parts: tuple[str, ...] = ()

    def __init__(self, cfg, at: int):
        self.cfg, self.at = cfg, at
        self.stages = {}
        for k, part in enumerate(self.parts, start=1):
            name = f"stage {k}" if not cfg.horizontal else f"half {k}"
            self.stages[part] = rpc.remote(f"worker{k}", Stage, args=(
                name, cfg.model, cfg.seed, at, cfg.horizontal, part, cfg.fail_mode if cfg.fail_stage == k else ""))
        self.local = {p: build_part(cfg.model, cfg.seed, at, cfg.horizontal, p) for p in self.local_parts}
        params = [r for stage in self.stages.values() for r in call(stage, "parameter_rrefs")]
        params += [rpc.RRef(p) for module in self.local.values() for p in module.parameters()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.optimizer = DistributedOptimizer(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum)
        self.seq = 0
        self.master_events: list[tuple] = []   # (seq, phase, start, end, 0, 0); seq = step's first for OPT/STEP

    def step(self, x: torch.Tensor, y: torch.Tensor, context=None) -> float:
        """One training step on a batch: forward in micro-batches, backward, one optimizer step.
        Returns the batch's mean loss. ``context`` receives the autograd context id (for checks)."""
        first_seq, began = self.seq, time.perf_counter()
        with dist_autograd.context() as ctx:
            outputs = self.forward(x.tensor_split(self.cfg.micro_batches), first_seq)
            targets = [t for t in y.tensor_split(self.cfg.micro_batches) if len(t)]   # as _number skips empties
            losses = [F.cross_entropy(out, t, reduction="sum") for out, t in zip(outputs, targets)]
            loss = torch.stack(losses).sum() / len(y)   # the batch mean, whatever the micro-batch sizes
            backward = time.perf_counter()
            dist_autograd.backward(ctx, [loss])
            if context is not None:
                context(ctx)
            start = time.perf_counter()
            self.optimizer.step(ctx)
            end = time.perf_counter()
        self.master_events += [(first_seq, BWD, backward, start, 0, 0), (first_seq, OPT, start, end, 0, 0),
                               (first_seq, STEP, began, time.perf_counter(), 0, 0)]
        return loss.item()

    def _number(self, micro: list[torch.Tensor], first_seq: int) -> list[tuple[int, torch.Tensor]]:
        chunks = [(first_seq + i, m) for i, m in enumerate(c for c in micro if len(c))]
        self.seq = first_seq + len(chunks)
        return chunks

    def take_events(self) -> dict[str, torch.Tensor]:
        events = {"master": torch.tensor(self.master_events, dtype=torch.float64).reshape(-1, 6)}
        self.master_events = []
        for k, stage in enumerate(self.stages.values(), start=1):
            events[f"worker{k}"] = call(stage, "take_events")
        return events

    def states(self) -> dict[str, dict]:
        states = {part: call(stage, "state") for part, stage in self.stages.items()}
        states.update({p: {k: v.detach().clone() for k, v in m.state_dict().items()} for p, m in self.local.items()})
        return states

    def gradients(self, context_id: int) -> dict[str, dict]:
        grads = {part: call(stage, "gradients", context_id) for part, stage in self.stages.items()}
        local = dist_autograd.get_gradients(context_id)
        for part, module in self.local.items():
            grads[part] = {n: local[p].clone() for n, p in module.named_parameters() if p in local}
        return grads

    def close(self) -> None:
        """Drop every RRef before RPC shuts down, so the shutdown has nothing to wait for."""
        self.stages.clear()
        self.optimizer = None


class VerticalPipeline(_Driver):
    """Layers [0, at) on worker1, [at, end) on worker2; micro-batches flow master -> 1 -> 2 -> master."""

    parts = ("stage1", "stage2")

    def forward(self, micro: list[torch.Tensor], first_seq: int) -> list[torch.Tensor]:
        futures = []
        for seq, x in self._number(micro, first_seq):
            activation = call_remote(self.stages["stage1"], "forward", seq, x)   # stays on worker1
            futures.append(call_async(self.stages["stage2"], "forward", seq, activation))
        return torch.futures.wait_all(futures)


class HorizontalSplit(_Driver):
    """Layer ``at`` (a Linear) divided by output neurons between worker1 and worker2; the layers
    before and after it run on the master, which sends each half the same input and joins the halves."""

    parts = ("half1", "half2")
    local_parts = ("head", "tail")

    def forward(self, micro: list[torch.Tensor], first_seq: int) -> list[torch.Tensor]:
        pending = []
        for seq, x in self._number(micro, first_seq):
            start = time.perf_counter()
            h = self.local["head"](x)
            self.master_events.append((seq, FWD, start, time.perf_counter(), 0, 0))
            pending.append((seq, [call_async(self.stages[p], "forward", seq, h) for p in self.parts]))
        outputs = []
        for seq, halves in pending:
            joined = torch.cat(torch.futures.wait_all(halves), dim=-1)
            start = time.perf_counter()
            outputs.append(self.local["tail"](joined))
            self.master_events.append((seq, FWD, start, time.perf_counter(), 0, 0))
        return outputs


def make_driver(cfg, at: int) -> _Driver:
    return (HorizontalSplit if cfg.horizontal else VerticalPipeline)(cfg, at)
