"""The checks of notebook 03's exercises: gradient averaging by all-reduce and by all-gather, a
data-parallel worker's training step, and a bottleneck node.

The averaging and the step run in real workers (``dp_run``'s probes, 2-3 ranks, a tiny model on
random data) and are compared with one process on the global batch; the diagnosis says in words,
with numbers, what differs and what to change. A deadlock ends within seconds and names the rank
that never reached the collective.
"""
from __future__ import annotations

import inspect
import math
import re
import shutil
import tempfile

from ..errors import LabError
from ..runtime.launcher import launch
from . import collective_watch, dp_run
from .bottleneck_check import check_bottleneck
from .result import CheckResult, failed, passed

EXERCISES = {"allreduce": "allreduce_average_gradients", "allgather": "allgather_average_gradients"}
COLLECTIVE_CALLS = {"allreduce": ("all_reduce",), "allgather": ("all_gather", "all_gather_into_tensor",
                                                                 "all_gather_object")}
GRACE = 10.0      # seconds a finished rank waits for the others before it gives up (a deadlock)
TOLERANCE = 1e-4  # largest relative difference still counted as equal (float sums in another order)

__all__ = ["check_average", "check_averages", "check_bottleneck", "check_train_step", "check_train_steps"]


def _launched(worker, nodes: int, timeout: float, count: int, *args):
    """Run a probe of ``count`` functions on ``nodes`` workers: (values or None, each function's logs of
    every rank, the error that stopped the launch or None)."""
    folder = tempfile.mkdtemp(prefix="labkit-check-")
    try:
        try:
            outs, error = launch(worker, nodes, *args, folder=folder, grace=min(GRACE, timeout / 3),
                                 timeout=timeout), None
        except LabError as exc:   # WorkerError too: a rank failed, gave up or timed out
            outs, error = None, exc
        return outs, [collective_watch.read(f"{folder}/{k}", nodes) for k in range(count)], error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _each(worker, fns: list, args: tuple, nodes: int, timeout: float, exercise: str, arguments: int,
          names: dict, judge) -> list[CheckResult]:
    """Check several functions in one launch (``judge(values of every rank, logs)`` for each that ran).
    If one of them stops the launch, it gets the explanation and the others are checked again alone."""
    results = {k: _not_a_function(exercise, fn, arguments) for k, fn in enumerate(fns)}
    todo = [k for k, result in results.items() if result is None]
    if todo:
        outs, logs, error = _launched(worker, nodes, timeout, len(todo), [fns[k] for k in todo], *args)
        for i, k in enumerate(todo):
            problem = _failure(exercise, logs[i], error if len(todo) == 1 else None, names)
            if problem:
                results[k] = failed(exercise, problem)
            elif error is None:
                results[k] = judge([out[i] for out in outs], logs[i])
    return [results[k] if results[k] is not None else
            _each(worker, [fn], args, nodes, timeout, exercise, arguments, names, judge)[0] for k, fn in enumerate(fns)]


def _not_a_function(exercise: str, fn, arguments: int) -> CheckResult | None:
    if not callable(fn):
        return failed(exercise, f"expected your function {exercise}, got {type(fn).__name__} {fn!r:.40}.")
    try:
        inspect.signature(fn).bind(*range(arguments))
    except TypeError:
        return failed(exercise, f"{getattr(fn, '__name__', exercise)} must take {arguments} argument(s), like the "
                                f"scaffold's def line; its signature is {inspect.signature(fn)}.")
    except ValueError:
        pass
    return None


def _failure(exercise: str, logs: dict, error, names: dict) -> str | None:
    """The student's exception, a deadlock, or a stopped launch, in one line; None if the ranks ran.
    A rank that never reached a collective comes first: the others' errors are its consequence."""
    missing = collective_watch.deadlock(logs, missing_only=True)
    if missing:
        return missing
    for rank, lines in logs.items():
        raised = next((w for w in lines if w[0] == "raised" and len(w) >= 5), None)
        if raised:
            where, kind, message, param = raised[1:5]
            who = names.get(where, where)
            if kind == "NotImplementedError" and who == exercise:
                return f"not written yet: {exercise} still raises NotImplementedError."
            sizes = re.search(r"gradient of size '(\[.*?\])' to a tensor of size '(\[.*?\])'", message)
            if sizes and exercise == EXERCISES["allgather"]:
                return (f"your all-gather average has shape {sizes[1]} for {param}'s {sizes[2]}: average over dim 0 "
                        "of the stacked gradients (torch.stack(gathered).mean(dim=0)).")
            at = f", at {param}'s gradient" if param != "-" else ""
            hint = (" Average over dim 0 of the stacked gradients: it keeps the gradient's shape."
                    if exercise == EXERCISES["allgather"] and "size" in message else "")
            return f"your {who} raised {kind}: {message.split('. ')[0]} (rank {rank}{at}).{hint}"
    stuck = collective_watch.deadlock(logs)
    if stuck:
        return stuck
    if error is not None:
        return f"your code stopped the workers: {str(error).splitlines()[0]}"
    return None


