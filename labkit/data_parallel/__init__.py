"""Data parallelism: ``DPConfig``; the synchronisers behind one interface (DDP, all-reduce, all-gather,
local SGD) and the averaging arithmetic they share; the worker loop and ``run``; the in-process
simulation used by accuracy sweeps."""
from ..lazy import exports

_WHERE = {"DPConfig": "config", "simulate": "simulation", "run": "train", "train_worker": "train"}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = exports(__name__, _WHERE)  # the config without torch: the command line stays instant
