"""``launch(fn, nodes)``: run one function on N local worker processes joined in a gloo process group.

The parent (a notebook or a script) hosts the rendezvous store and a control socket on 127.0.0.1,
starts one supervisor interpreter (see ``labkit.worker``) in its own session, and then only
listens: output lines, progress reports, results and failures arrive as messages. Whatever
happens (an exception in a rank, a killed rank, the timeout, the Stop button) every process of the
launch is killed and reaped before ``launch`` returns or raises, and its ports are closed.
Under torchrun (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set) nothing is spawned: this process is
one rank and runs ``fn`` once.
"""
from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

from . import worker
from .errors import LabError
from .worker import rank, report, rpc_name, world_size  # noqa: F401  (the API used inside workers)

__all__ = ["launch", "WorkerError", "rank", "world_size", "report", "rpc_name", "under_torchrun"]

MAX_LOCAL_NODES = 64
FAILURE_WINDOW = 0.3        # seconds to keep listening after the first failure (to see what else broke)
EXIT_GRACE = 5.0            # seconds ranks get to exit after every result is in (RPC: graceful shutdown)
LOST_RANK_GRACE = 2.0       # a rank whose connection dropped without an exit report counts as failed after this


class WorkerError(LabError):
    """One or more ranks failed: ``ranks`` (the first is the cause), ``reason``, ``tracebacks``, ``exitcodes``."""

    def __init__(self, message: str, ranks: list[int], reason: str, tracebacks: dict | None = None,
                 exitcodes: dict | None = None):
        super().__init__(message)
        self.ranks, self.reason = list(ranks), reason
        self.tracebacks, self.exitcodes = dict(tracebacks or {}), dict(exitcodes or {})


def under_torchrun() -> bool:
    """True when this process was started by torchrun (or any env:// launcher) as one rank of a job."""
    return all(v in os.environ for v in worker.TORCHRUN_VARS) and worker.ENV_CONFIG not in os.environ


def launch(fn, nodes: int, *args, threads: int = 1, timeout: float = 600, rpc: bool = False, **kwargs) -> list:
    """Run ``fn(*args, **kwargs)`` on ``nodes`` gloo worker processes; return their values in rank order.

    Inside ``fn`` the default process group is initialised (gloo; ``rank()``/``world_size()`` tell who
    is who), and with ``rpc=True`` also torch.distributed.rpc, named "master" (rank 0) and "worker{k}".
    Each worker uses ``threads`` torch threads. After ``timeout`` seconds every worker is stopped.
    A failing rank raises ``WorkerError``. Under torchrun, this process is one rank: ``fn`` runs
    once here, and the values of all ranks are gathered, so every rank gets the full list.
    """
    _check_request(fn, nodes, threads, timeout)
    if under_torchrun():
        return _run_as_torchrun_rank(fn, nodes, args, kwargs, threads, timeout, rpc)
    if nodes > MAX_LOCAL_NODES:
        raise LabError(f"nodes={nodes} is more than {MAX_LOCAL_NODES} local worker processes; "
                       "use fewer, or run on a cluster with torchrun.")
    return _Job(nodes, threads, float(timeout), bool(rpc), _pack(fn, args, kwargs)).run()


def _check_request(fn, nodes, threads, timeout) -> None:
    if not callable(fn):
        raise LabError(f"fn must be a function to run on every node, got {type(fn).__name__} {fn!r:.60}.")
    for name, value in (("nodes", nodes), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise LabError(f"timeout must be a positive number of seconds, got {timeout!r}.")


def _pack(fn, args, kwargs) -> bytes:
    import cloudpickle
    try:
        return cloudpickle.dumps((fn, args, kwargs))
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's argument
        raise LabError(f"cannot send {getattr(fn, '__name__', 'fn')} and its arguments to the workers: {exc}. "
                       "Pass plain data (numbers, strings, lists, dicts, tensors, configs).") from exc


def _loopback_interface() -> str:
    import psutil
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == "127.0.0.1" for a in addresses):
            return name
    return "lo"


class _Peer:
    """One authenticated connection: the supervisor or a rank."""

    def __init__(self):
        self.buffer, self.authed, self.rank, self.lost_at = bytearray(), False, None, None


