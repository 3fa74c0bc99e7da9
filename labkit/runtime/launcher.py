"""``launch(fn, nodes)``: run one function on N local worker processes joined in a gloo process group.

The request is checked and the function pickled here; ``labkit.runtime.job`` runs the launch. Under
torchrun (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set) nothing is spawned: this process is one rank
and runs ``fn`` once (``labkit.runtime.torchrun``).
"""
from __future__ import annotations

import os

from ..errors import LabError
from . import torchrun
from .job import Job

MAX_LOCAL_NODES = 64
RPC_CALL_TIMEOUT = 120.0   # seconds one RPC call may go unanswered (rpc=True) before it fails


def launch(fn, nodes: int, *args, threads: int = 1, timeout: float = 600, rpc: bool | float = False,
           **kwargs) -> list:
    """Run ``fn(*args, **kwargs)`` on ``nodes`` gloo worker processes; return their values in rank order.

    Inside ``fn`` the default process group is initialised (gloo; ``rank()``/``world_size()`` tell who
    is who), and with ``rpc=True`` also torch.distributed.rpc, named "master" (rank 0) and "worker{k}";
    one RPC call that gets no answer within ``min(timeout, RPC_CALL_TIMEOUT)`` seconds fails (a number
    given as ``rpc`` sets that limit), so a stuck peer is an error, not a silent hang.
    Each worker uses ``threads`` torch threads. After ``timeout`` seconds every worker is stopped.
    A failing rank raises ``WorkerError``. Under torchrun, this process is one rank: ``fn`` runs
    once here, and the values of all ranks are gathered, so every rank gets the full list.
    """
    check_request(fn, nodes, threads, timeout)
    rpc = rpc_call_timeout(rpc, timeout)
    if os.name != "posix":
        raise LabError("labkit.launch runs on Linux and macOS; on Windows use WSL2.")
    if torchrun.under_torchrun():
        return torchrun.run_as_rank(fn, nodes, args, kwargs, threads, timeout, rpc)
    if nodes > MAX_LOCAL_NODES:
        raise LabError(f"nodes={nodes} is more than {MAX_LOCAL_NODES} local worker processes; "
                       "use fewer, or run on a cluster with torchrun.")
    return Job(nodes, threads, float(timeout), rpc, pack(fn, args, kwargs)).run()


def check_request(fn, nodes, threads, timeout) -> None:
    """A clear error for a launch that cannot work: fn not callable, nodes or threads < 1, timeout <= 0."""
    if not callable(fn):
        raise LabError(f"fn must be a function to run on every node, got {type(fn).__name__} {fn!r:.60}.")
    for name, value in (("nodes", nodes), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise LabError(f"timeout must be a positive number of seconds, got {timeout!r}.")


def rpc_call_timeout(rpc, timeout: float) -> float:
    """0.0 without RPC; else the seconds one RPC call may wait for its answer (``rpc`` if a number)."""
    if rpc is False or rpc is None:
        return 0.0
    if rpc is True:
        return float(min(timeout, RPC_CALL_TIMEOUT))
    if isinstance(rpc, bool) or not isinstance(rpc, (int, float)) or not rpc > 0:
        raise LabError(f"rpc must be True, False or the seconds one RPC call may take (> 0), got {rpc!r}.")
    return float(rpc)


def pack(fn, args, kwargs) -> bytes:
    """The function and its arguments as one cloudpickle (functions defined in a notebook cell too)."""
    import cloudpickle
    try:
        return cloudpickle.dumps((fn, args, kwargs))
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's argument
        raise LabError(f"cannot send {getattr(fn, '__name__', 'fn')} and its arguments to the workers: {exc}. "
                       "Pass plain data (numbers, strings, lists, dicts, tensors, configs).") from exc
