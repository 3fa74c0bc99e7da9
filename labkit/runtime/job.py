"""One launch from start to clean-up: the parent's event loop.

The parent hosts the rendezvous store and a control socket on 127.0.0.1, starts the supervisor, and
then only listens: ``protocol`` messages bring output lines, progress, results and failures. Whatever
happens (an exception in a rank, a killed rank, the timeout, the Stop button) every process of the
launch is killed and reaped before ``Job.run`` returns or raises, and its ports are closed.
"""
from __future__ import annotations

import os
import secrets
import selectors
import socket
import sys
import tempfile
import time
from datetime import timedelta

from ..errors import LabError
from . import processes, protocol, supervisor
from .channel import NotOurs, Receiver, send
from .failures import Failure, Outcome, worker_error

FAILURE_WINDOW = 0.3        # seconds to keep listening after the first failure (to see what else broke)
EXIT_GRACE = 5.0            # seconds ranks get to exit after every result is in (RPC: graceful shutdown)
LOST_RANK_GRACE = 2.0       # a rank whose connection dropped without an exit report counts as failed after this


class _Peer:
    """One connection: the supervisor or a rank (``rank`` None until it says hello as a rank)."""

    def __init__(self, token: str):
        self.receiver, self.rank, self.lost_at = Receiver(token), None, None


class Job:
    """One launch; ``run`` returns the ranks' values or raises WorkerError."""

    def __init__(self, nodes: int, threads: int, timeout: float, rpc: float, payload: bytes):
        """``rpc``: 0 for no RPC, else the seconds one RPC call may take."""
        self.nodes, self.threads, self.timeout, self.rpc, self.payload = nodes, threads, timeout, rpc, payload
        self.token = secrets.token_hex(16)
        self.results, self.exits, self.rank_procs, self.ready = {}, {}, {}, {}
        self.failures: list[Failure] = []
        self.peers, self.rank_socks = {}, {}
        self.proc = self.store = self.listener = self.selector = self.progress = self.supervisor_log = None
        self.supervisor_done = self.bye_sent = self.stopping = False
        self.supervisor_text = ""   # the supervisor's stderr, kept for error messages
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
            raise worker_error(self.failures, Outcome(self.nodes, self.timeout, list(self.results),
                                                      list(self.ready), dict(self.exits), self.supervisor_text))
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
        config = {"address": self.listener.getsockname()[:2], "token": self.token, "nodes": self.nodes,
                  "threads": self.threads, "timeout": self.timeout, "rpc": self.rpc,
                  "start": processes.start_method(), "store_port": self.store.port}
        self.proc = processes.start_supervisor(supervisor.main, config, self.threads, self.supervisor_log)

    def _loop(self) -> None:
        deadline, exit_deadline = self.started + self.timeout, None
        while True:
            now = time.monotonic()
            if self.failures and now >= self.failures[0].seen + FAILURE_WINDOW:
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
            if self.proc.poll() is not None and not self.supervisor_done:
                self._supervisor_gone()
            self._pump(0.05)

    def _supervisor_gone(self) -> None:
        """The supervisor exited: read what it said last; unless it said Done, that is a failure."""
        end = time.monotonic() + 0.5
        while not self.supervisor_done and time.monotonic() < end:
            self._pump(0.05)
        if not self.supervisor_done and not self.failures and len(self.results) < self.nodes:
            self._fail(None, "launcher", code=self.proc.returncode)
        self.supervisor_done = True  # nothing more will come from it

    # ------------------------------------------------------------ connections

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
        self.peers[conn] = _Peer(self.token)
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
        try:
            messages = peer.receiver.feed(data)
        except NotOurs:
            self._drop(sock)
            return
        for message in messages:
            self._on_message(sock, peer, message)

    def _drop(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        if self.peers.get(sock) and self.peers[sock].rank is None:
            self.peers.pop(sock)

    def _send(self, sock: socket.socket, message) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(30)
            send(sock, message)
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
                self._send(sock, protocol.Bye())

    # ------------------------------------------------------------ messages

    def _on_message(self, sock, peer: _Peer, message) -> None:
        if isinstance(message, protocol.Hello):
            if message.who != "supervisor":
                peer.rank = message.who
                self.rank_socks[peer.rank] = sock
                self._send(sock, protocol.Setup(list(sys.path), os.getcwd(), self.payload))
        elif isinstance(message, protocol.Started):
            import psutil
            try:
                self.rank_procs[message.rank] = psutil.Process(message.pid)
            except psutil.Error:
                pass  # already gone; its exit report follows
        elif isinstance(message, protocol.Line):
            self._print(message)
        elif isinstance(message, protocol.Report):
            self._progress().update(message.rank, message.metrics)
        elif isinstance(message, protocol.Ready):
            self.ready[message.rank] = time.monotonic()
        elif isinstance(message, protocol.Result):
            self.results[message.rank] = message.value
        elif isinstance(message, protocol.Error):  # it explains the exit status, which may have arrived first
            self.failures = [f for f in self.failures if not (f.rank == message.rank and f.kind == "exit")]
            self._fail(message.rank, "exception", crash=message.crash)
        elif isinstance(message, protocol.Exit):
            self.exits[message.rank] = message.code
            has_error = any(f.rank == message.rank for f in self.failures)
            if message.rank not in self.results and not has_error and not self.stopping:
                self._fail(message.rank, "signal" if message.code < 0 else "exit", code=message.code)
        elif isinstance(message, protocol.Done):
            self.supervisor_done = True

    def _check_lost(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if (peer.lost_at is not None and now - peer.lost_at > LOST_RANK_GRACE and peer.rank not in self.exits
                    and not any(f.rank == peer.rank for f in self.failures) and not self.stopping):
                self._fail(peer.rank, "lost")
                peer.lost_at = None

    def _fail(self, rank, kind: str, **details) -> None:
        if not self.stopping:
            self.failures.append(Failure(rank, kind, time.monotonic(), **details))

    def _progress(self):
        if self.progress is None:
            from .progress import NodeProgress
            self.progress = NodeProgress(self.nodes)
        return self.progress

    def _print(self, line: protocol.Line) -> None:
        text = f"[node {line.rank}] {line.text}"
        if self.progress is not None:
            self.progress.write(text, line.stream)
        else:
            print(text, file=sys.stderr if line.stream == "stderr" else sys.stdout, flush=True)

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
        if self.failures or len(self.results) < self.nodes or not self.supervisor_done:
            processes.kill_ranks(self.proc, self.rank_procs.values())
        end = time.monotonic() + 3
        while self.proc.poll() is None and time.monotonic() < end:
            self._pump(0.05)  # the supervisor reaps the ranks; show their last lines meanwhile
        if self.proc.poll() is None:
            processes.kill_ranks(self.proc, self.rank_procs.values())
            processes.kill_session(self.proc)
        self.proc.wait()

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
        if self.supervisor_log is not None:
            self.supervisor_log.seek(0)
            self.supervisor_text = self.supervisor_log.read().decode("utf-8", "replace").strip()[-2000:]
            self.supervisor_log.close()

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