class _Job:
    """One launch from start to cleanup; ``run`` returns the values or raises WorkerError."""

    def __init__(self, nodes: int, threads: int, timeout: float, rpc: bool, payload: bytes):
        self.nodes, self.threads, self.timeout, self.rpc, self.payload = nodes, threads, timeout, rpc, payload
        self.token = secrets.token_hex(16)
        self.results, self.exits, self.pids, self.ready = {}, {}, {}, {}
        self.failures = []          # dicts: rank, kind (exception/signal/exit/lost/timeout/launcher), ...
        self.peers, self.rank_socks = {}, {}
        self.proc = self.store = self.listener = self.selector = self.progress = None
        self.supervisor_done = self.bye_sent = self.stopping = False
        self.started = time.monotonic()

    # ------------------------------------------------------------ lifecycle

    def run(self) -> list:
        interrupted = False
        try:
            self._start()
            self._loop()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            interrupted |= self._cleanup()
            if interrupted:
                print(f"[launch] interrupted: all {self.nodes} workers were stopped.", file=sys.stderr, flush=True)
        if interrupted:
            raise KeyboardInterrupt
        if self.failures:
            raise self._error()
        return self._values()

    def _start(self) -> None:
        import torch.distributed as dist
        self.store = dist.TCPStore("127.0.0.1", 0, None, True, timeout=timedelta(seconds=self.timeout),
                                   wait_for_workers=False)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=self.nodes + 4)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.supervisor_log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from labkit import worker; worker.supervise()"],
            env=self._environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.supervisor_log, start_new_session=True)

    def _environment(self) -> dict:
        drop = set(worker.TORCHRUN_VARS) | {"LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_RUN_ID"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        method = os.environ.get("LABKIT_START_METHOD") or ("fork" if sys.platform.startswith("linux") else "spawn")
        config = {"address": self.listener.getsockname()[:2], "token": self.token, "nodes": self.nodes,
                  "threads": self.threads, "timeout": self.timeout, "rpc": self.rpc, "start": method,
                  "store_port": self.store.port, "parent_pid": os.getpid()}
        loopback = _loopback_interface()
        env.update({
            worker.ENV_CONFIG: json.dumps(config),
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
            "OPENBLAS_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": loopback, "TP_SOCKET_IFNAME": loopback,
        })
        return env

    # ------------------------------------------------------------ the event loop

    def _loop(self) -> None:
        deadline, exit_deadline = self.started + self.timeout, None
        while True:
            now = time.monotonic()
            if self.failures and now >= self.failures[0]["seen"] + FAILURE_WINDOW:
                return
            if len(self.results) == self.nodes:
                if not self.bye_sent:
                    self._say_bye()
                    exit_deadline = now + EXIT_GRACE + (10 if self.rpc else 0)
                if self.supervisor_done or now >= exit_deadline:
                    return
            elif now >= deadline and not self.failures:
                unfinished = [r for r in range(self.nodes) if r not in self.results]
                self._fail(unfinished[0], "timeout", unfinished=unfinished)
            self._check_lost(now)
            if self.proc.poll() is not None and not self.supervisor_done and not self.failures:
                self._fail(None, "launcher", code=self.proc.returncode)
            self._pump(0.05)

    def _pump(self, wait: float) -> None:
        for key, _ in self.selector.select(timeout=wait):
            if key.fileobj is self.listener:
                self._accept()
            else:
                self._read(key.fileobj)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.peers[conn] = _Peer()
        self.selector.register(conn, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        peer = self.peers[sock]
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            if peer.rank is not None and peer.rank not in self.results and peer.rank not in self.exits:
                peer.lost_at = time.monotonic()
            return
        peer.buffer += data
        if not peer.authed:
            if len(peer.buffer) < len(self.token):
                return
            if not hmac.compare_digest(bytes(peer.buffer[:len(self.token)]), self.token.encode()):
                self._drop(sock)  # not one of ours
                return
            del peer.buffer[:len(self.token)]
            peer.authed = True
        for message in worker.split_frames(peer.buffer):
            self._on_message(sock, peer, message)

    def _drop(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        if self.peers.get(sock) and self.peers[sock].rank is None:
            self.peers.pop(sock)

    def _on_message(self, sock, peer: _Peer, message: tuple) -> None:
        kind = message[0]
        if kind == "hello":
            if message[1] != "supervisor":
                peer.rank = message[1]
                self.rank_socks[peer.rank] = sock
                self._send(sock, (list(sys.path), os.getcwd(), self.payload))
        elif kind == "started":
            self.pids[message[1]] = message[2]
        elif kind == "line":
            self._print(*message[1:])
        elif kind == "report":
            self._report(*message[1:])
        elif kind == "ready":
            self.ready[message[1]] = time.monotonic()
        elif kind == "result":
            self.results[message[1]] = message[2]
        elif kind == "error":
            info = message[2]
            self._fail(message[1], "exception", **info)
        elif kind == "exit":
            r, code = message[1], message[2]
            self.exits[r] = code
            has_error = any(f["rank"] == r for f in self.failures)
            if r not in self.results and not has_error and not self.stopping:
                self._fail(r, "signal" if code < 0 else "exit", code=code)
        elif kind == "done":
            self.supervisor_done = True

    def _send(self, sock: socket.socket, message) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(30)
            worker.send(sock, message)
        except OSError:
            pass  # the rank died meanwhile; its exit report will tell why
        finally:
            try:
                sock.setblocking(False)
            except OSError:
                pass

    def _say_bye(self) -> None:
        self.bye_sent = True
        for sock in self.rank_socks.values():
            if sock.fileno() != -1:
                self._send(sock, ("bye",))

    def _check_lost(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if (peer.lost_at is not None and now - peer.lost_at > LOST_RANK_GRACE and peer.rank not in self.exits
                    and not any(f["rank"] == peer.rank for f in self.failures) and not self.stopping):
                self._fail(peer.rank, "lost")
                peer.lost_at = None

    def _fail(self, r, kind: str, **details) -> None:
        if not self.stopping:
            self.failures.append({"rank": r, "kind": kind, "seen": time.monotonic(), **details})

    # ------------------------------------------------------------ output and progress

    def _print(self, r: int, stream: str, text: str) -> None:
        line = f"[node {r}] {text}"
        if self.progress is not None:
            self.progress.write(line, stream)
        else:
            print(line, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)

    def _report(self, r: int, metrics: dict) -> None:
        if self.progress is None:
            from .progress import NodeProgress
            self.progress = NodeProgress(self.nodes)
        self.progress.update(r, metrics)

    # ------------------------------------------------------------ stopping and cleaning up

    def _cleanup(self) -> bool:
        """Stop every process of the launch and close every socket; True if Stop was pressed meanwhile."""
        interrupted = False
        for _ in range(5):  # a second Stop press must not leave processes behind
            try:
                self._stop_processes()
                break
            except KeyboardInterrupt:
                interrupted = True
        self._close()
        return interrupted

    def _stop_processes(self) -> None:
        if self.proc is None:
            return
        self.stopping = True
        if self.proc.poll() is None and not (self.supervisor_done and len(self.results) == self.nodes):
            self._kill_ranks()
        end = time.monotonic() + 3
        while self.proc.poll() is None and time.monotonic() < end:
            self._pump(0.05)  # the supervisor reaps the ranks; show their last lines meanwhile
        if self.proc.poll() is None:
            self._kill_ranks()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait()

    def _kill_ranks(self) -> None:
        import psutil
        try:
            victims = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            victims = []
        for pid in self.pids.values():
            try:
                victims.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for p in victims:
            try:
                p.kill()
            except psutil.Error:
                pass

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        for sock in list(self.peers):
            sock.close()
        if self.selector is not None:
            self.selector.close()
        if self.listener is not None:
            self.listener.close()
        self.store = None  # the store's server thread and port go with the object
        if getattr(self, "supervisor_log", None) is not None:
            self.supervisor_log.close()

    # ------------------------------------------------------------ results and errors

    def _values(self) -> list:
        import cloudpickle
        values = []
        for r in range(self.nodes):
            try:
                values.append(cloudpickle.loads(self.results[r]))
            except Exception as exc:  # noqa: BLE001
                raise LabError(f"the value returned by rank {r} cannot be loaded here: {exc}. "
                               "Return plain data (numbers, lists, dicts, tensors).") from exc
        return values

    def _error(self) -> WorkerError:
        cause = _root_cause(self.failures)
        others = [f for f in self.failures if f is not cause and f["rank"] is not None]
        ranks = [cause["rank"]] + sorted({f["rank"] for f in others} - {cause["rank"]})
        if cause["kind"] == "timeout":
            ranks = cause["unfinished"]
        text = self._describe(cause)
        also = {}
        for f in sorted(others, key=lambda f: f["rank"]):
            if f["rank"] != cause["rank"]:
                also.setdefault(_short(f), []).append(str(f["rank"]))
        if also:
            text += "\nAlso failed (often only a consequence): " + "; ".join(
                f"rank {', '.join(rs)}: {what}" for what, rs in also.items())
        text += f"\nAll {self.nodes} workers were stopped."
        tracebacks = {f["rank"]: f["traceback"] for f in self.failures if "traceback" in f}
        if cause["kind"] == "exception":
            text += f"\n\n--- traceback of rank {cause['rank']} (host {cause.get('host', '?')}) ---\n{cause['traceback']}"
        return WorkerError(text, ranks, cause["kind"], tracebacks, dict(self.exits))

    def _describe(self, cause: dict) -> str:
        kind, r = cause["kind"], cause["rank"]
        if kind == "exception":
            return f"rank {r} raised {cause['type']}: {cause['message']}"
        if kind == "signal":
            name = _signal_name(-cause["code"])
            hint = " (SIGKILL is also what the kernel sends when memory runs out)" if name == "SIGKILL" else ""
            return f"rank {r} was killed by signal {name}, exit code {cause['code']}{hint}."
        if kind == "exit":
            return f"rank {r} exited with code {cause['code']} before returning a value."
        if kind == "lost":
            return f"rank {r} lost its connection to the notebook before returning a value."
        if kind == "timeout":
            done = sorted(self.results)
            return (f"timed out after {self.timeout:g} s: rank(s) {', '.join(map(str, cause['unfinished']))} had "
                    f"not finished" + (f" (rank(s) {', '.join(map(str, done))} had returned)" if done else "")
                    + ". Pass a larger timeout= if the job really needs longer.")
        self.supervisor_log.seek(0)
        log = self.supervisor_log.read().decode("utf-8", "replace").strip()[-2000:]
        return f"the launcher process ended unexpectedly (exit code {cause['code']}).\n{log}"


def _root_cause(failures: list[dict]) -> dict:
    """Hard deaths (signals, exits) are never side effects; otherwise the earliest failure in time."""
    for kind in ("signal", "exit", "launcher", "timeout"):
        for f in failures:
            if f["kind"] == kind:
                return f
    return min(failures, key=lambda f: f.get("time", f["seen"]))


def _short(failure: dict) -> str:
    if failure["kind"] == "exception":
        first = (failure["message"].strip().splitlines() or [""])[0]
        first = first.split("] ", 1)[-1] if first.startswith("[") else first  # drop gloo's source path
        first = re.sub(r" ?\[[^\]]*\]:\d+", "", first.split(". ")[0])       # and the peer's address:port
        return f"{failure['type']}: {first[:100]}"
    if failure["kind"] == "signal":
        return f"killed by {_signal_name(-failure['code'])}"
    return f"{failure['kind']} (exit code {failure.get('code', '?')})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# ---------------------------------------------------------------- under torchrun: this process is one rank

_rpc_started_here = [False]


def _run_as_torchrun_rank(fn, nodes, args, kwargs, threads, timeout, use_rpc) -> list:
    import torch
    import torch.distributed as dist
    r, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if nodes != world:
        raise LabError(f"this job was started by torchrun with WORLD_SIZE={world} processes but asks for "
                       f"nodes={nodes}; make them agree (torchrun --nnodes x --nproc-per-node = nodes).")
    if use_rpc and _rpc_started_here[0]:
        raise LabError("RPC can be initialised only once per process; under torchrun run one rpc job per process.")
    torch.set_num_threads(threads)
    owns_group, ok = not dist.is_initialized(), False
    try:
        if owns_group:
            store, _, _ = next(dist.rendezvous("env://", r, world, timeout=timedelta(seconds=timeout)))
            worker.init_distributed(store, r, world, timeout, use_rpc)
            _rpc_started_here[0] |= use_rpc
        value = fn(*args, **kwargs)
        gathered = [None] * world
        dist.all_gather_object(gathered, value)
        ok = True
        return gathered
    except Exception as exc:  # noqa: BLE001 - re-raised as a WorkerError naming this rank
        info = worker.format_failure(exc, r)
        raise WorkerError(
            f"rank {r} (host {info['host']}) failed: {info['type']}: {info['message'].strip()}\nIf it mentions a "
            "closed connection or a timeout, another node stopped or the network between the nodes failed "
            "(check that node's output, MASTER_ADDR and GLOO_SOCKET_IFNAME).", [r], "exception",
            {r: info["traceback"]}) from exc
    finally:
        if owns_group and dist.is_initialized():
            if use_rpc:
                worker.shutdown_rpc(min(10.0, timeout), graceful=ok)
            dist.destroy_process_group()
