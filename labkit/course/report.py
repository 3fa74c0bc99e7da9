"""`labkit report`: execute every notebook headless, in order, and collect what it produced into results/.

For each ``notebooks/NN_*.ipynb`` (name order) papermill runs the notebook with a fresh kernel (cwd
notebooks/, this checkout's labkit first on PYTHONPATH, result tables into ``<out>/tables``), then
the report writes the executed notebook to ``<out>/notebooks/``, an HTML export to ``<out>/html/``
and its PNG figures to ``<out>/figures/<notebook>/``. A failing notebook is recorded with its
failing cell and the next one runs. ``<out>/run.json`` and ``<out>/README.md`` summarise the run.
"""
from __future__ import annotations

import ast
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import environment, paths
from ..errors import LabError
from ..paths import NOTEBOOKS, REPO_ROOT
from .notebook_files import (clear, earlier_seconds, export_html, lab_cells, read_notebook, save_figures,
                             save_run_json, write_key_numbers)

PATTERN = re.compile(r"^\d\d_.*\.ipynb$")


@dataclass(frozen=True)
class ReportConfig:
    """What to run: every notebook (or ``only`` some), at their defaults or with ``quick=True``."""

    quick: bool = False
    only: tuple[str, ...] = ()
    out: str = ""          # default: $LABKIT_RESULTS, else results/
    notebooks: str = str(NOTEBOOKS)
    timeout: int = 3600    # seconds one cell may run before the notebook counts as failed
    jobs: int = 0          # notebooks run at once; 0 = 2 for a quick run, 1 for a real one (whose timings matter)

    def __post_init__(self):
        object.__setattr__(self, "only", tuple(str(n) for n in self.only))
        object.__setattr__(self, "out", str(self.out or paths.results_dir()))
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int) or self.timeout < 1:
            raise LabError(f"timeout must be a whole number of seconds >= 1, got {self.timeout!r}.")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 0:
            raise LabError(f"jobs must be a whole number >= 1 (or 0 for the default), got {self.jobs!r}.")
        object.__setattr__(self, "jobs", self.jobs or (2 if self.quick else 1))
        if not Path(self.notebooks).is_dir():
            raise LabError(f"notebook folder {self.notebooks} does not exist; pass --notebooks DIR.")


@dataclass
class NotebookRun:
    """How one notebook went: ``failed_cell`` is 1-based among the notebook's own cells."""

    name: str
    ok: bool
    seconds: float
    cells: int
    quick: bool
    failed_cell: int | None = None
    error: str = ""
    figures: int = 0
    date: str = field(default_factory=lambda: environment.describe()["timestamp"])

    def line(self) -> str:
        if self.ok:
            return f"ran OK in {self.seconds:.0f} s"
        where = f"at cell {self.failed_cell} of {self.cells}" if self.failed_cell else "before its first cell"
        return f"failed {where} after {self.seconds:.0f} s: {self.error}"


def discover(folder=NOTEBOOKS) -> list[Path]:
    """The lab's notebooks, ``NN_name.ipynb``, in name order."""
    return sorted(p for p in Path(folder).iterdir() if PATTERN.match(p.name))


def select(notebooks: list[Path], only) -> list[Path]:
    """Keep the notebooks named in ``only`` (``02``, ``02_data_partitioning`` or the file name)."""
    if not only:
        return notebooks
    chosen = []
    for name in only:
        hits = [p for p in notebooks if name in (p.name, p.stem, p.name[:2])]
        if not hits:
            known = ", ".join(p.stem for p in notebooks) or "none"
            raise LabError(f"no notebook called {name!r}; choose from: {known}.")
        chosen += [p for p in hits if p not in chosen]
    return [p for p in notebooks if p in chosen]


