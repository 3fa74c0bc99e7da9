"""The warm interpreter: one clean, single-threaded Python per parent that has imported torch once and
forks each launch's supervisor (the forkserver idea), so a launch no longer pays ``import torch``.

It starts with the first launch (or ahead of time, ``processes.start_ahead``), lives in its own session (Ctrl-C
and Jupyter's Stop reach only the parent), exits as soon as its parent is gone, and is started again
if it died. A supervisor it forks gets its own session, the launch's environment and working folder,
and exactly the fresh state a cold supervisor has; it is handed back as ``ForkedProcess``, which does
what ``Job`` needs of a ``Popen``. Linux only; ``LABKIT_WARM=0`` or the spawn start method turn it off,
and each launch then starts a fresh supervisor (as on macOS).
"""
from __future__ import annotations

import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time

ENV_WARM = "LABKIT_WARM"
MARK = "labkit.runtime.warm"      # in the warm interpreter's command line: how process checks know it
_ENV_FD = "LABKIT_WARM_FD"
_REPLY_TIMEOUT = 120.0            # the first reply waits for ``import torch``
# Imported once here, so no rank imports them again: what every rank needs, and the costly libraries a
# rank of this lab's code uses (DistributedOptimizer alone pulls in FSDP and sympy, ~0.8 s). Third-party
# only: the user's and labkit's own modules are imported fresh by each launch.
PRELOAD = ("cloudpickle", "numpy", "pandas", "torch", "torch.nn.functional", "torch.optim", "torch.distributed",
           "torch.distributed.rpc", "torch.distributed.autograd", "torch.distributed.optim", "torch.nn.parallel")
_servers: dict = {}
_servers_lock = threading.Lock()


def enabled(start_method: str) -> bool:
    return sys.platform.startswith("linux") and start_method == "fork" and os.environ.get(ENV_WARM, "1") != "0"


def is_warm_interpreter(proc) -> bool:
    """True for a ``psutil.Process`` that is some parent's warm interpreter (not part of any launch).

    What it forks keeps its command line, so the warm interpreter is the marked process whose parent is not.
    """
    try:
        return _marked(proc) and not _marked(proc.parent())
    except Exception:  # noqa: BLE001 - gone meanwhile
        return False


def _marked(proc) -> bool:
    return proc is not None and MARK in " ".join(proc.cmdline())


class ForkedProcess:
    """A supervisor forked by the warm interpreter: ``pid``, ``poll``, ``wait`` and ``returncode`` like Popen."""

    def __init__(self, server: "WarmInterpreter", pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self):
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, wait=0.0)
        return self.returncode

    def wait(self, timeout: float | None = None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired("supervisor", timeout)
            self.returncode = self.server.exit_code(self.pid, wait=0.1)
        return self.returncode


class WarmInterpreter:
    """The parent's end: start the interpreter, ask it to fork, hear how its children ended."""

    def __init__(self, env: dict):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import {MARK}; {MARK}.serve()"],
            env={**env, _ENV_FD: str(theirs.fileno())}, pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self.pid, self.executable = self.proc.pid, sys.executable
        self.lock, self.exits, self.replies, self.dead = threading.Lock(), {}, {}, False
        self.next_request = 0

    def alive(self) -> bool:
        return not self.dead and self.proc.poll() is None

    def fork(self, entry, env: dict, log) -> ForkedProcess:
        """Fork ``entry()`` (a module-level function) with ``env``, this folder, and stderr into ``log``."""
        with self.lock:
            self.next_request += 1
            request = self.next_request
            message = pickle.dumps((request, entry.__module__, entry.__name__, env, os.getcwd()))
            try:
                socket.send_fds(self.sock, [message], [log.fileno()])
            except OSError:
                self.dead = True
                raise
        end = time.monotonic() + _REPLY_TIMEOUT
        while request not in self.replies:
            if self.dead or time.monotonic() >= end:
                self.dead = True
                raise OSError("the warm interpreter did not answer")
            with self.lock:
                self._read(0.1)
        kind, value = self.replies.pop(request)
        if kind != "started":
            raise OSError(f"the warm interpreter could not fork: {value}")
        return ForkedProcess(self, value)

    def exit_code(self, pid: int, wait: float):
        """The exit status of a forked supervisor, or None while it runs (-9 if the interpreter died under it)."""
        with self.lock:
            if pid not in self.exits and not self.dead:
                self._read(wait)
            if pid not in self.exits and self.dead and not _running(pid):
                self.exits[pid] = -9
            return self.exits.get(pid)

    def _read(self, wait: float) -> None:
        """Read every message already there (waiting up to ``wait`` s for the first)."""
        while select.select([self.sock], [], [], wait)[0]:
            wait = 0.0
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.dead = True
                return
            kind, key, value = pickle.loads(data)
            if kind == "exit":
                self.exits[key] = value
            else:
                self.replies[key] = (kind, value)

    def stop(self) -> None:
        self.dead = True
        self.sock.close()
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _running(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def interpreter(env: dict) -> WarmInterpreter:
    """This parent's warm interpreter, started (again) if there is none alive; ``env`` is its environment."""
    key = os.getpid()
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive() or server.executable != sys.executable:
            if server is not None:
                server.stop()
            server = _servers[key] = WarmInterpreter(env)
        return server


# ---------------------------------------------------------------- the warm interpreter's side

def serve() -> None:
    """Import what every supervisor and rank needs, then fork a supervisor per request until the parent goes."""
    import signal
    sock = socket.socket(fileno=int(os.environ.pop(_ENV_FD)))
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent's launch, not for us
    import importlib
    for module in PRELOAD + tuple(f"{__package__}.{m}" for m in ("supervisor", "worker")):
        importlib.import_module(module)  # (ours by name: they import this module)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through wake_w
    while os.getppid() == parent:
        ready = select.select([sock, wake_r], [], [], 0.5)[0]
        if wake_r in ready:
            os.read(wake_r, 4096)
        _report_exits(sock)
        if sock in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
            except OSError:
                data = b""
            if not data:
                break
            request = pickle.loads(data)
            try:
                pid = _fork_supervisor(request, fds[0], [sock.fileno(), wake_r, wake_w])
                reply = ("started", request[0], pid)
            except Exception as exc:  # noqa: BLE001 - tell the parent, which falls back to a cold start
                reply = ("failed", request[0], repr(exc))
            for fd in fds:
                os.close(fd)
            sock.send(pickle.dumps(reply))
    os._exit(0)


def _report_exits(sock) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        try:
            sock.send(pickle.dumps(("exit", pid, code)))
        except OSError:
            pass


def _fork_supervisor(request, log_fd: int, close: list) -> int:
    import signal
    _, module, name, env, cwd = request
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: a fresh session, the launch's environment, defaults for every signal we changed
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in close:
            os.close(fd)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for target, source in ((0, null), (1, null), (2, log_fd)):
            os.dup2(source, target)
        os.close(null)
        if log_fd > 2:
            os.close(log_fd)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        import importlib
        getattr(importlib.import_module(module), name)()
        code = 0
    except BaseException:  # noqa: BLE001 - into the launch's log, where the parent reads it
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)
