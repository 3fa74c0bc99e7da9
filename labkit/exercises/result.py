"""``CheckResult``: what a checker returns (passed, and a message in words), and how a check cell shows it.

A failing check only prints while a student works, so "Run All" still reaches the end (the cells
after it fall back on labkit's reference). Under grading (nbgrader's autograde, or labkit's own
grader) ``show()`` raises instead, so the graded cell fails and scores 0.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

GRADING_VARIABLES = ("NBGRADER_EXECUTION", "LABKIT_GRADING")


class CheckFailed(AssertionError):
    """A graded check that did not pass; its message is the diagnosis."""


@dataclass
class CheckResult:
    """The outcome of one exercise's check. ``details`` holds the numbers behind the message."""

    exercise: str
    passed: bool
    message: str
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.exercise}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour, word = ("#1a7f37", "✔ passed") if self.passed else ("#b42318", "✘ not yet")
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px">'
                f'<b style="color:{colour}">{word}</b> · <code>{html.escape(self.exercise)}</code><br>'
                f'{html.escape(self.message)}</div>')

    def show(self) -> None:
        """Display the verdict in a check cell; raise ``CheckFailed`` if it failed and this is a grading run."""
        if not self.passed and grading():
            raise CheckFailed(str(self))
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is not None:
                display(self)
                return
        except ImportError:
            pass
        print(self)


def grading() -> bool:
    """True inside an autograding run (nbgrader's or labkit's), where a failed check must fail its cell."""
    return any(os.environ.get(name) for name in GRADING_VARIABLES)


def passed(exercise: str, message: str, **details) -> CheckResult:
    return CheckResult(exercise, True, message, details)


def failed(exercise: str, message: str, **details) -> CheckResult:
    return CheckResult(exercise, False, message, details)
