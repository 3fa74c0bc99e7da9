"""The check of notebook 05's exercise: a student's model split runs in three real RPC processes and must
compute what the whole model computes in one process (output, gradients, update), or be told why not.

The master (rank 0) runs the student's three functions, each under a time limit, and records where the
stages live, which stage ran when, what reached them in the backward pass and how the parameters moved;
``diagnose`` turns that record into one sentence.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import torch
import torch.nn.functional as F
from torch.distributed import rpc

from ..errors import LabError, WorkerError
from ..model_parallel.parts import merge_parts
from ..model_parallel.stage import BWD
from ..runtime.context import rank
from ..runtime.launcher import launch
from ..train import models
from .result import CheckResult, failed, passed
from .rpc_split import RecordingOptimizer, Stage, StudentError, as_split, distributed_optimizer, one_line, within

EXERCISE = "rpc_split"
LR, MOMENTUM, BATCH, STEPS = 0.01, 0.9, 16, 2
TOLERANCE = 1e-4
CONTEXT_HINT = "keep forward, dist_autograd.backward(context_id, [loss]) and optimizer.step(context_id) " \
               "inside one `with dist_autograd.context() as context_id:`"


def describe(rref) -> dict:
    """Run on an RRef's owner: what the RRef points to, and the forward calls a Stage has seen so far."""
    obj = rref.local_value()
    if not isinstance(obj, Stage):
        return {"type": type(obj).__name__}
    return {"type": "Stage", "part": obj.part, "calls": list(obj.calls),
            "bwd": int((obj.take_events()[:, 1] == BWD).sum())}


def look(stages) -> list[dict]:
    return [rpc.rpc_sync(s.owner(), describe, args=(s,)) for s in stages]


def probe(split, model: str, seed: int, xs, ys, limit: float) -> dict:
    """On the master: run the split's functions in turn and record what happened (see the module docstring)."""
    rec: dict = {}
    try:
        stages = within(limit, "make_stages", split.make_stages, model, seed)
        if not isinstance(stages, (tuple, list)) or len(stages) != 2:
            return {**rec, "returned": type(stages).__name__ + (f" of {len(stages)}" if hasattr(stages, "__len__") else "")}
        if not all(isinstance(s, rpc.PyRRef) for s in stages):
            return {**rec, "not_rref": [type(s).__name__ for s in stages]}
        rec["owners"] = [s.owner().name for s in stages]
        rec["placed"] = look(stages)
        if any(p["type"] != "Stage" for p in rec["placed"]) or len(set(rec["owners"])) < 2:
            return rec
        try:
            out = within(limit, "forward", split.forward, stages, xs[0])
            rec["output"] = out.detach() if isinstance(out, torch.Tensor) else type(out).__name__
        finally:
            rec["forward"] = look(stages)
        rec["grads"] = {}

        def first_gradients(ctx):   # the first step's gradients, read when the student steps the optimizer
            if not rec["grads"]:
                rec["grads"] = {f"stage{k}": s.rpc_sync().gradients(ctx) for k, s in enumerate(stages, start=1)}
        optimizer = RecordingOptimizer(distributed_optimizer(stages, LR, MOMENTUM), on_step=first_gradients)
        rec["losses"], rec["states"] = [], []
        for x, y in zip(xs, ys):
            try:
                rec["losses"].append(within(limit, "train_step", split.train_step, stages, optimizer, x, y))
            finally:
                rec["steps"], rec["step_error"] = optimizer.steps, optimizer.error
                rec.setdefault("bwd", [p["bwd"] for p in look(stages)])
            rec["states"].append({f"stage{k}": s.rpc_sync().state() for k, s in enumerate(stages, start=1)})
    except StudentError as exc:
        rec["error"] = exc.args
    except Exception as exc:  # noqa: BLE001 - e.g. a stage method failing on the student's input
        rec["error"] = ("", one_line(exc), str(exc))
    return rec


def probe_all(splits: list, model: str, seed: int, xs, ys, limit: float):
    """What every rank of the check's launch runs: the master probes each split, the workers serve RPC."""
    import torch.distributed as dist
    if rank() != 0:   # torch prints every exception a remote call raises here: the master reports it once
        with contextlib.redirect_stderr(io.StringIO()):
            dist.barrier()
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [probe(split, model, seed, xs, ys, limit) for split in splits]
    dist.barrier()
    return out


