"""``use``: the student's implementation once its check passes, labkit's reference answer until then.

So a notebook runs to the end while an exercise is still open, and says so in one line, and the
measurements after an exercise run the student's own code as soon as it is right.
"""
from __future__ import annotations

import importlib

from ..errors import LabError
from .result import CheckResult

# exercise name -> where labkit's reference answer lives ("module:attribute", relative to this package)
ANSWERS = {
    "dirichlet_split": "sampler_answers:dirichlet_split",
    "RandomPartitionSampler": "sampler_answers:RandomPartitionSampler",
    "RandomSamplingSampler": "sampler_answers:RandomSamplingSampler",
    "allreduce_average_gradients": "gradient_answers:allreduce_average_gradients",
    "allgather_average_gradients": "gradient_answers:allgather_average_gradients",
    "train_step": "gradient_answers:train_step",
    "bottleneck_delay": "gradient_answers:bottleneck_delay",
    "rpc_split": "rpc_answers:SPLIT",
}


def reference(exercise: str):
    """labkit's reference answer to ``exercise`` (one of ``ANSWERS``)."""
    if exercise not in ANSWERS:
        raise LabError(f"no reference answer for {exercise!r}; exercises: {', '.join(ANSWERS)}.")
    module, attribute = ANSWERS[exercise].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), attribute)


def use(result: CheckResult, mine, quiet: bool = False):
    """``mine`` if ``result`` passed; otherwise labkit's reference answer, with a one-line notice."""
    if not isinstance(result, CheckResult):
        raise LabError(f"use() takes the result of a check (run the check cell first), got {type(result).__name__}.")
    if result.passed:
        return mine
    if not quiet:
        print(f"Note: {result.exercise} is not done yet (its check has not passed), so the cells below use "
              "labkit's reference answer. Come back to it: they will then run yours.")
    return reference(result.exercise)


def label(result: CheckResult, what: str) -> str:
    """A legend label that says whose code ran: "what (yours)" or "what (labkit's)"."""
    return f"{what} ({'yours' if result.passed else 'labkit' + chr(39) + 's'})"
