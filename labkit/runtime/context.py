"""What code running inside a rank asks about its job: ``rank()``, ``world_size()``, ``rpc_name(k)``, and
``report(**metrics)`` for the notebook's progress bars.

They work under ``labkit.launch``, under torchrun, and (as rank 0 of 1) in a plain process.
"""
from __future__ import annotations

import os
import threading
import time

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
REPORT_INTERVAL = 0.1                 # seconds between progress messages of one rank

_reporter = [None]                    # set in ranks started by launch (``use_reporter``)
_last_print = [0.0]


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


class Reporter:
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


def use_reporter(reporter: Reporter) -> None:
    """Send this process's ``report`` calls through ``reporter`` (a rank of ``labkit.launch`` does)."""
    _reporter[0] = reporter


def report(**metrics) -> None:
    """Publish progress metrics (e.g. step, total, epoch, loss, acc) of this rank; cheap, never blocks.

    Under ``labkit.launch`` they drive the per-node bars in the notebook; under torchrun they are
    printed every few seconds; in a plain process they are ignored.
    """
    clean = {str(k): _plain(v) for k, v in metrics.items()}
    if _reporter[0] is not None:
        _reporter[0].put(clean)
    elif all(v in os.environ for v in TORCHRUN_VARS):
        now = time.monotonic()
        if now - _last_print[0] >= 5 or clean.get("step") == clean.get("total", object()):
            _last_print[0] = now
            print(f"[rank {rank()}] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in clean.items()), flush=True)
