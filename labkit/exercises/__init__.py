"""The students' exercises: a checker per exercise that runs their code and says in words what is
wrong, labkit's reference answers, and ``use`` to fall back on a reference while an exercise is open.

A checker is a plain function: it takes the student's object (a sampler class, an averaging
function, a step function, an RPC split) and returns a ``CheckResult`` (``passed``, ``message``). The
notebook's check cell, the grader and the tests call exactly the same function.
"""
from .from_notebook import from_notebook
from .gradient_checks import check_average, check_bottleneck, check_train_step
from .result import CheckResult, failed, passed
from .rpc_checks import check_rpc_split
from .rpc_split import RpcSplit, Stage
from .sampler_checks import check_dirichlet_split, check_partition_sampler, check_sampling_sampler
from .using import label, reference, use

__all__ = ["CheckResult", "RpcSplit", "Stage", "check_average", "check_bottleneck", "check_dirichlet_split",
           "check_partition_sampler", "check_rpc_split", "check_sampling_sampler", "check_train_step", "failed",
           "from_notebook", "label", "passed", "reference", "use"]