def _difference(a, b) -> float:
    """Largest absolute difference, relative to the largest value of ``b`` (infinite if ``a`` holds a NaN)."""
    difference = ((a - b).abs().max() / b.abs().max().clamp(min=1e-8)).item()
    return difference if math.isfinite(difference) else math.inf


def _parameters_after(outs: list, reference: dict, steps: int, nodes: int) -> tuple[float, str]:
    worst = max(_difference(out["params"][n], reference["params"][n]) for out in outs for n in reference["params"])
    return worst, (f"after {steps} steps your parameters differ from one process at batch {dp_run.BATCH * nodes} "
                   f"by {worst:.1e} (relative)")


def _compare_gradients(exercise: str, outs: list, reference: dict, nodes: int) -> str | None:
    """The first step at which the averaged gradients are not the one-process gradient, in words."""
    for step, expected in enumerate(reference["grads"]):
        mine = [out["averaged"][step] if step < len(out["averaged"]) else None for out in outs]
        if any(m is None for m in mine):
            return None
        for name, want in expected.items():
            got = [m[name] for m in mine]
            if any(g is None for g in got):
                return (f"{name} has no gradient after your {exercise} (p.grad is None): write the average into "
                        "p.grad (in place, or assign a tensor of the gradient's shape).")
            if any(g.shape != want.shape for g in got):
                shape = list(next(g.shape for g in got if g.shape != want.shape))
                return (f"your average has shape {shape} for {name}'s {list(want.shape)}: average over dim 0 of the "
                        "stacked gradients (torch.stack(gathered).mean(dim=0)).")
        spread = {n: max(_difference(m[n], mine[0][n]) for m in mine) for n in expected}
        apart = [n for n, s in spread.items() if s > TOLERANCE]
        if apart and len(apart) < len(expected):
            return (f"the gradients of {', '.join(apart)} were not averaged (ranks still differ by "
                    f"{max(spread[n] for n in apart):.1e}): average every parameter.")
        if apart:
            unchanged = all(_difference(out["averaged"][step][n], out["local"][step][n]) <= TOLERANCE
                            for out in outs for n in expected)
            return ("your function left every gradient as it was (the ranks' gradients still differ by "
                    f"{max(spread.values()):.1e}): write the average back into p.grad." if unchanged else
                    f"after your function the ranks' gradients still differ (by {max(spread.values()):.1e}): every "
                    "rank must end with the same averaged gradient.")
        got = {n: mine[0][n] for n in expected}
        scale = (sum((got[n] * expected[n]).sum() for n in expected) / sum((w * w).sum() for w in expected.values())).item()
        if abs(scale - 1) > 1e-3 and all(_difference(got[n], scale * expected[n]) <= TOLERANCE for n in expected):
            if abs(scale - nodes) < 1e-3:
                return (f"the gradients were summed, not averaged (they are {scale:.2f}x the one-process gradient): "
                        "divide by the world size.")
            return f"your averaged gradients are {scale:.2f}x the one-process gradient: divide the sum by the world size, once."
        wrong = [n for n in expected if _difference(got[n], expected[n]) > TOLERANCE]
        if wrong:
            worst = max(_difference(got[n], expected[n]) for n in wrong)
            hint = (" Average over dim 0 of the stacked gradients." if exercise == EXERCISES["allgather"] else "")
            return (f"at step {step + 1} your average of {', '.join(wrong)} is not the mean over the ranks (it differs "
                    f"from one process at batch {dp_run.BATCH * nodes} by {worst:.1e}).{hint}")
    return None


def check_average(fn, collective: str = "allreduce", nodes: int = 2, timeout: float = 60.0) -> CheckResult:
    """Check a student's ``fn(model)`` that averages every gradient over the ranks with ``collective``
    ("allreduce" or "allgather"): ``nodes`` workers train ``dp_run.TinyNet`` for a few steps with it,
    against one process on the global batch."""
    return check_averages([fn], collective, nodes, timeout)[0]


