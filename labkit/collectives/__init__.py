"""Collectives: the alpha-beta cost model and its fit (``costmodel``), micro-benchmarks of the real
collectives (``bench``), and the cluster check every rank runs first (``hello``)."""
from .bench import CommConfig, measure
from .costmodel import CostModel, fit, predict_speedup, speedup_table
from .hello import hello_worker

__all__ = ["CommConfig", "CostModel", "fit", "hello_worker", "measure", "predict_speedup", "speedup_table"]
