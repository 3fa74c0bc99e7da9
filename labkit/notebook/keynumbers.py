"""Key numbers: the few values a notebook reports for `labkit report` and `labkit grade`.

``key_number("test_acc", 98.3, unit="%", tolerance=1.5)`` shows ``test_acc = 98.3 %`` and stores the
value machine-readably in the cell's output (MIME type ``MIME``), so the report can list it and the
grader can compare a student's value with the reference run's. ``tolerance`` (absolute, in ``unit``)
and ``relative`` (a fraction of the reference value) say how far a student's value may be from the
reference; a key number without either is reported but not graded.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from ..errors import LabError

MIME = "application/vnd.labkit.key-number+json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class KeyNumber:
    """One named value with its unit, what it means, and how far a student's value may stray."""

    name: str
    value: float
    unit: str = ""
    about: str = ""
    tolerance: float | None = None
    relative: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise LabError(f"key number name {self.name!r} must start with a letter and use only letters, digits, "
                           "'_', '.' or '-' (e.g. 'test_acc').")
        if isinstance(self.value, bool) or not _is_number(self.value) or not math.isfinite(float(self.value)):
            raise LabError(f"key number {self.name!r}: value must be a finite number, got {self.value!r}.")
        object.__setattr__(self, "value", float(self.value))
        for field in ("tolerance", "relative"):
            bound = getattr(self, field)
            if bound is not None:
                if isinstance(bound, bool) or not _is_number(bound) or not float(bound) >= 0:
                    raise LabError(f"key number {self.name!r}: {field} must be a number >= 0, got {bound!r}.")
                object.__setattr__(self, field, float(bound))

    @property
    def graded(self) -> bool:
        return self.tolerance is not None or self.relative is not None

    def allowed(self) -> float:
        """How far another run's value may be from this one (absolute, in ``unit``)."""
        return max(self.tolerance or 0.0, (self.relative or 0.0) * abs(self.value))

    def accepts(self, value: float) -> bool:
        """Whether ``value`` is within this (reference) number's tolerance."""
        return abs(float(value) - self.value) <= self.allowed() * (1 + 1e-9)

    def text(self) -> str:
        return f"{self.name} = {self.value:.4g}{' ' + self.unit if self.unit else ''}"


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)


def key_number(name: str, value, unit: str = "", about: str = "", tolerance: float | None = None,
               relative: float | None = None) -> None:
    """Show ``name = value unit`` in the notebook and record it for the report and the grader."""
    key = KeyNumber(name, value, unit, about, tolerance, relative)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # a plain script: just print it
        print(key.text())
        return
    display({"text/plain": key.text(), MIME: asdict(key)}, raw=True)


def read(nb) -> dict[str, KeyNumber]:
    """The key numbers shown in an executed notebook, by name (a later cell overrides an earlier one)."""
    found = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {}).get(MIME)
            if isinstance(data, dict):
                try:
                    key = KeyNumber(**{k: data.get(k) for k in KeyNumber.__dataclass_fields__ if k in data})
                except (LabError, TypeError):
                    continue  # a damaged record is as good as a missing one
                found[key.name] = key
    return found
