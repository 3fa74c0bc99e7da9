"""Life of one rank of a launch, and the helpers for code running inside a rank.

A rank connects to the parent, receives the pickled function, joins the gloo process group (and
RPC), runs the function, sends back its value or its traceback, and exits when the parent says so.
``rank()``, ``world_size()`` and ``report(**metrics)`` work under ``labkit.launch`` and under torchrun.
"""
from __future__ import annotations

import os
import pickle
import socket
import sys
import threading
import time
import traceback

from . import allocator
from .channel import config, connect, die_with_parent, recv, send, watch_parent

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
REPORT_INTERVAL = 0.1                 # seconds between progress messages of one rank

_reporter = None                      # set in ranks started by launch


# ---------------------------------------------------------------- helpers for code inside a rank

def rank() -> int:
    """This process's rank: from the process group if it is up, else the launcher's or torchrun's env; 0 outside."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("LABKIT_RANK", os.environ.get("RANK", 0)))


def world_size() -> int:
    """Number of ranks in the job (1 outside a launch)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("LABKIT_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))


def rpc_name(rank: int) -> str:
    """RPC worker name of a rank in ``rpc=True`` launches: rank 0 is "master", rank k is "worker{k}"."""
    return "master" if rank == 0 else f"worker{rank}"


def _plain(value):
    """Metrics travel as plain numbers or short strings (tensors and numpy scalars are unwrapped)."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: getattr(value, "size", 1))() == 1:
        value = value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)[:40]


class _Reporter:
    """Coalesces ``report`` calls; a background thread sends the newest metrics every 0.1 s."""

    def __init__(self, send_fn):
        self._send, self._latest, self._lock = send_fn, None, threading.Lock()
        self._event = threading.Event()
        threading.Thread(target=self._run, name="labkit-report", daemon=True).start()

    def put(self, metrics: dict) -> None:
        with self._lock:
            self._latest = metrics if self._latest is None else {**self._latest, **metrics}
        self._event.set()

    def flush(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            self._send(latest)

    def _run(self):
        while True:
            self._event.wait()
            self._event.clear()
            try:
                self.flush()
            except OSError:
                return
            time.sleep(REPORT_INTERVAL)


_last_print = [0.0]


def report(**metrics) -> None:
    """Publish progress metrics (e.g. step, total, epoch, loss, acc) of this rank; cheap, never blocks.

    Under ``labkit.launch`` they drive the per-node bars in the notebook; under torchrun they are
    printed every few seconds; in a plain process they are ignored.
    """
    clean = {str(k): _plain(v) for k, v in metrics.items()}
    if _reporter is not None:
        _reporter.put(clean)
    elif all(v in os.environ for v in TORCHRUN_VARS):
        now = time.monotonic()
        if now - _last_print[0] >= 5 or clean.get("step") == clean.get("total", object()):
            _last_print[0] = now
            print(f"[rank {rank()}] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in clean.items()), flush=True)


# ---------------------------------------------------------------- joining the process group (and RPC)

_rpc_store = [None]


def _store_rendezvous(url, **kwargs):
    """Rendezvous handler for RPC: hand TensorPipe the store the process group already uses."""
    import torch.distributed as dist
    yield dist.PrefixStore("labkit/rpc", _rpc_store[0]), kwargs.get("rank", -1), kwargs.get("world_size", -1)


def prepare_process(threads: int) -> None:
    """What every training process does first: its torch threads, and glibc keeping freed memory."""
    import torch
    torch.set_num_threads(threads)
    allocator.tune()


def init_distributed(store, rank: int, world: int, timeout: float, use_rpc: bool) -> None:
    """Join the gloo process group on ``store``; with ``use_rpc`` also start TensorPipe RPC on it."""
    from datetime import timedelta

    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.PrefixStore("labkit/pg", store), rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout))
    if use_rpc:
        import importlib

        from torch.distributed import rpc
        if _rpc_store[0] is None:  # (torch.distributed.rendezvous the attribute is a function, hence importlib)
            importlib.import_module("torch.distributed.rendezvous").register_rendezvous_handler(
                "labkit-store", _store_rendezvous)
        _rpc_store[0] = store
        # TCP (libuv) only: TensorPipe's shared-memory transport busy-polls a reactor thread per
        # process, which on a 2-core laptop took ~30 % of a core from the stages that compute
        # (pipelining m=4 on the balanced mlp: 1.15x with it, 1.47x without). uv also works across machines.
        options = rpc.TensorPipeRpcBackendOptions(init_method="labkit-store://", rpc_timeout=timeout,
                                                  _transports=["uv"])
        import warnings
        with warnings.catch_warnings():  # torch's own RPC start-up trips its ProcessGroup deprecation warning
            warnings.filterwarnings("ignore", message="You are using a Backend .* as a ProcessGroup")
            rpc.init_rpc(rpc_name(rank), rank=rank, world_size=world, rpc_backend_options=options)


def shutdown_rpc(timeout: float, graceful: bool = True) -> None:
    """RPC shutdown (graceful: wait for the other ranks) that never blocks for longer than ``timeout`` (+1 s)."""
    from torch.distributed import rpc
    done = threading.Event()

    def stop():
        try:
            rpc.shutdown(graceful=graceful, timeout=timeout)
        except Exception:  # noqa: BLE001 - a failed goodbye must not hide the results
            pass
        done.set()
    threading.Thread(target=stop, name="labkit-rpc-shutdown", daemon=True).start()
    done.wait(timeout + 1)


def format_failure(exc: BaseException, rank: int) -> dict:
    """What the parent needs to explain a failed rank: exception type, message, traceback text."""
    return {"rank": rank, "type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)), "host": socket.gethostname(),
            "time": time.time()}


# ---------------------------------------------------------------- one rank

def flush_std():
    """Push buffered output into the pipes before a fork or an exit (os._exit skips it)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run_rank(rank: int) -> int:
    """Everything one rank does; returns its exit status. Used by both start methods."""
    global _reporter
    cfg = config()
    os.environ["LABKIT_RANK"], os.environ["LABKIT_WORLD_SIZE"] = str(rank), str(cfg["nodes"])
    sock = connect(cfg, ("hello", rank, os.getpid()))
    lock = threading.Lock()
    _reporter = _Reporter(lambda metrics: send(sock, ("report", rank, metrics), lock))
    bye = threading.Event()

    def listen():  # the parent only ever says "bye"; losing it means we must stop
        try:
            while recv(sock) != ("bye",):
                pass
            bye.set()
        except (EOFError, OSError):
            os._exit(3)

    try:
        sys_path, cwd, payload = recv(sock)
        threading.Thread(target=listen, name="labkit-listen", daemon=True).start()
        sys.path[:] = sys_path  # import what the parent can import, from where it runs
        os.chdir(cwd)
        import cloudpickle  # the payload needs it to unpickle
        import torch
        import torch.distributed as dist
        prepare_process(cfg["threads"])
        fn, args, kwargs = pickle.loads(payload)
        store = dist.TCPStore("127.0.0.1", cfg["store_port"], cfg["nodes"], is_master=False,
                              timeout=_timedelta(cfg["timeout"]))
        init_distributed(store, rank, cfg["nodes"], cfg["timeout"], cfg["rpc"])
        send(sock, ("ready", rank), lock)
        value = fn(*args, **kwargs)
        _reporter.flush()
        try:
            result = cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"the return value of fn on rank {rank} ({type(value).__name__}) cannot be "
                            f"pickled: {exc}. Return plain data: numbers, lists, dicts, tensors.") from exc
        send(sock, ("result", rank, result), lock)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, then we exit
        flush_std()
        try:
            send(sock, ("error", rank, format_failure(exc, rank)), lock)
        except OSError:
            pass
        return 1
    bye.wait()
    if cfg["rpc"]:
        shutdown_rpc(min(10.0, cfg["timeout"]))
    flush_std()
    return 0


def _timedelta(seconds):
    from datetime import timedelta
    return timedelta(seconds=seconds)


def spawned_rank() -> None:
    """Entry point of a rank started as its own interpreter (the spawn fallback)."""
    die_with_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
    watch_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
    code = 1
    try:
        code = run_rank(int(os.environ["LABKIT_RANK"]))
    finally:
        flush_std()
        os._exit(code)
