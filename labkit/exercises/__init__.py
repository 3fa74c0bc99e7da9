"""The students' exercises: a checker per exercise that runs their code and says in words what is
wrong, labkit's reference answers, and ``use`` to fall back on a reference while an exercise is open.

A checker is a plain function: it takes the student's object (a sampler class, an averaging
function, a step function) and returns a ``CheckResult`` (``passed``, ``message``). The notebook's
check cell, the grader and the tests call exactly the same function.
"""
from .result import CheckResult, failed, passed
from .using import label, use

__all__ = ["CheckResult", "failed", "label", "passed", "use"]
