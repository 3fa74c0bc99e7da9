"""Running one student's code safely: a separate process (``cellrunner``) in its own session and folder,
with a time limit per notebook, a memory limit (the whole process tree's resident memory), a cap on its
output and the write guard (``labkit.runtime.guard``); afterwards every process it started is killed.

If the process hangs, dies, floods its output or outgrows the memory limit, the notebook it was on is
flagged and the remaining notebooks run in a new process, so one bad exercise costs only its notebook.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..errors import LabError
from ..paths import REPO_ROOT
from ..runtime import guard

TICK = 0.1  # seconds between two looks at the process


@dataclass(frozen=True)
class Limits:
    """How long (per notebook), how much memory (MB, all processes together) and how much output (MB)."""

    timeout: float = 180.0
    memory_mb: int = 3000
    output_mb: float = 5.0

    def __post_init__(self):
        for name in ("timeout", "memory_mb", "output_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise LabError(f"{name} must be a positive number, got {value!r}.")


def _environment(folder: Path, private: Path) -> dict:
    files = folder.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "NBGRADER_"))}
    env.update({
        "LABKIT_GRADING": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
        "MPLCONFIGDIR": str(files / ".matplotlib"), "TMPDIR": str(files / "tmp"),
        "LABKIT_RESULTS": str(files / "results"), "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    })
    env.update(guard.environment([files, os.devnull, "/dev/shm"], private / "guard.log"))
    return env


def _limit_memory(megabytes: int):
    """A hard backstop per process against a runaway allocation (the sandbox watches the real limit)."""
    def apply():
        import resource
        limit = (2 * megabytes + 4096) * 2 ** 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _tree(proc: subprocess.Popen, seen: dict) -> int:
    """Resident memory of the process and all its descendants (bytes); remembers every process seen."""
    try:
        root = psutil.Process(proc.pid)
        family = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in family:
        seen.setdefault(p.pid, p)
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def kill_all(proc: subprocess.Popen, seen: dict) -> None:
    """SIGKILL the process's session and every process it was seen to start (launch supervisors have
    sessions of their own), then reap it."""
    _tree(proc, seen)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    for p in seen.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait()
    psutil.wait_procs([p for p in seen.values() if p.pid != proc.pid], timeout=5)


def _read_events(path: Path, offset: int) -> tuple[list, int]:
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    events = []
    for line in complete.decode("utf-8", "replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return events, offset + len(complete)


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"the process died of {signal.Signals(-code).name}"
        except ValueError:
            return f"the process died of signal {-code}"
    return f"the process exited with status {code} in the middle of the notebook"


def _run_once(notebooks: list, folder: Path, private: Path, limits: Limits, events: list) -> tuple[str, str, str]:
    """One process over ``notebooks``; appends its events; returns (notebook it stopped in, flag, why)."""
    job = private / "job.json"
    job.write_text(json.dumps({"notebooks": notebooks, "events": str(private / "events.jsonl"),
                               "cap": int(limits.output_mb * 2 ** 20)}))
    log_path = private / "output.log"
    offset = (private / "events.jsonl").stat().st_size if (private / "events.jsonl").exists() else 0
    seen, started, first = {}, time.monotonic(), len(events)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "labkit.course.cellrunner", str(job)], cwd=folder,
                                env=_environment(folder, private), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, preexec_fn=_limit_memory(limits.memory_mb))
        flag = why = ""
        try:
            while proc.poll() is None:
                time.sleep(TICK)
                new, offset = _read_events(private / "events.jsonl", offset)
                events += new
                if any(event.get("event") == "start" for event in new):
                    started = time.monotonic()  # the time limit is per notebook
                memory = _tree(proc, seen)
                if time.monotonic() - started > limits.timeout:
                    flag, why = "timeout", f"still running after {limits.timeout:.0f} s (a hang or an endless loop?)"
                elif memory > limits.memory_mb * 2 ** 20:
                    flag, why = "memory", f"used {memory / 2 ** 20:.0f} MB, more than the {limits.memory_mb} MB allowed"
                elif log_path.stat().st_size > limits.output_mb * 2 ** 20:
                    flag, why = "output flood", f"printed more than {limits.output_mb:g} MB"
                if flag:
                    break
        finally:
            kill_all(proc, seen)
    new, _ = _read_events(private / "events.jsonl", offset)
    events += new
    mine = events[first:]
    done = {e["notebook"] for e in mine if e.get("event") == "done"}
    current = next((e["notebook"] for e in reversed(mine) if e.get("event") == "start" and e["notebook"] not in done), "")
    if not flag and (current or proc.returncode):
        memory_error = "MemoryError" in log_path.read_text(errors="replace")[-4000:]
        flag, why = ("memory", "ran out of memory") if memory_error else ("crash", _death(proc.returncode))
    return current, flag, why


def run_student(notebooks: list, folder: Path, private: Path, limits: Limits) -> tuple[list, dict]:
    """Run each notebook's plan (``[{"name", "steps"}]``) for one student in ``folder`` (its own, empty);
    return the events and ``{notebook: (flag, why)}`` for the notebooks that did not finish."""
    folder.mkdir(parents=True, exist_ok=True)
    private.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    events, stopped, left = [], {}, list(notebooks)
    while left:
        current, flag, why = _run_once(left, folder, private, limits, events)
        finished = {e["notebook"] for e in events if e.get("event") == "done"}
        if flag and not current:  # it died before starting a notebook: charge the first one
            current = left[0]["name"]
        if current:
            stopped[current] = (flag, why)
        still = [nb for nb in left if nb["name"] not in finished and nb["name"] not in stopped]
        if len(still) == len(left):  # no progress at all: do not loop for ever
            stopped.update({nb["name"]: ("crash", "the grading process did not run it") for nb in still})
            still = []
        left = still
    return events, stopped


def refused_writes(private: Path) -> list[str]:
    """The paths the write guard refused, in order, without repeats."""
    path = private / "guard.log"
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line)["path"])
        except (json.JSONDecodeError, KeyError):
            pass
    return list(dict.fromkeys(found))
