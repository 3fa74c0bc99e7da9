"""Data parallelism: ``DPConfig``; the synchronisers behind one interface (DDP, all-reduce, all-gather,
local SGD) and the averaging arithmetic they share; the worker loop and ``run``; the in-process
simulation used by accuracy sweeps."""
from .config import DPConfig
from .simulate import simulate
from .train import run, train_worker

__all__ = ["DPConfig", "run", "simulate", "train_worker"]
