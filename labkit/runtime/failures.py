"""What went wrong in a launch, in words: each failure as it was seen, the root cause among them,
and the ``WorkerError`` that explains it to the user.

Kinds of failure: ``exception`` (the rank raised), ``signal`` / ``exit`` (its process died or exited
without a value), ``lost`` (its connection dropped without an exit report), ``timeout`` (the job ran
out of time) and ``launcher`` (the supervisor itself ended unexpectedly).
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

from ..errors import WorkerError
from .protocol import Crash


@dataclass
class Failure:
    """One failure: which rank (None: the launcher), what kind, when the parent saw it, and details."""

    rank: int | None
    kind: str
    seen: float
    code: int | None = None                 # exit status (signal: negative), for signal/exit/launcher
    crash: Crash | None = None              # for exception
    unfinished: list = field(default_factory=list)   # for timeout: the ranks without a value


@dataclass
class Outcome:
    """What the launch knows when it gives up: the facts a message about the failures draws on."""

    nodes: int
    timeout: float
    returned: list                          # ranks that sent their value
    ready: list                             # ranks that joined the process group
    exits: dict                             # rank -> exit status
    supervisor_text: str = ""               # the supervisor's stderr, for "launcher" failures


def root_cause(failures: list[Failure]) -> Failure:
    """Hard deaths (signals, exits) are never side effects; otherwise the earliest failure in time."""
    for kind in ("signal", "exit", "launcher", "timeout"):
        for f in failures:
            if f.kind == kind:
                return f
    return min(failures, key=lambda f: f.crash.time if f.crash else f.seen)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def short(failure: Failure) -> str:
    """A failure in a few words, for the "also failed" line."""
    if failure.kind == "exception":
        first = (failure.crash.message.strip().splitlines() or [""])[0]
        first = first.split("] ", 1)[-1] if first.startswith("[") else first  # drop gloo's source path
        first = re.sub(r" ?\[[^\]]*\]:\d+", "", first.split(". ")[0])       # and the peer's address:port
        return f"{failure.crash.type}: {first[:100]}"
    if failure.kind == "signal":
        return f"killed by {signal_name(-failure.code)}"
    return f"{failure.kind} (exit code {failure.code if failure.code is not None else '?'})"


def describe(cause: Failure, outcome: Outcome) -> str:
    """The first line of the error: what happened to the rank that caused it."""
    kind, r = cause.kind, cause.rank
    if kind == "exception":
        return f"rank {r} raised {cause.crash.type}: {cause.crash.message}"
    if kind == "signal":
        name = signal_name(-cause.code)
        hint = " (SIGKILL is also what the kernel sends when memory runs out)" if name == "SIGKILL" else ""
        return f"rank {r} was killed by signal {name}, exit code {cause.code}{hint}."
    if kind == "exit":
        return f"rank {r} exited with code {cause.code} before returning a value."
    if kind == "lost":
        return f"rank {r} lost its connection to the notebook before returning a value."
    if kind == "timeout":
        done = sorted(outcome.returned)
        never = [str(r) for r in cause.unfinished if r not in outcome.ready]
        return (f"timed out after {outcome.timeout:g} s: rank(s) {', '.join(map(str, cause.unfinished))} had "
                f"not finished" + (f" (rank(s) {', '.join(map(str, done))} had returned)" if done else "")
                + (f"; rank(s) {', '.join(never)} never joined the process group" if never else "")
                + ". Pass a larger timeout= if the job really needs longer.")
    return f"the launcher process ended unexpectedly (exit code {cause.code}).\n{outcome.supervisor_text}"


def worker_error(failures: list[Failure], outcome: Outcome) -> WorkerError:
    """One error for all failures: the root cause first, the others (often consequences) after it."""
    cause = root_cause(failures)
    others = [f for f in failures if f is not cause and f.rank is not None]
    ranks = [r for r in [cause.rank] + sorted({f.rank for f in others} - {cause.rank}) if r is not None]
    if cause.kind == "timeout":
        ranks = cause.unfinished
    text = describe(cause, outcome)
    also: dict[str, list[str]] = {}
    for f in sorted(others, key=lambda f: f.rank):
        if f.rank != cause.rank:
            also.setdefault(short(f), []).append(str(f.rank))
    if also:
        text += "\nAlso failed (often only a consequence): " + "; ".join(
            f"rank {', '.join(rs)}: {what}" for what, rs in also.items())
    text += f"\nAll {outcome.nodes} workers were stopped."
    tracebacks = {f.rank: f.crash.traceback for f in failures if f.crash}
    if cause.kind == "exception":
        text += f"\n\n--- traceback of rank {cause.rank} (host {cause.crash.host}) ---\n{cause.crash.traceback}"
    return WorkerError(text, ranks, cause.kind, tracebacks, dict(outcome.exits))
