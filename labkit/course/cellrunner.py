"""The grading process of one student: runs a plan of notebook cells with ``exec`` in a fresh ``__main__``
module per notebook (as a kernel would, so cloudpickle ships the student's functions to workers by value)
and reports each cell's outputs, in nbformat's shape, as JSON lines.

Started by ``labkit.course.sandbox`` as ``python -m labkit.course.cellrunner JOB.json``; the sandbox
enforces the time and memory limits and scores the outputs. Cell outputs are capped: a cell that prints
more than the cap fails (``OutputFlood``) and the report says so.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import sys
import time
import traceback
import types
import warnings

TEXT_LIMIT = 4000  # characters of one output kept for feedback


class OutputFlood(BaseException):
    """A cell printed more than the grader keeps (a BaseException, so ``except Exception`` lets it through)."""


class CappedStream(io.TextIOBase):
    """A stdout/stderr stand-in that collects text into the cell's outputs and stops the cell past ``cap``."""

    def __init__(self, name: str, outputs: list, budget: dict):
        self.name, self.outputs, self.budget = name, outputs, budget

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        self.budget["left"] -= len(text)
        if self.budget["left"] < 0:
            self.budget["flooded"] = True
            raise OutputFlood(f"the cell printed more than {self.budget['cap']} characters")
        last = self.outputs[-1] if self.outputs else None
        if not (last and last.get("output_type") == "stream" and last["name"] == self.name):
            last = {"output_type": "stream", "name": self.name, "text": ""}
            self.outputs.append(last)
        if len(last["text"]) < TEXT_LIMIT:  # keep the start for feedback; count the rest
            last["text"] += text[: TEXT_LIMIT - len(last["text"])]
        return len(text)


class _Shell:
    """What ``get_ipython()`` returns to transformed magics: ``%matplotlib inline`` and friends do nothing."""

    def run_line_magic(self, name, line, *args, **kwargs):
        return None

    def run_cell_magic(self, name, line, cell):
        if name in ("time", "timeit", "capture"):
            exec(compile(cell, "<cell>", "exec"), sys.modules["__main__"].__dict__)  # noqa: S102

    def system(self, *args, **kwargs):
        return None

    getoutput = system


def fresh_main() -> types.ModuleType:
    """A new, empty ``__main__`` module (IPython does the same for its user namespace)."""
    module = types.ModuleType("__main__")
    module.__dict__.update({"__builtins__": builtins, "get_ipython": _Shell})
    sys.modules["__main__"] = module
    return module


def python_source(source: str) -> str:
    """The cell as plain Python: IPython's transformer turns magics into ``get_ipython()`` calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - fall back on the source itself
        return source


def _error(exc: BaseException) -> dict:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    frames = [line for line in lines if 'File "<cell' in line or not line.startswith("  File")]
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc)[:TEXT_LIMIT],
            "traceback": [line[:TEXT_LIMIT] for line in frames[-12:]]}


def run_cell(source: str, module: types.ModuleType, cap: int, name: str = "<cell>") -> tuple[list, bool]:
    """Execute one cell in ``module``; return its outputs (nbformat dicts) and whether it flooded."""
    outputs, budget = [], {"left": cap, "cap": cap, "flooded": False}
    with contextlib.redirect_stdout(CappedStream("stdout", outputs, budget)), \
            contextlib.redirect_stderr(CappedStream("stderr", outputs, budget)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
        try:
            tree = ast.parse(python_source(source), filename=name)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, name, "exec"), module.__dict__)  # noqa: S102 - running cells is the point
            if last is not None:
                value = eval(compile(ast.Expression(last.value), name, "eval"), module.__dict__)  # noqa: S307
                if value is not None:
                    outputs.append({"output_type": "execute_result", "execution_count": None, "metadata": {},
                                    "data": {"text/plain": repr(value)[:TEXT_LIMIT]}})
        except BaseException as exc:  # noqa: BLE001 - a student's SystemExit or flood fails the cell only
            outputs.append(_error(exc))
    return outputs, budget["flooded"]


def _refusals() -> int:
    """How much the write guard has logged so far (it grows with every refused write, in any process)."""
    try:
        return os.stat(json.loads(os.environ["LABKIT_GUARD"])["log"]).st_size
    except (KeyError, OSError, ValueError):
        return 0


def run_job(job: dict, emit) -> None:
    """Run every notebook of the plan in ``job``; ``emit`` receives one dict per event."""
    for notebook in job["notebooks"]:
        emit({"notebook": notebook["name"], "event": "start"})
        module = fresh_main()
        for step in notebook["steps"]:
            refused, started = _refusals(), time.perf_counter()
            outputs, flooded = run_cell(step["source"], module, job["cap"], f"<cell {step['id']}>")
            emit({"notebook": notebook["name"], "item": step["id"], "seconds": round(time.perf_counter() - started, 3)})
            if flooded:
                emit({"notebook": notebook["name"], "flag": "output flood", "item": step["id"]})
            if _refusals() > refused:
                emit({"notebook": notebook["name"], "flag": "write outside", "item": step["id"]})
            if step["kind"] == "grade" or any(o["output_type"] == "error" for o in outputs):
                emit({"notebook": notebook["name"], "item": step["id"], "kind": step["kind"], "outputs": outputs})
        emit({"notebook": notebook["name"], "event": "done"})


def main(argv=None) -> int:
    """Entry point: ``python -m labkit.course.cellrunner JOB.json``."""
    from ..runtime import guard, processes
    with open((argv or sys.argv)[1], encoding="utf-8") as f:
        job = json.load(f)
    events = os.open(job["events"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def emit(event: dict) -> None:
        os.write(events, (json.dumps(event) + "\n").encode())

    guard.install_from_environment()
    processes.start_ahead()  # the checks' launches fork from it; nothing here is timed
    run_job(job, emit)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: a student's threads or atexit hooks must not hang the exit


if __name__ == "__main__":
    main()