def whole_model(model: str, seed: int, xs, ys) -> dict:
    """The same forward pass and training steps on the whole model in this process: what the split must give."""
    net = models.build(model, seed=seed)
    output = net(xs[0]).detach()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    losses, grads, states = [], {}, []
    for x, y in zip(xs, ys):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        grads = grads or {n: p.grad.clone() for n, p in net.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    return {"output": output, "losses": losses, "grads": grads, "states": states}


def largest_difference(mine: dict, reference: dict) -> float:
    """Largest |difference| over the tensors both dicts name (inf if one is missing or shaped otherwise)."""
    worst = 0.0
    for name, ref in reference.items():
        if name not in mine or mine[name].shape != ref.shape:
            return float("inf")
        worst = max(worst, (mine[name].double() - ref.double()).abs().max().item())
    return worst


def diagnose_stages(rec: dict) -> str:
    """What is wrong with make_stages's result, or "" if the stages are placed right."""
    if "returned" in rec:
        return f"make_stages returned {rec['returned']}: return the two stages' RRefs, (stage1, stage2)"
    if "not_rref" in rec:
        return (f"make_stages returned {' and '.join(rec['not_rref'])}, not RRefs: create each stage on its worker "
                f"with rpc.remote(\"worker1\", Stage, args=(model, 1, seed)), which returns an RRef")
    owners, placed = rec["owners"], rec["placed"]
    wrong = next((f"stage {k} is a {p['type']}, not a Stage: rpc.remote(..., Stage, args=(model, {k}, seed))"
                  for k, p in enumerate(placed, start=1) if p["type"] != "Stage"), "")
    if wrong:
        return wrong
    if owners[0] == owners[1]:
        other = "worker2" if owners[0] == "worker1" else "worker1"
        return f"both stages live on {owners[0]}: place stage {1 if other == 'worker1' else 2} on {other}"
    if "master" in owners:
        k = owners.index("master") + 1
        return f"stage {k} lives on the master: create it on worker{k} with rpc.remote(\"worker{k}\", ...)"
    if owners != ["worker1", "worker2"] or [p["part"] for p in placed] != [1, 2]:
        return (f"the first RRef is part {placed[0]['part']} on {owners[0]} and the second part {placed[1]['part']} "
                f"on {owners[1]}: stage 1 (part 1) belongs on worker1, stage 2 (part 2) on worker2")
    return ""


def diagnose_forward(rec: dict, ref: dict, micro_batches: int = 1) -> str:
    """What is wrong with the forward pass, or "" if it gives the whole model's output through both stages
    (each stage called once, or once per micro-batch when checking a pipelined forward)."""
    calls = [p.get("calls", []) for p in rec.get("forward", [])]
    if calls and calls[1] and (not calls[0] or calls[1][0][0] < calls[0][0][0]):
        if calls[0]:
            return "the stages ran in the wrong order: stage 2 ran before stage 1; send x to stage 1 first"
        return "stage 1 never ran: forward must send x to stage 1 and hand stage 1's output to stage 2"
    if calls and calls[0] and not calls[1] and "output" in rec:
        return "stage 2 never ran: hand stage 1's output RRef to stage 2 and return stage 2's output"
    if rec.get("error", ("",))[0] == "forward":
        return ""   # reported with the other exceptions
    out = rec["output"]
    if not isinstance(out, torch.Tensor):
        return (f"forward returned {out}, not the output tensor: call stage 2 with rpc_sync() "
                "(or fetch its RRef with to_here())")
    if len(calls[0]) != micro_batches or len(calls[1]) != micro_batches:
        each = "once per forward" if micro_batches == 1 else f"once per micro-batch ({micro_batches} times)"
        return f"forward ran stage 1 {len(calls[0])} and stage 2 {len(calls[1])} times: run each stage {each}"
    if not all(call[1] for call in calls[1]):
        return ("stage 2 received a tensor, not an RRef: the activations went through the master; hand stage 2 "
                "the RRef stage1.remote().forward(x) returns, so worker2 fetches them straight from worker1")
    if out.shape != ref["output"].shape:
        return f"forward returned shape {tuple(out.shape)}, the whole model gives {tuple(ref['output'].shape)}"
    diff = (out - ref["output"]).abs().max().item()
    if diff > TOLERANCE:
        return f"the forward output differs from the whole model by {diff:.3g}: stage 2 must take stage 1's output of x"
    return ""


def diagnose_training(rec: dict, ref: dict, model: str) -> str:
    """What is wrong with the training steps, or "" if they give the whole model's gradients and update."""
    if rec.get("error", ("train_step",))[0] != "train_step":
        return ""   # something else failed: reported with the other exceptions
    reason = rec["error"][2] if "error" in rec else ""
    if "graphTask_" in reason or "INTERNAL ASSERT" in reason:
        return ("loss.backward() was called instead of dist_autograd.backward(context_id, [loss]): over RPC the "
                "local backward stops at the first remote call")
    if "Could not find autograd context" in reason:
        late = "optimizer.step(context_id)" if rec.get("step_error") else "dist_autograd.backward"
        return f"{late} ran after the distributed autograd context had closed: {CONTEXT_HINT}"
    if "error" in rec:
        return ""   # reported with the other exceptions
    bwd, steps = rec["bwd"], rec["steps"]
    if steps == 0:
        if not any(bwd):
            return f"no gradient reached the stages and the optimizer was never stepped: {CONTEXT_HINT}"
        return ("the parameters did not change after the step: did you step the DistributedOptimizer inside the "
                "context (optimizer.step(context_id))?")
    if not any(bwd):
        return ("stage 1 and stage 2 received no gradient: was the forward pass run inside the distributed autograd "
                "context? RPC calls made outside it are not recorded, so the gradient stops at the master")
    if not all(bwd):
        k = bwd.index(0) + 1
        return f"stage {k} received no gradient: was backward run inside the distributed autograd context? {CONTEXT_HINT}"
    losses = rec["losses"]
    if not all(isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1) for v in losses):
        return f"train_step returned {type(losses[0]).__name__}: return the batch's loss as a number (loss.item())"
    at = models.build(model).split
    grads = largest_difference(merge_parts(model, at, False, rec["grads"]), ref["grads"])
    if grads > TOLERANCE:
        return (f"the first step's gradients differ from the whole model's by {grads:.3g}: take the mean "
                "cross-entropy of forward's output, F.cross_entropy(output, y), and run one backward per step")
    if steps != STEPS:
        return f"the optimizer stepped {steps} times in {STEPS} calls of train_step: step it once per train_step"
    params = largest_difference(merge_parts(model, at, False, rec["states"][-1]), ref["states"][-1])
    if params > TOLERANCE:
        return f"after {STEPS} steps your parameters differ from the whole model's by {params:.3g}"
    loss = max(abs(float(a) - b) for a, b in zip(losses, ref["losses"]))
    if loss > TOLERANCE:
        return f"train_step returned losses {float(losses[0]):.4f}, ...; the whole model's are {ref['losses'][0]:.4f}, ..."
    return ""


