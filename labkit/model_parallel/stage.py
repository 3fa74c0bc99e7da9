"""A stage worker's side of model parallelism: ``Stage``, one part of the model living on a worker
(created there with ``rpc.remote``), and the helpers that call a method of the object an RRef points to.

Stages compute one micro-batch at a time, forward or backward, and record when, so the master can
draw a timeline. Event phases: ``FWD``/``BWD`` on a stage; on the master ``BWD``/``OPT``/``STEP``
are whole calls it waits on.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import torch
import torch.distributed.autograd as dist_autograd
from torch import nn
from torch.distributed import rpc

from .parts import build_part

FWD, BWD, OPT, STEP = 0, 1, 2, 3
PHASES = {FWD: "fwd", BWD: "bwd", OPT: "opt", STEP: "step"}
TURN_TIMEOUT = 300.0               # seconds a backward micro-batch may wait for its turn on a stage


def _no_warning(stacklevel: int = 0) -> None:
    """Stands in for torch's TorchScript deprecation warning of the functional optimizers."""


def quiet_functional_optimizer_warning() -> None:
    """``DistributedOptimizer`` builds a TorchScript functional optimizer on every process that owns
    parameters, and torch warns that these are deprecated each time, inside
    ``catch_warnings(simplefilter("always"))`` so that no filter can stop it (a replaced
    ``warnings.showwarning`` is undone by torch's own warning filters in other threads). The lab
    teaches DistributedOptimizer on purpose, so every process that drives or hosts a stage replaces
    that one warning function with a silent one; every other warning still shows."""
    import torch.distributed.optim  # noqa: F401  (imports the functional optimizers)
    for name, module in list(sys.modules.items()):
        if name.startswith("torch.distributed.optim.") and hasattr(module, "_scripted_functional_optimizer_deprecation_warning"):
            module._scripted_functional_optimizer_deprecation_warning = _no_warning


quiet_functional_optimizer_warning()


class Stage(nn.Module):
    """One part of the model on a stage worker. It computes one micro-batch at a time, forward or
    backward (as the PyTorch RPC pipeline example does with a lock), and records when."""

    def __init__(self, name: str, model_name: str, seed: int, at: int, horizontal: bool, part: str,
                 fail: str = ""):
        super().__init__()
        self.name, self.fail = name, fail
        self.net = build_part(model_name, seed, at, horizontal, part)
        self._busy = threading.Lock()     # held while this stage computes
        self._events: list[tuple] = []    # (seq, phase, start, end, in_bytes, out_bytes)
        self._lock = threading.Lock()     # guards _events
        self.deferred: DeferredOptimizer | None = None   # optimizer="deferred"

    def forward(self, seq: int, x):
        """Compute this stage for micro-batch ``seq``; ``x`` is a tensor or an RRef to the previous
        stage's output (fetched here, straight from the worker that holds it)."""
        x = fetch(x) if hasattr(x, "to_here") else x
        if isinstance(x, Failure):
            return x   # the previous stage failed: pass its failure on to the master
        try:
            with self._busy:
                return self._compute(seq, x)
        except Exception as exc:
            raise RuntimeError(f"{self.name} on {rpc.get_worker_info().name} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    def _compute(self, seq: int, x: torch.Tensor) -> torch.Tensor:
        if self.fail == "crash":
            os._exit(13)   # as if the process was killed: no exception, no goodbye
        if self.fail == "hang":
            threading.Event().wait()   # as if stuck: alive, silent, never answers
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
        if self.deferred is not None:
            self.deferred.flush()
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def use_deferred_optimizer(self, lr: float, momentum: float) -> None:
        """Give this stage an SGD that steps when its parameters are next used (``optimizer="deferred"``)."""
        self.deferred = DeferredOptimizer(self.net, lr, momentum)

    def use_local_optimizer(self, lr: float, momentum: float) -> None:
        """Give this stage its own SGD (``optimizer="local"``): ``step`` then updates it from a context's gradients."""
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)

    def step(self, context_id: int) -> None:
        """One SGD step with this stage's gradients in a distributed autograd context: what
        DistributedOptimizer does on each worker, without its TorchScript optimizer and global lock."""
        step_with_context(self.optimizer, self.net, context_id)

    def gradients(self, context_id: int) -> dict[str, torch.Tensor]:
        """This stage's gradients in a distributed autograd context, by parameter name."""
        grads = dist_autograd.get_gradients(context_id)
        return {n: grads[p].clone() for n, p in self.net.named_parameters() if p in grads}


