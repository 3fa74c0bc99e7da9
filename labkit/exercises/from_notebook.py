"""``from_notebook``: take a function or class the student wrote in another notebook (e.g. notebook 02's
samplers, for notebook 04's experiment) from its saved file, and check it, so a later notebook runs it.

Only the notebook's parameters, its ``setup`` cell and the cell that defines the name run, in this process,
with their output suppressed; nothing else of that notebook is executed.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from .result import CheckResult, failed
from .sampler_checks import StudentError, attempt

SETUP = "setup"  # the grade_id of a notebook's read-only import cell


def _is_setup(cell) -> bool:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == SETUP


def _is_parameters(cell) -> bool:
    return bool({"parameters", "injected-parameters"} & set(cell.get("metadata", {}).get("tags", [])))


def _python(source: str) -> str:
    """A cell's source without IPython's magics and shell escapes (``%matplotlib inline``, ``!ls``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def cells_for(nb, name: str) -> list:
    """The cells that give ``name``: parameters, setup, and the last cell that defines it (``def``/``class``)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    pattern = re.compile(rf"^(?:class|def)\s+{re.escape(name)}\b", re.MULTILINE)
    defining = [c for c in code if pattern.search(c.source)]
    return [c for c in code if _is_parameters(c) or _is_setup(c)] + defining[-1:] if defining else []


def from_notebook(path, name: str, check, exercise: str | None = None) -> tuple[object, CheckResult]:
    """``(obj, result)``: ``name`` as defined in the saved notebook ``path`` and ``check(obj)``.

    If the notebook is missing or unreadable, defines no ``name``, or its cell fails, ``obj`` is None and
    ``result`` (exercise ``exercise``, default ``name``) says why, so ``use(result, obj)`` falls back on
    labkit's reference answer."""
    path, exercise = Path(path), exercise or name
    if not path.is_file():
        return None, failed(exercise, f"{path.name} was not found in {path.resolve().parent}: save that notebook "
                                      f"(with your {name}) next to this one")
    try:
        import nbformat  # here: a worker importing labkit.exercises must not pay for it
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same diagnosis
        return None, failed(exercise, f"{path.name} could not be read as a notebook ({type(exc).__name__}): "
                                      "save it again from Jupyter")
    cells = cells_for(nb, name)
    if not cells:
        return None, failed(exercise, f"no cell of {path.name} defines {name} (a line `class {name}` or "
                                      f"`def {name}`)")
    namespace = {"__name__": f"notebook_{path.stem}"}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for cell in cells:
                what = f"{path.name}'s {'setup' if _is_setup(cell) else 'parameters'} cell" if cell is not cells[-1] \
                    else f"{path.name}'s cell that defines {name}"
                code = attempt(what, compile, _python(cell.source), f"<{path.name}>", "exec")
                attempt(what, exec, code, namespace)
    except StudentError as exc:
        return None, failed(exercise, str(exc))
    obj = namespace.get(name)
    if obj is None:
        return None, failed(exercise, f"{path.name}'s cell that defines {name} ran but left it undefined")
    return obj, check(obj)
