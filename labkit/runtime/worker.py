"""Life of one rank of a launch: connect to the parent, receive the function, join the process group
(and RPC), run it, send back its value or its traceback, and exit when the parent says so.

The supervisor forks ranks from its clean interpreter (``run_rank``); where it cannot fork, each rank
is its own interpreter that runs ``spawned_rank``.
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
from datetime import timedelta

from . import context, group, guard
from .channel import config, connect, die_with_parent, recv, send, watch_parent
from .protocol import Bye, Crash, Error, Hello, Ready, Report, Result


def flush_std():
    """Push buffered output into the pipes before a fork or an exit (os._exit skips it)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run_rank(rank: int) -> int:
    """Everything one rank does; returns its exit status. Used by both start methods."""
    cfg = config()
    os.environ["LABKIT_RANK"], os.environ["LABKIT_WORLD_SIZE"] = str(rank), str(cfg["nodes"])
    sock = connect(cfg, Hello(rank, os.getpid()))
    lock = threading.Lock()
    reporter = context.Reporter(lambda metrics: send(sock, Report(rank, metrics), lock))
    context.use_reporter(reporter)
    bye = threading.Event()

    def listen():  # the parent only ever says Bye; losing it means we must stop
        try:
            while not isinstance(recv(sock), Bye):
                pass
            bye.set()
        except (EOFError, OSError):
            os._exit(3)

    try:
        setup = recv(sock)
        threading.Thread(target=listen, name="labkit-listen", daemon=True).start()
        sys.path[:] = setup.sys_path  # import what the parent can import, from where it runs
        os.chdir(setup.cwd)
        import cloudpickle  # the payload needs it to unpickle
        import torch.distributed as dist
        group.prepare_process(cfg["threads"])
        fn, args, kwargs = pickle.loads(setup.payload)
        store = dist.TCPStore("127.0.0.1", cfg["store_port"], cfg["nodes"], is_master=False,
                              timeout=timedelta(seconds=cfg["timeout"]))
        group.init_distributed(store, rank, cfg["nodes"], cfg["timeout"], cfg["rpc"])
        send(sock, Ready(rank), lock)
        guard.install_from_environment()  # graded student code: no writes outside its folder
        value = fn(*args, **kwargs)
        reporter.flush()
        try:
            result = cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"the return value of fn on rank {rank} ({type(value).__name__}) cannot be "
                            f"pickled: {exc}. Return plain data: numbers, lists, dicts, tensors.") from exc
        send(sock, Result(rank, result), lock)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, then we exit
        flush_std()
        try:
            send(sock, Error(rank, Crash.of(exc)), lock)
        except OSError:
            pass
        return 1
    bye.wait()
    if cfg["rpc"]:
        group.shutdown_rpc(min(10.0, cfg["timeout"]))
    flush_std()
    return 0


def spawned_rank() -> None:
    """Entry point of a rank started as its own interpreter (the spawn fallback)."""
    supervisor = int(os.environ["LABKIT_SUPERVISOR_PID"])
    die_with_parent(supervisor)
    watch_parent(supervisor)
    code = 1
    try:
        code = run_rank(int(os.environ["LABKIT_RANK"]))
    finally:
        flush_std()
        os._exit(code)