def step_with_context(optimizer: torch.optim.Optimizer, module: nn.Module, context_id: int) -> None:
    """Step ``optimizer`` (over ``module``'s parameters) with their gradients in a distributed autograd context."""
    grads = dist_autograd.get_gradients(context_id)
    params = list(module.parameters())
    for p in params:
        p.grad = grads.get(p)
    optimizer.step()
    for p in params:
        p.grad = None


class DeferredOptimizer:
    """SGD without an optimizer message: hooks on the parameters collect the gradients the backward
    pass produces (distributed autograd runs hooks on leaf tensors), and the step is applied just
    before the parameters are next used: the next forward, or reading the state. Same update as
    stepping right after the backward; the master only has to finish ``dist_autograd.backward``."""

    def __init__(self, module: nn.Module, lr: float, momentum: float):
        self.params = list(module.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum)
        self.pending: dict = {}
        self.lock = threading.Lock()
        for p in self.params:
            p.register_hook(lambda grad, p=p: self._collect(p, grad))
        for layer in module.modules():
            if any(True for _ in layer.parameters(recurse=False)):
                layer.register_forward_pre_hook(lambda *_: self.flush())

    def _collect(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        with self.lock:   # micro-batches' backward passes may run at once: add their gradients up
            self.pending[p] = grad if p not in self.pending else self.pending[p] + grad
        return grad

    def flush(self) -> None:
        """Apply the step the last backward pass asked for, if any."""
        with self.lock:
            grads, self.pending = self.pending, {}
        if grads:
            for p in self.params:
                p.grad = grads.get(p)
            self.optimizer.step()
            for p in self.params:
                p.grad = None


@dataclass(frozen=True)
class Failure:
    """What a stage method raised, returned instead of raised. torch's RPC prints every exception raised
    in a remote call on the callee's stderr (a 40-line traceback under the notebook cell, from a process
    that did nothing wrong but report); returned, the master raises it once, with the stage's traceback."""

    message: str
    traceback: str


def _call(rref: rpc.RRef, method: str, *args):
    """Run ``method`` on the object an RRef points to (on its owner): the RPC tutorials' helper."""
    try:
        return getattr(rref.local_value(), method)(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the master as a Failure, see above
        return Failure(str(exc), traceback.format_exc())


def checked(value):
    """A stage's result, or its Failure raised as a RuntimeError naming the stage (the traceback follows)."""
    if isinstance(value, Failure):
        raise RuntimeError(f"{value.message}\n\n--- on the stage's worker ---\n{value.traceback}")
    return value


TIMED_OUT = "ran for more than set timeout"   # torch's words for an RPC call that got no answer in time


def no_answer(who: str, did_not: str = "answer", seconds: float | None = None, limit: str = "rpc_timeout") -> str:
    """The words for a peer that stayed silent past the RPC time limit."""
    seconds = rpc.get_rpc_timeout() if seconds is None else seconds
    return f"{who} did not {did_not} within {seconds:g} s ({limit}): it is stuck or far slower than it should be"


def answered(rref: rpc.RRef, future):
    """The value of an RPC call to ``rref``'s owner; an answer that never came names that worker."""
    try:
        return checked(future.wait())
    except RuntimeError as exc:
        if TIMED_OUT not in str(exc):
            raise
        raise RuntimeError(no_answer(rref.owner().name)) from None


def fetch(rref: rpc.RRef):
    """The previous stage's output from its worker. It gives up sooner than the master's own call to this
    stage, so a stuck previous stage is named as such, not as this stage being slow."""
    limit = 0.8 * rpc.get_rpc_timeout()
    try:
        return rref.to_here(timeout=limit)
    except RuntimeError as exc:
        if TIMED_OUT not in str(exc):
            raise
        return Failure(no_answer(rref.owner().name, "deliver its output", limit, "0.8 x rpc_timeout"), "")


def call(rref: rpc.RRef, method: str, *args):
    """Run a method of the object behind ``rref`` and return its result; a stage on this very
    process (placement="colocated") is called directly, without a message."""
    if rref.is_owner():
        return checked(_call(rref, method, *args))
    return answered(rref, rpc.rpc_async(rref.owner(), _call, args=(rref, method, *args)))


def call_async(rref: rpc.RRef, method: str, *args) -> torch.futures.Future:
    if rref.is_owner():
        done = torch.futures.Future()
        done.set_result(call(rref, method, *args))
        return done
    return rpc.rpc_async(rref.owner(), _call, args=(rref, method, *args)).then(lambda done: answered(rref, done))


def call_remote(rref: rpc.RRef, method: str, *args) -> rpc.RRef:
    """Like ``call`` but the result stays on the stage's worker; returns an RRef to it."""
    return rpc.remote(rref.owner(), _call, args=(rref, method, *args))
