"""The students' exercises: a checker per exercise that runs their code and says in words what is
wrong, labkit's reference answers, and ``use`` to fall back on a reference while an exercise is open.

A checker is a plain function: it takes the student's object (a sampler class, an averaging
function, a step function, an RPC split) and returns a ``CheckResult`` (``passed``, ``message``). The
notebook's check cell, the grader and the tests call exactly the same function.
"""
from importlib import import_module

# Loaded on first use: a worker that unpickles one probe imports its module only, not nbformat and RPC.
_WHERE = {"from_notebook": "from_notebook", "check_average": "gradient_checks", "check_bottleneck": "gradient_checks",
          "check_train_step": "gradient_checks", "CheckResult": "result", "failed": "result", "passed": "result",
          "check_rpc_split": "rpc_checks", "RpcSplit": "rpc_split", "Stage": "rpc_split",
          "check_dirichlet_split": "sampler_checks", "check_partition_sampler": "sampler_checks",
          "check_sampling_sampler": "sampler_checks", "label": "using", "reference": "using", "use": "using"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_WHERE))