def check_averages(fns: list, collective: str = "allreduce", nodes: int = 2, timeout: float = 60.0) -> list[CheckResult]:
    """``check_average`` of several functions, in one launch (for tests and grading)."""
    if collective not in EXERCISES:
        raise LabError(f"collective must be one of {', '.join(EXERCISES)}, got {collective!r}.")
    exercise = EXERCISES[collective]
    reference = dp_run.one_process(nodes)

    def judge(outs: list, logs: dict) -> CheckResult:
        made = {name for lines in logs.values() for name, _ in collective_watch.calls(lines)}
        if made and not made & set(COLLECTIVE_CALLS[collective]):
            return failed(exercise, f"your {exercise} called {', '.join(sorted(made))} but never "
                                    f"dist.{COLLECTIVE_CALLS[collective][0]}: this exercise averages with it.")
        problem = _compare_gradients(exercise, outs, reference, nodes)
        complete = all(out["params"] is not None for out in outs)
        if problem is None and not complete:
            problem = "the workers stopped before the end of the check: run it again."
        if problem:
            tail = f" (So {_parameters_after(outs, reference, dp_run.STEPS, nodes)[1]}.)" if complete else ""
            return failed(exercise, problem + tail)
        worst, _ = _parameters_after(outs, reference, dp_run.STEPS, nodes)
        return passed(exercise, f"on {nodes} workers your {exercise} gives every rank the one-process gradient of "
                                f"the global batch: after {dp_run.STEPS} steps the model equals one process at batch "
                                f"{dp_run.BATCH * nodes} (largest difference {worst:.0e}).", difference=worst)

    return _each(dp_run.probe_averages, list(fns), (), nodes, timeout, exercise, 1, {"average": exercise}, judge)


ORDER = (("backward", "step", "optimizer.step() ran before loss.backward(): each step applied the previous step's "
                              "gradient. Order: zero_grad, forward, loss, backward, average, step."),
         ("backward", "average", "average(model) ran before loss.backward(): it averaged the previous step's "
                                 "gradients. Call it after backward."),
         ("average", "step", "optimizer.step() ran before average(model): each rank stepped with its own gradient, "
                             "so the replicas drift apart. Average first, then step."))


def _step_problem(outs: list) -> str | None:
    """What the recorded events and losses say is wrong with a train_step, in words; None if nothing."""
    for step, record in enumerate(outs[0]["steps"]):
        events = record["events"]
        for needed, what in (("forward", "train_step never ran the model on the batch."),
                             ("backward", "train_step never called loss.backward(): there are no gradients."),
                             ("average", "train_step never called average(model): every rank stepped with its own "
                                         "gradient."),
                             ("step", "train_step never called optimizer.step(): the parameters did not move.")):
            if needed not in events:
                return what
        for first, then, what in ORDER:
            if events.index(then) < events.index(first):
                return what
        if "stale" in events:
            return (f"zero_grad missing: gradients accumulate (at step {step + 1} backward added to the previous "
                    "steps' gradients). Call optimizer.zero_grad() before backward.")
        if "zero_grad" in events[events.index("backward"):events.index("step")]:
            return "zero_grad ran after loss.backward(): it erased the gradients before the step. Call it first."
        if record["loss"] is None:
            return f"train_step returned {record['loss_type']}: return loss.item(), the loss as a Python float."
        if abs(record["loss"] - record["expected"]) > 1e-4 * max(1.0, abs(record["expected"])):
            return (f"train_step returned {record['loss']:.4f} at step {step + 1}, but the loss of this rank's batch "
                    f"was {record['expected']:.4f}: return loss.item() of this step.")
    return None


def check_train_step(step, average=None, nodes: int = 2, timeout: float = 60.0) -> CheckResult:
    """Check a student's ``step(model, optimizer, batch, average) -> loss``: ``nodes`` workers run it for a
    few steps (``average``: labkit's all-reduce average unless given), against one process on the global batch."""
    return check_train_steps([step], average, nodes, timeout)[0]


def check_train_steps(steps: list, average=None, nodes: int = 2, timeout: float = 60.0) -> list[CheckResult]:
    """``check_train_step`` of several step functions, in one launch (for tests and grading)."""
    from .gradient_answers import allreduce_average_gradients
    average = average or allreduce_average_gradients
    reference = dp_run.one_process(nodes)

    def judge(outs: list, logs: dict) -> CheckResult:
        if any(out["params"] is None for out in outs):
            return failed("train_step", "the workers stopped before the end of the check: run it again.")
        worst, after = _parameters_after(outs, reference, dp_run.STEPS, nodes)
        problem = _step_problem(outs)
        if problem is None and worst > TOLERANCE:
            problem = "your training does not compute what one process computes on the global batch."
        if problem:
            tail = f" (So {after}.)" if worst > TOLERANCE else ""
            return failed("train_step", problem + tail, difference=worst)
        return passed("train_step", f"your train_step on {nodes} workers trains exactly like one process at batch "
                                    f"{dp_run.BATCH * nodes}: after {dp_run.STEPS} steps the largest parameter "
                                    f"difference is {worst:.0e}.", difference=worst)

    return _each(dp_run.probe_steps, list(steps), (average,), nodes, timeout, "train_step", 4,
                 {"average": getattr(average, "__name__", "average")}, judge)
