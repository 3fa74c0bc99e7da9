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
import subprocess
import sys
import threading

from . import worker
from .channel import config, connect, die_with_parent, send, watch_parent
from .processes import python_command
from .protocol import Done, Exit, Hello, Line, Started


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _fork_rank(rank: int, out_w: int, err_w: int, close_in_child: list) -> int:
    """Fork one rank with stdout/stderr on the given pipe ends; return its pid."""
    worker.flush_std()
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
            code = worker.run_rank(rank)
        finally:
            worker.flush_std()
            os._exit(code)
    return pid


def _spawn_rank(rank: int, out_w: int, err_w: int) -> subprocess.Popen:
    """Start one rank as its own interpreter; keep the Popen alive (a collected Popen may reap our
    child behind waitpid's back)."""
    env = {**os.environ, "LABKIT_RANK": str(rank)}
    return subprocess.Popen(python_command(worker.spawned_rank), stdin=subprocess.DEVNULL,
                            stdout=out_w, stderr=err_w, env=env)


def _forward_lines(fd: int, rank: int, stream: str, sock, lock) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for line in iter(lambda: pipe.readline(65536), b""):
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            try:
                send(sock, Line(rank, stream, text), lock)
            except OSError:
                return


def _kill_all_if_parent_leaves(sock, pids: dict) -> None:
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


def _reap(pids: dict, readers: dict, sock, lock) -> None:
    """Wait for every child; report each rank's exit; once all ranks are gone, kill stray descendants."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid in pids:
            r = pids.pop(pid)
            for t in readers[r]:
                t.join(timeout=1.0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            try:
                send(sock, Exit(r, code), lock)
            except OSError:
                pass
        if not pids:  # every rank is gone: stop stray descendants, then reap them too
            import psutil
            for child in psutil.Process().children(recursive=True):
                try:
                    child.kill()
                except psutil.Error:
                    pass


def main() -> None:
    """Start the N ranks, forward their output, report each exit, reap everything, then exit."""
    cfg = config()
    os.environ["LABKIT_SUPERVISOR_PID"] = str(os.getpid())
    die_with_parent(cfg["parent_pid"])
    sock = connect(cfg, Hello("supervisor", os.getpid()))
    lock = threading.Lock()
    import cloudpickle  # noqa: F401  - preload what every rank needs, once
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401
    if cfg["rpc"]:
        import torch.distributed.rpc  # noqa: F401
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of ranks come to us
    fork = cfg["start"] == "fork" and _thread_count() == 1  # forking a multi-threaded process is unsafe
    pids, readers, read_ends, popens = {}, {}, [], []
    for r in range(cfg["nodes"]):  # no thread may exist while we fork: readers start afterwards
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if fork:
            pid = _fork_rank(r, out_w, err_w, read_ends + [out_r, err_r, sock.fileno()])
        else:
            popens.append(_spawn_rank(r, out_w, err_w))
            pid = popens[-1].pid
        os.close(out_w)
        os.close(err_w)
        read_ends += [out_r, err_r]
        pids[pid] = r
        send(sock, Started(r, pid), lock)
        readers[r] = [threading.Thread(target=_forward_lines, args=(fd, r, name, sock, lock), daemon=True)
                      for fd, name in ((out_r, "stdout"), (err_r, "stderr"))]
    for t in (t for pair in readers.values() for t in pair):
        t.start()
    watch_parent(cfg["parent_pid"])
    threading.Thread(target=_kill_all_if_parent_leaves, args=(sock, pids), daemon=True).start()
    _reap(pids, readers, sock, lock)
    try:
        send(sock, Done(), lock)
    except OSError:
        pass
    worker.flush_std()
    os._exit(0)
