"""Keep freed activation memory in the process instead of returning it to the kernel.

glibc hands large allocations (> 128 KiB) back to the kernel with munmap as soon as they are
freed, so every training step maps fresh pages for its activations and page-faults them in.
In two concurrent workers this cost ~6,000 page faults and ~10 ms of kernel time per cnn step
(20 % of the step). Raising the mmap and trim thresholds makes freed blocks reusable, as the
PyTorch CPU tuning guide's jemalloc/tcmalloc advice does, with nothing to install. Every
training process calls ``tune()`` (workers, torchrun ranks and the single-process baseline),
so comparisons between them stay fair. ``LABKIT_KEEP_FREED_MEMORY=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30
_done = [False]


def tune() -> bool:
    """Set glibc's thresholds once per process; True if they are set (False off glibc: no-op)."""
    if _done[0]:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("LABKIT_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    _done[0] = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _done[0]
