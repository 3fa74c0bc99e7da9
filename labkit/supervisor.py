"""The supervisor: one fresh interpreter per launch that starts the ranks and reports how they end.

It imports torch once and forks the N ranks from that clean, single-threaded state (the forkserver
idea: 4 ranks join in about a second instead of four torch imports), or, where forking is not safe
(macOS, or ``LABKIT_START_METHOD=spawn``), starts each rank as its own interpreter. It forwards the
ranks' output line by line, reaps every process (it is their subreaper), tells the parent each exit
status, and kills the ranks if the parent goes away.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from .channel import config, connect, die_with_parent, send, watch_parent
from .worker import flush_std, run_rank


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _start_rank(rank: int, method: str, out_w: int, err_w: int, close_in_child: list):
    """Fork (or spawn) one rank with stdout/stderr on the given pipe ends; return its pid (or Popen)."""
    if method == "fork":
        flush_std()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for fd in close_in_child:
                    os.close(fd)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.close(out_w)
                os.close(err_w)
                die_with_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
                watch_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
                code = run_rank(rank)
            finally:
                flush_std()
                os._exit(code)
        return pid
    import subprocess
    env = {**os.environ, "LABKIT_RANK": str(rank)}
    proc = subprocess.Popen([sys.executable, "-c", "from labkit import worker; worker.spawned_rank()"],
                            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=env)
    return proc  # keep the Popen alive: a collected Popen may reap our child behind waitpid's back


def _forward_lines(fd: int, rank: int, stream: str, sock, lock) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for line in iter(lambda: pipe.readline(65536), b""):
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            try:
                send(sock, ("line", rank, stream, text), lock)
            except OSError:
                return


def main() -> None:
    """Start the N ranks, forward their output, report each exit, reap everything, then exit."""
    cfg = config()
    os.environ["LABKIT_SUPERVISOR_PID"] = str(os.getpid())
    die_with_parent(cfg["parent_pid"])
    sock = connect(cfg, ("hello", "supervisor", os.getpid()))
    lock = threading.Lock()
    import cloudpickle  # noqa: F401  - preload what every rank needs, once
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401
    if cfg["rpc"]:
        import torch.distributed.rpc  # noqa: F401
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of ranks come to us
    method = cfg["start"]
    if method == "fork" and _thread_count() > 1:
        method = "spawn"  # forking a multi-threaded process is unsafe; fall back
    pids, readers, read_ends, popens = {}, {}, [], []
    for r in range(cfg["nodes"]):  # no thread may exist while we fork: readers start afterwards
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        started = _start_rank(r, method, out_w, err_w, read_ends + [out_r, err_r, sock.fileno()])
        if not isinstance(started, int):
            popens.append(started)
            started = started.pid
        os.close(out_w)
        os.close(err_w)
        read_ends += [out_r, err_r]
        pids[started] = r
        send(sock, ("started", r, started), lock)
        readers[r] = [threading.Thread(target=_forward_lines, args=(fd, r, name, sock, lock), daemon=True)
                      for fd, name in ((out_r, "stdout"), (err_r, "stderr"))]
    for t in (t for pair in readers.values() for t in pair):
        t.start()
    watch_parent(cfg["parent_pid"])

    def kill_all_if_parent_leaves():
        try:
            while sock.recv(1024):
                pass
        except OSError:
            pass
        for pid in list(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    threading.Thread(target=kill_all_if_parent_leaves, daemon=True).start()

    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid in pids:
            r = pids.pop(pid)
            for t in readers[r]:
                t.join(timeout=1.0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            try:
                send(sock, ("exit", r, code), lock)
            except OSError:
                pass
        if not pids:  # every rank is gone: stop stray descendants, then reap them too
            import psutil
            for child in psutil.Process().children(recursive=True):
                try:
                    child.kill()
                except psutil.Error:
                    pass
    try:
        send(sock, ("done",), lock)
    except OSError:
        pass
    flush_std()
    os._exit(0)
