"""The control channel between ``launch`` (the parent) and its processes, and never outliving the parent.

Messages (``labkit.runtime.protocol``) travel as pickles with a 4-byte length. A child first sends
the launch's secret token, so the parent unpickles nothing from anyone else: ``Receiver`` checks
the token and cuts the byte stream into messages on the parent's side.
"""
from __future__ import annotations

import hmac
import json
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time

ENV_CONFIG = "LABKIT_LAUNCH"          # JSON with the parent's address, token and job settings
_HEADER = struct.Struct("!I")


class NotOurs(Exception):
    """A connection that did not start with the launch's token."""


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


class Receiver:
    """The parent's side of one connection: checks the token, then returns whole messages as bytes arrive."""

    def __init__(self, token: str):
        self.token, self.buffer, self.authed = token.encode(), bytearray(), False

    def feed(self, data: bytes) -> list:
        """Every message completed by ``data``; ``NotOurs`` if the connection did not open with the token."""
        self.buffer += data
        if not self.authed:
            if len(self.buffer) < len(self.token):
                return []
            if not hmac.compare_digest(bytes(self.buffer[:len(self.token)]), self.token):
                raise NotOurs()
            del self.buffer[:len(self.token)]
            self.authed = True
        messages = []
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            messages.append(pickle.loads(bytes(self.buffer[_HEADER.size:_HEADER.size + size])))
            del self.buffer[:_HEADER.size + size]
        return messages


def config() -> dict:
    """The launch's settings, as the parent put them into this process's environment."""
    return json.loads(os.environ[ENV_CONFIG])


def connect(cfg: dict, hello) -> socket.socket:
    """Connect to the parent, prove we are its child (token), and introduce ourselves."""
    sock = socket.create_connection(tuple(cfg["address"]), timeout=30)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(cfg["token"].encode())
    send(sock, hello)
    return sock


# ---------------------------------------------------------------- never outlive the parent

def die_with_parent(expected_parent: int) -> None:
    """Linux: the kernel SIGKILLs us when our parent dies. Elsewhere a watchdog thread does it."""
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != expected_parent:         # the parent died before prctl took effect
        os._exit(1)


def watch_parent(expected_parent: int) -> None:
    """Portable back-up for PR_SET_PDEATHSIG: poll the parent pid (started after any fork)."""
    def watch():
        while os.getppid() == expected_parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, name="labkit-parent-watch", daemon=True).start()
