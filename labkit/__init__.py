"""DML Lab's library: data, models, partitioning, launching workers, training, results and plots."""
from .errors import LabError
from .launcher import launch

__version__ = "0.1.0"
__all__ = ["LabError", "launch"]
