"""Keeps graded student code inside its folder: a Python audit hook refuses (PermissionError) and records
every write, delete, rename or mkdir outside the allowed folders.

The grader installs it in the process that runs a student's cells and names it in ``$LABKIT_GUARD``, so
each rank of a ``labkit.launch`` installs it too (``install_from_environment``, called by the worker
before it runs the student's function). It catches mistakes, not a determined attacker: writes made
by C code (e.g. ``torch.save`` to a path) raise no audit event.
"""
from __future__ import annotations

import json
import os
import sys

ENV = "LABKIT_GUARD"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# audit event -> positions of the paths it writes (https://docs.python.org/3/library/audit_events.html)
EVENTS = {
    "os.remove": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.rmdir": (0,), "os.symlink": (1,),
    "os.link": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1),
    "shutil.make_archive": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
}
_state: dict = {}


def written_paths(event: str, args: tuple) -> list:
    """The paths an audit event would write, create or delete ([] for reads and everything else)."""
    if event == "open":
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        writes = flags & _WRITE_FLAGS or any(ch in mode for ch in "wax+")
        return [args[0]] if writes else []
    return [args[k] for k in EVENTS.get(event, ()) if k < len(args)]


def _absolute(path) -> str | None:
    if isinstance(path, int) or path is None:
        return None  # an open file descriptor: the write was allowed when it was opened
    try:
        return os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError, OSError):
        return None


def outside(path, allowed) -> bool:
    """Whether ``path`` lies outside every folder (or file) in ``allowed`` (absolute, symlinks resolved)."""
    absolute = _absolute(path)
    if absolute is None:
        return False
    return not any(absolute == root or absolute.startswith(root.rstrip(os.sep) + os.sep) for root in allowed)


def _hook(event: str, args: tuple) -> None:
    if event != "open" and event not in EVENTS:
        return
    for path in written_paths(event, args):
        if outside(path, _state["allowed"]):
            where = _absolute(path)
            line = json.dumps({"event": event, "path": where, "pid": os.getpid()}) + "\n"
            try:
                os.write(_state["log"], line.encode())
            except OSError:
                pass
            raise PermissionError(f"graded code may only write inside its own folder; {event} on {where} "
                                  "was refused")


def install(allowed, log: str) -> None:
    """Refuse writes outside ``allowed`` from now on in this process, appending each refusal (JSON) to ``log``.
    Once per process: an audit hook cannot be removed."""
    if _state:
        return
    _state["allowed"] = [os.path.realpath(a) for a in allowed]
    _state["log"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.addaudithook(_hook)


def environment(allowed, log: str) -> dict:
    """The environment variable that makes ``install_from_environment`` install the same guard."""
    return {ENV: json.dumps({"allowed": [str(a) for a in allowed], "log": str(log)})}


def install_from_environment() -> bool:
    """Install the guard named in ``$LABKIT_GUARD``, if any (worker processes call this); True if installed."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    settings = json.loads(spec)
    install(settings["allowed"], settings["log"])
    return True
