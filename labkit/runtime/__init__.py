"""Running worker processes: ``launch`` N gloo ranks from a notebook or script (or be one rank under
torchrun), the control channel and its messages, the supervisor that forks the ranks, failures in
words, and live progress. Code inside a rank uses ``rank``, ``world_size``, ``rpc_name`` and ``report``.
"""
from .context import rank, report, rpc_name, world_size
from .launcher import launch
from .torchrun import under_torchrun

__all__ = ["launch", "rank", "report", "rpc_name", "under_torchrun", "world_size"]
