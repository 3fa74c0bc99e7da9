"""What each rank did while it ran a student's code, written to a file as it happens, so a check can
say who never reached a collective even when a deadlock stopped the job.

In a rank, ``Watch`` wraps ``torch.distributed``'s collectives (a line when one is entered and when
it returns) and ``reached(point)`` waits, through these files and never through a collective, until
every rank got there; a rank that waits in vain gives up after ``grace`` seconds, which ends the
launch long before its timeout. In the parent, ``read`` and ``deadlock`` turn the files into words.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch.distributed as dist

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast", "reduce",
               "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
               "barrier", "send", "recv", "isend", "irecv")
ORDINALS = {1: "1st", 2: "2nd", 3: "3rd"}


class GaveUp(RuntimeError):
    """A rank waited ``grace`` seconds for the others at a point they never reached."""


class Watch:
    """One rank's log in ``folder``: collectives entered and left, points reached, errors."""

    def __init__(self, folder: str, rank: int, nodes: int, grace: float):
        self.folder, self.rank, self.nodes, self.grace = Path(folder), rank, nodes, grace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"rank{rank}.log"
        self.names: dict[int, str] = {}

    def note(self, *words) -> None:
        """Append one line (tab-separated words) and flush it to disk at once."""
        with open(self.path, "a") as log:
            log.write("\t".join(str(w) for w in words) + "\n")

    def name_gradients(self, model) -> None:
        """Remember which parameter each gradient's memory belongs to, to name it in messages."""
        self.names = {p.grad.data_ptr(): n for n, p in model.named_parameters() if p.grad is not None}

    def _tensor_name(self, args) -> str:
        for arg in args:
            for t in (arg if isinstance(arg, (list, tuple)) else [arg]):
                if hasattr(t, "data_ptr") and t.data_ptr() in self.names:
                    return self.names[t.data_ptr()]
        return "-"

    def _wrap(self, name: str, original):
        def watched(*args, **kwargs):
            self.note("enter", name, self._tensor_name(args))
            value = original(*args, **kwargs)
            self.note("leave", name)
            return value
        return watched

    @contextlib.contextmanager
    def collectives(self):
        """Log every collective called through ``torch.distributed`` inside the block."""
        saved = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
        for name, original in saved.items():
            setattr(dist, name, self._wrap(name, original))
        try:
            yield self
        finally:
            for name, original in saved.items():
                setattr(dist, name, original)

    def reached(self, point: str) -> bool:
        """Say this rank got to ``point`` and wait until every rank did. False if another rank stopped
        (the caller stops too); raises ``GaveUp`` after ``grace`` seconds."""
        self.note("reached", point)
        return self._wait(point)

    def stop(self, reason: str = "") -> None:
        """This rank runs no more collectives (its code raised). It waits for the others to end or stop,
        and gives up (raising ``GaveUp``, which ends the launch) if one of them is stuck in a collective."""
        self.note("stopped", reason)
        self._wait("end")

    def _wait(self, point: str) -> bool:
        deadline = time.monotonic() + self.grace
        while True:
            others = [marks(lines) for r, lines in read(self.folder, self.nodes).items() if r != self.rank]
            if any("stopped" in m for m in others):
                return False
            if all(point in m for m in others):
                return True
            if time.monotonic() > deadline:
                self.note("gave-up", point)
                raise GaveUp(f"rank {self.rank} waited {self.grace:g} s for the other ranks at {point}")
            time.sleep(0.005)


def read(folder, nodes: int) -> dict[int, list[list[str]]]:
    """Every rank's log as lists of words (an empty list for a rank that wrote nothing)."""
    out = {}
    for rank in range(nodes):
        path = Path(folder) / f"rank{rank}.log"
        text = path.read_text() if path.exists() else ""
        out[rank] = [line.split("\t") for line in text.splitlines() if line]
    return out


def marks(lines: list[list[str]]) -> set[str]:
    """The points a rank reached, and "stopped" if it stopped."""
    return {w[1] for w in lines if w[0] == "reached" and len(w) > 1} | {"stopped" for w in lines if w[0] == "stopped"}


def calls(lines: list[list[str]]) -> list[tuple[str, str]]:
    """(collective, parameter name or "-") of every collective a rank entered, in order."""
    return [(w[1], w[2] if len(w) > 2 else "-") for w in lines if w[0] == "enter" and len(w) > 1]


def stuck_in(lines: list[list[str]]) -> tuple[str, str, int] | None:
    """(collective, parameter, its number among the rank's calls) if the rank's last collective never returned."""
    entered = [w for w in lines if w[0] in ("enter", "leave")]
    if not entered or entered[-1][0] != "enter":
        return None
    made = calls(lines)
    return made[-1][0], made[-1][1], len(made)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... (small numbers: a rank's collective calls in a check)."""
    return ORDINALS.get(n, f"{n}th")


def deadlock(logs: dict[int, list[list[str]]], missing_only: bool = False) -> str | None:
    """In words, which rank waits in which collective and which ranks never reached it; None if no rank
    waits (or, with ``missing_only``, if every rank reached the collective some rank waits in)."""
    stuck = {r: s for r, s in ((r, stuck_in(lines)) for r, lines in logs.items()) if s}
    if not stuck:
        return None
    rank, (name, param, number) = next(iter(stuck.items()))
    missing = [r for r, lines in logs.items() if r not in stuck and len(calls(lines)) < number]
    where = f" on {param}'s gradient" if param != "-" else ""
    counts = ", ".join(f"rank {r} {len(calls(lines))}" for r, lines in logs.items())
    if missing:
        who = ", ".join(map(str, missing))
        return (f"rank {rank} waited forever in {name} (its {ordinal(number)} collective{where}), because rank(s) {who} "
                f"never reached it (collectives called: {counts}): every rank must call every collective; "
                "is a collective inside an `if rank == ...`?")
    if missing_only:
        return None
    return (f"rank {rank} waited forever in {name} (its {ordinal(number)} collective{where}); the ranks called "
            f"different collectives ({counts} calls): every rank must call the same collectives in the same order.")