def _assignments(source: str) -> dict:
    """Names assigned at the top of a cell, with their values where they are literals (else None)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    found[target.id] = value
    return found


def parameter_names(nb) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` (empty if there is none)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return set(_assignments(cell.source))
    return set()


def parameter_values(nb) -> dict:
    """The literal values the notebook ran with: its ``parameters`` cell, overridden by what papermill
    injected (its ``injected-parameters`` cell and its metadata)."""
    values = {}
    for tag in ("parameters", "injected-parameters"):
        for cell in nb.cells:
            if cell.cell_type == "code" and tag in cell.metadata.get("tags", []):
                values.update(_assignments(cell.source))
    values.update(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    return values


@contextlib.contextmanager
def _kernel_environment(tables: Path):
    """Kernels import this checkout's labkit and append their result tables under ``tables``."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "LABKIT_RESULTS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), saved["PYTHONPATH"]]))
    os.environ["LABKIT_RESULTS"] = str(tables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failure(nb) -> tuple[int | None, str]:
    """Where an executed notebook stopped (1-based cell) and the error's last line."""
    cells = lab_cells(nb)
    for k, cell in enumerate(cells, 1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return k, f"{out.get('ename', 'Error')}: {_last_line(out.get('evalue', ''))}".rstrip(": ")
    for k, cell in enumerate(cells, 1):
        if cell.get("metadata", {}).get("papermill", {}).get("status") in ("running", "failed"):
            return k, ""
    return None, ""


def execute(path: Path, target: Path, cfg: ReportConfig, quick: bool = False, position: str = "") -> NotebookRun:
    """Run one notebook into ``target`` (with ``quick=True`` if asked); never raises for a failure inside it."""
    import logging

    import papermill
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)   # it cannot parse "a = 1  # b = 2"; harmless
    source = read_notebook(path)
    start = time.monotonic()
    problem = None
    try:
        papermill.execute_notebook(str(path), str(target), parameters={"quick": True} if quick else {},
                                   kernel_name="python3", language="python", cwd=str(cfg.notebooks),
                                   progress_bar={"desc": f"{position}{path.stem}", "leave": True}
                                   if sys.stderr.isatty() and cfg.jobs == 1 else False,
                                   execution_timeout=cfg.timeout, log_output=False,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # no kernel log noise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a notebook's failure is reported, not raised
        problem = exc
    seconds = time.monotonic() - start
    executed = read_notebook(target) if target.exists() else source
    run = NotebookRun(path.name, problem is None, seconds, len(lab_cells(source)), quick)
    if problem is not None:
        run.failed_cell, run.error = failure(executed)
        if isinstance(problem, TimeoutError):  # nbclient interrupted the cell: say why, not "KeyboardInterrupt"
            run.error = f"timed out: the cell ran longer than {cfg.timeout} s (--timeout)"
        run.error = run.error or f"{type(problem).__name__}: {_last_line(problem)}".rstrip(": ")
    return run


def run_one(path: Path, out: Path, cfg: ReportConfig, quick: bool, position: str = "") -> NotebookRun:
    """Execute one notebook into ``out/notebooks`` and save its figures and HTML export."""
    target = out / "notebooks" / path.name
    result = execute(path, target, cfg, quick, position=position)
    if target.exists():
        executed = read_notebook(target)
        result.figures = len(save_figures(executed, out / "figures" / path.stem))
        export_html(executed, out / "html" / f"{path.stem}.html")
    return result


def _run_all(chosen: list[Path], out: Path, cfg: ReportConfig, log) -> list[NotebookRun]:
    """One notebook after another, or ``cfg.jobs`` at once (each in its own process, results in order)."""
    quick = {path: cfg.quick and "quick" in parameter_names(read_notebook(path)) for path in chosen}

    def note(path):
        return " (no quick parameter: its defaults)" if cfg.quick and not quick[path] else ""
    if cfg.jobs == 1 or len(chosen) == 1:
        runs = []
        for i, path in enumerate(chosen, 1):
            log(f"[{i}/{len(chosen)}] {path.name}{note(path)}")
            runs.append(run_one(path, out, cfg, quick[path], position=f"[{i}/{len(chosen)}] "))
            log(f"    {path.name}: {runs[-1].line()}")
        return runs
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    log(f"running {len(chosen)} notebooks, {min(cfg.jobs, len(chosen))} at once (--jobs {cfg.jobs}); "
        "their timings are not comparable")
    earlier = earlier_seconds(out)
    with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # the longest first (as the last run in ``out`` took), so that no long one starts last
        pending = {pool.submit(run_one, path, out, cfg, quick[path]): path
                   for path in sorted(chosen, key=lambda p: -earlier.get(p.name, 0.0))}
        try:
            done = {}
            for k, future in enumerate(as_completed(pending), 1):
                path = pending[future]
                done[path] = future.result()
                log(f"[{k}/{len(chosen)}] {path.name}{note(path)}: {done[path].line()}")
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)   # the kernels see the same Ctrl-C and stop
            raise
    return [done[path] for path in chosen]


def run(cfg: ReportConfig, log=print) -> list[NotebookRun]:
    """Execute the selected notebooks (in order, or ``cfg.jobs`` at once), collect their outputs, and
    write the summary."""
    chosen = select(discover(cfg.notebooks), cfg.only)
    if not chosen:
        raise LabError(f"no notebooks (NN_name.ipynb) in {cfg.notebooks}.")
    out = Path(cfg.out).resolve()
    everything = not cfg.only
    clear(out, [p.stem for p in chosen], everything)
    for sub in ("notebooks", "html", "figures", "tables"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with _kernel_environment(out / "tables"):
        runs = _run_all(chosen, out, cfg, log)
    write_key_numbers(out)
    record = save_run_json(out, runs, everything)
    from . import summary
    summary.write(out, record)
    return runs
