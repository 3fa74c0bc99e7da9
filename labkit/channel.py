"""The control channel between ``launch`` (the parent) and its processes, and never outliving the parent.

Messages are pickles with a 4-byte length; a child first sends the launch's secret token, so the
parent unpickles nothing from anyone else. Used by ``labkit.supervisor`` and ``labkit.worker``.
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

ENV_CONFIG = "LABKIT_LAUNCH"          # JSON with the parent's address, token and job settings
_HEADER = struct.Struct("!I")


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


def config() -> dict:
    return json.loads(os.environ[ENV_CONFIG])


def connect(cfg: dict, hello: tuple) -> socket.socket:
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
