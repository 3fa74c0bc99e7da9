"""The students' exercises: a checker per exercise that runs their code and says in words what is
wrong, labkit's reference answers, and ``use`` to fall back on a reference while an exercise is open.

A checker is a plain function: it takes the student's object (a sampler class, an averaging
function, a step function, an RPC split) and returns a ``CheckResult`` (``passed``, ``message``). The
notebook's check cell, the grader and the tests call exactly the same function.
"""
from ..lazy import exports
from .from_notebook import from_notebook  # (eager: the module has the same name as the function)

# Loaded on first use: a worker that unpickles one probe imports its module only, not nbformat and RPC.
_WHERE = {"check_average": "gradient_checks", "check_bottleneck": "gradient_checks",
          "check_train_step": "gradient_checks", "CheckResult": "result", "failed": "result", "passed": "result",
          "check_rpc_split": "rpc_checks", "RpcSplit": "rpc_split", "Stage": "rpc_split",
          "check_dirichlet_split": "sampler_checks", "check_partition_sampler": "sampler_checks",
          "check_sampling_sampler": "sampler_checks", "label": "using", "reference": "using", "use": "using"}
__all__ = sorted([*_WHERE, "from_notebook"])
__getattr__, __dir__ = exports(__name__, _WHERE)
