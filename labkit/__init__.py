"""DML Lab's library. Its subpackages follow the lab's layers, lowest first:

``runtime`` (worker processes) · ``data`` (datasets, partitions, samplers) · ``train`` (models, the
single-machine baseline) · ``collectives`` (micro-benchmarks, the alpha-beta model) · ``data_parallel``
· ``model_parallel`` · ``studies`` (sweeps, statistics, the notebooks' experiments) · ``notebook``
(plots, widgets, key numbers) · ``course`` (report and grading). A module imports only from its own
layer or below (tests/test_architecture.py checks it).

What a notebook uses most is here: ``launch``, and inside a rank ``rank``, ``world_size``, ``report``.
"""
from .errors import LabError, WorkerError
from .runtime import launch, rank, report, world_size

__version__ = "0.1.0"
__all__ = ["LabError", "WorkerError", "launch", "rank", "report", "world_size"]
