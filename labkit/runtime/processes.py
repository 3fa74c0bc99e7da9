"""Starting a launch's supervisor in a clean environment, and killing every process of a launch.

The supervisor gets its own session (so one ``killpg`` reaches whatever it left), the launch's
settings in ``$LABKIT_LAUNCH``, one thread per rank for torch and BLAS, and no torchrun variables
(a launch from inside a torchrun job must not think it is one rank of that job).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from . import warm
from .channel import ENV_CONFIG
from .context import TORCHRUN_VARS

_NOT_INHERITED = set(TORCHRUN_VARS) | {"LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID"}


def loopback_interface() -> str:
    """The name of the interface that holds 127.0.0.1 (gloo and TensorPipe must use it)."""
    import psutil
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == "127.0.0.1" for a in addresses):
            return name
    return "lo"


def start_method() -> str:
    """fork on Linux (ranks forked from the supervisor's clean state), spawn elsewhere or when asked."""
    return os.environ.get("LABKIT_START_METHOD") or ("fork" if sys.platform.startswith("linux") else "spawn")


def supervisor_environment(config: dict, threads: int) -> dict:
    """The parent's environment without torchrun's variables, plus the launch's settings."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    loopback = loopback_interface()
    env.update({
        ENV_CONFIG: json.dumps(config),
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": loopback, "TP_SOCKET_IFNAME": loopback,
    })
    return env


def python_command(entry) -> list[str]:
    """The command that runs ``entry()`` (a module-level function) in a fresh interpreter."""
    return [sys.executable, "-c", f"from {entry.__module__} import {entry.__name__}; {entry.__name__}()"]


def start_supervisor(entry, config: dict, threads: int, log):
    """Start the supervisor (``entry``) in its own session; its stderr goes to ``log`` (kept for error messages).

    Forked by this parent's warm interpreter where there is one (``labkit.runtime.warm``), else a fresh
    interpreter (a ``Popen``); if the warm interpreter cannot fork, the fresh one is the fall-back.
    """
    if warm.enabled(config["start"]):
        try:
            server = warm.interpreter(supervisor_environment({}, 1))
            return server.fork(entry, supervisor_environment({**config, "parent_pid": server.pid}, threads), log)
        except OSError:
            pass
    return subprocess.Popen(python_command(entry),
                            env=supervisor_environment({**config, "parent_pid": os.getpid()}, threads),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def start_ahead() -> None:
    """Start this parent's warm interpreter now (if launches use one), so the first launch finds torch imported."""
    if warm.enabled(start_method()):
        warm.interpreter(supervisor_environment({}, 1))


def kill_ranks(proc: subprocess.Popen, rank_procs) -> None:
    """SIGKILL every rank and whatever the supervisor started (psutil checks that a pid was not reused)."""
    import psutil
    try:
        victims = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        victims = []
    for p in list(rank_procs) + victims:
        try:
            p.kill()
        except psutil.Error:
            pass


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the supervisor's whole session (it, and anything left in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
