"""The worker side of ``labkit.launch``: the supervisor that starts the ranks, and each rank's life.

A launch runs ``python -c "...supervise()"`` once (a fresh interpreter: nothing of the notebook is
inherited). The supervisor imports torch once and forks the N ranks from that clean,
single-threaded state (the forkserver idea; 4 ranks are ready in about a second instead of four
torch imports), forwards their output line by line and reports how each one ended.
Each rank connects back to the parent, receives the pickled function, joins the gloo process
group (and RPC), runs it, returns its value and exits when the parent says so.
Also here: ``rank()``, ``world_size()`` and ``report(**metrics)`` for code running inside a rank.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import traceback

ENV_CONFIG = "LABKIT_LAUNCH"          # JSON with the parent's address, token and job settings
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_HEADER = struct.Struct("!I")
REPORT_INTERVAL = 0.1                 # seconds between progress messages of one rank

_channel = None                       # this rank's connection to the parent, when started by launch
_reporter = None


# ---------------------------------------------------------------- wire format (parent <-> ranks)

def send(sock: socket.socket, message, lock: threading.Lock | None = None) -> None:
    """Send one message: 4-byte length, then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    frame = _HEADER.pack(len(data)) + data
    if lock is None:
        sock.sendall(frame)
    else:
        with lock:
            sock.sendall(frame)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the parent closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket):
    """Receive one message sent with ``send`` (blocking)."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    return pickle.loads(_recv_exactly(sock, size))


def split_frames(buffer: bytearray) -> list:
    """Remove and return every complete message at the front of ``buffer`` (non-blocking reader)."""
    messages = []
    while len(buffer) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer)
        if len(buffer) < _HEADER.size + size:
            break
        messages.append(pickle.loads(bytes(buffer[_HEADER.size:_HEADER.size + size])))
        del buffer[:_HEADER.size + size]
    return messages


def _config() -> dict:
    return json.loads(os.environ[ENV_CONFIG])


def _connect(cfg: dict, hello: tuple) -> socket.socket:
    """Connect to the parent, prove we are its child (token), and introduce ourselves."""
    sock = socket.create_connection(tuple(cfg["address"]), timeout=30)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(cfg["token"].encode())
    send(sock, hello)
    return sock


# ---------------------------------------------------------------- never outlive the parent

def _die_with_parent(expected_parent: int) -> None:
    """Linux: the kernel SIGKILLs us when our parent dies. Elsewhere a watchdog thread does it."""
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != expected_parent:         # the parent died before prctl took effect
        os._exit(1)


def _watch_parent(expected_parent: int) -> None:
    """Portable back-up for PR_SET_PDEATHSIG: poll the parent pid (started after any fork)."""
    def watch():
        while os.getppid() == expected_parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="labkit-parent-watch", daemon=True).start()


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
        options = rpc.TensorPipeRpcBackendOptions(init_method="labkit-store://", rpc_timeout=timeout)
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

def _flush_std():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run_rank(rank: int) -> int:
    """Everything one rank does; returns its exit status. Used by both start methods."""
    global _channel, _reporter
    cfg = _config()
    os.environ["LABKIT_RANK"], os.environ["LABKIT_WORLD_SIZE"] = str(rank), str(cfg["nodes"])
    sock = _connect(cfg, ("hello", rank, os.getpid()))
    lock = threading.Lock()
    _channel = sock
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
        sys.path[:] = sys_path
        import cloudpickle  # noqa: F401  (the payload needs it to unpickle)
        import torch
        import torch.distributed as dist
        torch.set_num_threads(cfg["threads"])
        fn, args, kwargs = pickle.loads(payload)
        store = dist.TCPStore("127.0.0.1", cfg["store_port"], cfg["nodes"], is_master=False,
                              timeout=_timedelta(cfg["timeout"]))
        init_distributed(store, rank, cfg["nodes"], cfg["timeout"], cfg["rpc"])
        send(sock, ("ready", rank), lock)
        value = fn(*args, **kwargs)
        _reporter.flush()
        try:
            import cloudpickle
            result = cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"the return value of fn on rank {rank} ({type(value).__name__}) cannot be "
                            f"pickled: {exc}. Return plain data: numbers, lists, dicts, tensors.") from exc
        send(sock, ("result", rank, result), lock)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, then we exit
        _flush_std()
        try:
            send(sock, ("error", rank, format_failure(exc, rank)), lock)
        except OSError:
            pass
        return 1
    bye.wait()
    if cfg["rpc"]:
        shutdown_rpc(min(10.0, cfg["timeout"]))
    _flush_std()
    return 0


def _timedelta(seconds):
    from datetime import timedelta
    return timedelta(seconds=seconds)


def spawned_rank() -> None:
    """Entry point of a rank started as its own interpreter (the spawn fallback)."""
    _die_with_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
    _watch_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
    code = 1
    try:
        code = run_rank(int(os.environ["LABKIT_RANK"]))
    finally:
        _flush_std()
        os._exit(code)


# ---------------------------------------------------------------- the supervisor

def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _start_rank(rank: int, method: str, out_w: int, err_w: int, close_in_child: list):
    """Fork (or spawn) one rank with stdout/stderr on the given pipe ends; return its pid (or Popen)."""
    if method == "fork":
        _flush_std()
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
                _die_with_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
                _watch_parent(int(os.environ["LABKIT_SUPERVISOR_PID"]))
                code = run_rank(rank)
            finally:
                _flush_std()
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


def supervise() -> None:
    """Start the N ranks, forward their output, report each exit, reap everything, then exit."""
    cfg = _config()
    os.environ["LABKIT_SUPERVISOR_PID"] = str(os.getpid())
    _die_with_parent(cfg["parent_pid"])
    sock = _connect(cfg, ("hello", "supervisor", os.getpid()))
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
    _watch_parent(cfg["parent_pid"])

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
    _flush_std()
    os._exit(0)
