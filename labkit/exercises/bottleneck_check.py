"""The check of notebook 03's bottleneck node: ``bottleneck_delay(rank, world_size, delay_ms)`` must
sleep ``delay_ms`` milliseconds on the last rank only, every time it is called.

It runs in this process: each (rank, world size) call in a thread that is timed, with ``time.sleep``
recording what it was asked for (and never sleeping more than twice the delay), so sleeping seconds
instead of milliseconds is diagnosed instead of hanging the check.
"""
from __future__ import annotations

import threading
import time
import warnings

from .result import CheckResult, failed, passed

EXERCISE = "bottleneck_delay"
CASES = ((2, 150.0), (3, 90.0))   # (world size, delay in ms): two, so a fixed delay cannot pass


def _run(fn, rank: int, world_size: int, delay_ms: float) -> dict:
    """Call ``fn`` once in a thread: its seconds, the sleeps it asked for, and its exception or a hang."""
    real_sleep, asked, outcome = time.sleep, [], {}
    done = threading.Event()

    def recording_sleep(seconds):
        if threading.get_ident() != outcome.get("thread"):
            return real_sleep(seconds)
        asked.append(float(seconds))
        return real_sleep(min(float(seconds), 2 * delay_ms / 1000))

    def target():
        outcome["thread"] = threading.get_ident()
        start = time.perf_counter()
        try:
            fn(rank, world_size, delay_ms)
        except Exception as exc:  # noqa: BLE001 - the student's mistake, reported by the check
            outcome["error"] = exc
        outcome["seconds"] = time.perf_counter() - start
        done.set()

    time.sleep = recording_sleep
    try:
        threading.Thread(target=target, daemon=True, name="labkit-bottleneck-check").start()
        waited = max(3.0, 10 * delay_ms / 1000)
        finished = done.wait(waited)
    finally:
        time.sleep = real_sleep
    return {"finished": finished, "error": outcome.get("error"), "asked": sum(asked) if asked else None,
            "seconds": outcome.get("seconds"), "waited": waited}


def _slept_ms(run: dict) -> float:
    """Milliseconds the call slept: what it asked ``time.sleep`` for, else its measured duration."""
    return 1e3 * (run["asked"] if run["asked"] is not None else run["seconds"])


def _slept(run: dict, delay_ms: float) -> bool:
    """Whether a call slept at all: it asked ``time.sleep`` for time, or took a noticeable share of the delay."""
    return run["asked"] > 0 if run["asked"] is not None else _slept_ms(run) >= max(10.0, 0.2 * delay_ms)


def check_bottleneck(fn) -> CheckResult:
    """Check ``fn(rank, world_size, delay_ms)``: only rank ``world_size - 1`` sleeps, ``delay_ms`` ms."""
    if not callable(fn):
        return failed(EXERCISE, f"expected your function {EXERCISE}, got {type(fn).__name__}.")
    shown = []
    for world_size, delay in CASES:
        call = f"{EXERCISE}(rank, world_size={world_size}, delay_ms={delay:g})"
        with warnings.catch_warnings():   # a passing check writes nothing to stderr
            warnings.simplefilter("ignore")
            runs = {rank: _run(fn, rank, world_size, delay) for rank in range(world_size)}
        for rank, run in runs.items():
            if isinstance(run["error"], NotImplementedError):
                return failed(EXERCISE, f"not written yet: {EXERCISE} still raises NotImplementedError.")
            if run["error"] is not None:
                message = (str(run["error"]).strip().splitlines() or [""])[0]
                return failed(EXERCISE, f"your {EXERCISE} raised {type(run['error']).__name__}: {message} "
                                        f"(rank {rank} of {world_size}).")
            if not run["finished"] or _slept_ms(run) > 20 * delay:
                took = f"{_slept_ms(run) / 1e3:.0f} s" if run["finished"] else f"still running after {run['waited']:g} s"
                return failed(EXERCISE, f"{call} on rank {rank} slept far too long ({took}): time.sleep takes "
                                        "seconds, so sleep delay_ms / 1000.")
        last = world_size - 1
        sleepers = [r for r, run in runs.items() if _slept(run, delay)]
        if len(sleepers) == world_size:
            return failed(EXERCISE, f"every rank slept (ranks {', '.join(map(str, sleepers))} of {world_size}): only "
                                    f"the last node, rank world_size - 1 = {last}, is the bottleneck.")
        if last not in sleepers:
            who = f"rank {sleepers[0]} slept, but" if sleepers else "no rank slept, but"
            return failed(EXERCISE, f"{who} the bottleneck is the last node, rank world_size - 1 = {last} "
                                    f"(with {world_size} ranks): it must sleep delay_ms milliseconds.")
        if sleepers != [last]:
            return failed(EXERCISE, f"ranks {', '.join(map(str, sleepers))} slept: only rank {last} should.")
        slept = _slept_ms(runs[last])
        exact = runs[last]["asked"] is not None
        if slept < 0.95 * delay or slept > (1.01 * delay if exact else delay + max(250.0, delay)):
            return failed(EXERCISE, f"rank {last} slept {slept:.0f} ms when asked for delay_ms={delay:g} ms: sleep "
                                    "delay_ms / 1000 seconds.")
        shown.append(f"rank {last} of {world_size}: {slept:.0f} ms")
    return passed(EXERCISE, f"only the last node sleeps, delay_ms milliseconds ({'; '.join(shown)}); the other ranks "
                            "return at once.")