def diagnose(rec: dict, ref: dict, model: str, micro_batches: int = 1) -> CheckResult:
    """One split's record against the whole model's: the first thing wrong, in words, or a pass."""
    name, reason, _ = rec.get("error", ("", "", ""))
    if reason == "NotImplementedError":
        return failed(EXERCISE, f"not written yet: {name} still raises NotImplementedError")
    message = ""
    if name != "make_stages" and ("placed" in rec or "returned" in rec or "not_rref" in rec):
        message = diagnose_stages(rec)
    if not message and "forward" in rec:
        message = diagnose_forward(rec, ref, micro_batches)
    if not message and "bwd" in rec:
        message = diagnose_training(rec, ref, model)
    if message:
        return failed(EXERCISE, message)
    if "error" in rec:
        said = reason if reason.startswith("did not return") else f"raised {reason}"
        return failed(EXERCISE, f"{name} {said}" if name else f"a stage failed: {reason}")
    at = models.build(model).split
    numbers = {"forward": (rec["output"] - ref["output"]).abs().max().item(),
               "gradients": largest_difference(merge_parts(model, at, False, rec["grads"]), ref["grads"]),
               "parameters": largest_difference(merge_parts(model, at, False, rec["states"][-1]), ref["states"][-1])}
    return passed(EXERCISE, f"your RPC split of {model} computes what the whole model computes: output within "
                            f"{numbers['forward']:.1g}, first gradients within {numbers['gradients']:.1g}, parameters "
                            f"after {STEPS} steps within {numbers['parameters']:.1g}", **numbers)


def check_rpc_splits(splits: list, model: str = "lenet5", seed: int = 0, timeout: float = 90.0,
                     micro_batches: int = 1) -> list[CheckResult]:
    """``check_rpc_split`` for several splits, all in one 3-process launch (an instructor's class, the tests)."""
    splits = [as_split(s) for s in splits]
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.randn(BATCH, 1, 28, 28, generator=generator) for _ in range(STEPS)]
    ys = [torch.randint(0, 10, (BATCH,), generator=generator) for _ in range(STEPS)]
    limit = max(5.0, timeout / 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = whole_model(model, seed, xs, ys)
        try:   # the workers' stderr (tensorpipe's shutdown logs) is not the student's: keep it out of the cell
            with contextlib.redirect_stderr(io.StringIO()):
                records = launch(probe_all, 3, splits, model, seed, xs, ys, limit, rpc=True,
                                 timeout=timeout + limit * len(splits))[0]
        except WorkerError as exc:
            line = str(exc).splitlines()[0]
            return [failed(EXERCISE, f"the check's three RPC processes did not finish: {line}")] * len(splits)
    return [diagnose(rec, ref, model, micro_batches) for rec in records]


def check_rpc_split(split, model: str = "lenet5", seed: int = 0, timeout: float = 90.0,
                    micro_batches: int = 1) -> CheckResult:
    """Run a student's ``RpcSplit`` (or its three functions) in a master and two RPC workers and compare it with
    the whole model in one process: where the stages live, the forward output, the first step's gradients
    and the parameters after two steps. The result says, in words, the first thing that is wrong.
    ``micro_batches``: the forward is pipelined, calling each stage that many times (the advanced exercise)."""
    try:
        split = as_split(split)
    except LabError as exc:
        return failed(EXERCISE, str(exc))
    return check_rpc_splits([split], model, seed, timeout, micro_batches)[0]
