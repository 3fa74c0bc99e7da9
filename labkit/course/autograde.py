"""`labkit autograde SUBMISSIONS`: grade a class from ``SUBMISSIONS/<student>/<notebook>.ipynb``.

Two parts per notebook. *Implementations*: the student's solution cells run with the source notebook's
setup and graded cells (hidden tests included) on small data, in a sandboxed process per student
(``sandbox``); each graded cell scores by nbgrader's rule. *Results*: ``labkit grade``'s checks of the
submitted outputs (ran in order, figures, answers, key numbers), one point each; a ``quick=True`` run is
flagged and its key numbers score 0. The notebooks are not re-executed (nbgrader's autograde would run
every notebook at full size again, about 25 minutes per student on this machine, days for a class); the submitted
outputs already show what the student's run produced. Writes gradebook.csv, points.csv and feedback/.
"""
from __future__ import annotations

import csv
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..errors import LabError
from ..paths import NOTEBOOKS
from . import exercise_grading, grade, sandbox
from .feedback import feedback_text
from .report import discover

RESULT_CHECKS = {"ran": "ran top to bottom", "figures": "figures", "answers": "answers", "numbers": "key numbers"}


@dataclass(frozen=True)
class AutogradeConfig:
    """What to grade, where to write, and the limits for each student's code."""

    submissions: str
    out: str = "autograde"
    jobs: int = 2
    limits: sandbox.Limits = sandbox.Limits()
    source: str = str(NOTEBOOKS)
    reference: str | None = None

    def __post_init__(self):
        if not Path(self.submissions).is_dir():
            raise LabError(f"submissions folder {self.submissions} does not exist; give a folder holding one "
                           "folder per student (SUBMISSIONS/<student>/<notebook>.ipynb).")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise LabError(f"jobs must be a whole number >= 1, got {self.jobs!r}.")


@dataclass
class Item:
    """One graded item of one student's notebook: an exercise's check, or a results check."""

    notebook: str
    item: str
    points: float
    max: float
    why: str = ""


@dataclass
class StudentGrade:
    """Everything one student got, and the flags (timeout, crash, corrupt file, ...) that explain zeros."""

    student: str
    items: list[Item] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(i.points for i in self.items)

    @property
    def max(self) -> float:
        return sum(i.max for i in self.items)


def students(folder) -> list[tuple[str, Path]]:
    """(student id, folder) for every visible subfolder that holds at least one file."""
    folder = Path(folder)
    found = [(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and any(f.is_file() for f in p.rglob("*"))]
    if not found:
        raise LabError(f"no submissions in {folder}: expected one folder per student holding its notebooks "
                       "(SUBMISSIONS/<student>/01_cluster_basics.ipynb, ...).")
    return found


def find_notebook(folder: Path, name: str) -> Path | None:
    """The student's file for notebook ``name``: the same file name, else one starting with its number."""
    exact = folder / f"{name}.ipynb"
    if exact.is_file():
        return exact
    return next((p for p in sorted(folder.iterdir()) if p.is_file() and p.name.startswith(name[:3])), None)


def _zero(name: str, exercises, why: str) -> list[Item]:
    return ([Item(name, check, 0.0, 1.0, why) for check in RESULT_CHECKS]
            + [Item(name, grade_id, 0.0, points, why) for grade_id, points in exercises])


def _results(name: str, path: Path, references, flags: list) -> list[Item]:
    row = grade.grade_file(path, references)
    quick = row["full_run"] != grade.OK
    if quick:
        flags.append(f"{name}: quick=True run")
    items = []
    for check in RESULT_CHECKS:
        verdict = row[check]
        if check == "numbers" and quick:
            items.append(Item(name, check, 0.0, 1.0, "a quick=True run: its key numbers are not graded at full size"))
        elif verdict == grade.SKIPPED:
            items.append(Item(name, check, 0.0, 1.0, "matches no notebook of the reference run"))
        else:
            items.append(Item(name, check, float(verdict == grade.OK), 1.0, verdict.removeprefix("FAIL: ")
                              if verdict != grade.OK else ""))
    return items


def _implementations(plans: list, events: list, stopped: dict, result: StudentGrade) -> None:
    for plan in plans:
        name = plan["name"]
        mine = [e for e in events if e.get("notebook") == name]
        outputs = {e["item"]: e["outputs"] for e in mine if "outputs" in e}
        outside = [e["item"] for e in mine if e.get("flag") == "write outside"]
        for flag in dict.fromkeys(e["flag"] for e in mine if e.get("flag")):
            result.flags.append(f"{name}: {flag}")
        if name in stopped:
            result.flags.append(f"{name}: {stopped[name][0]}")
        for step in plan["steps"]:
            if step["kind"] != "grade" and step["id"] in outputs:
                problem = exercise_grading.why(outputs[step["id"]])
                result.notes.append(f"{name}: your cell `{step['id']}` failed: {problem}" if step["kind"] == "solution"
                                    else f"{name}: the {step['id']} cell failed: {problem}")
            if step["kind"] != "grade":
                continue
            if step["id"] not in outputs:
                flag, reason = stopped.get(name, ("crash", "it did not run"))
                result.items.append(Item(name, step["id"], 0.0, step["points"], f"{flag}: {reason}"))
            elif outside:
                result.items.append(Item(name, step["id"], 0.0, step["points"],
                                         "your code tried to write outside its folder (cell " + outside[0] + ")"))
            else:
                points = exercise_grading.score(step, outputs[step["id"]])
                reason = exercise_grading.why(outputs[step["id"]]) if points < step["points"] else ""
                result.items.append(Item(name, step["id"], points, step["points"], reason))
        result.notes += [f"{name}: no solution cell `{g}` in your notebook (run as the empty exercise)"
                         for g in plan["missing"]]


def grade_student(student: str, folder: Path, sources: dict, references, cfg: AutogradeConfig, work: Path) -> StudentGrade:
    """Grade one student's folder: results from the submitted outputs, implementations in the sandbox."""
    result, plans = StudentGrade(student), []
    for name, source_nb in sources.items():
        exercises = exercise_grading.graded_cells(source_nb)
        path = find_notebook(folder, name)
        if path is None:
            result.flags.append(f"{name}: missing")
            result.items += _zero(name, exercises, "not handed in")
            continue
        try:
            nb = grade.read(path)
        except ValueError as exc:
            kind = "corrupt" if "JSON" in str(exc) or "damaged" in str(exc) else "not a notebook"
            result.flags.append(f"{name}: {kind}")
            result.items += _zero(name, exercises, f"{path.name}: {exc}")
            continue
        result.items += _results(name, path, references, result.flags)
        plan = exercise_grading.plan(name, source_nb, nb)
        if exercises:
            plans.append(plan)
    if plans:
        box = work / student
        try:
            events, stopped = sandbox.run_student(plans, box / "files", box / "private", cfg.limits)
            _implementations(plans, events, stopped, result)
            refused = sandbox.refused_writes(box / "private")
            if refused:
                result.notes.append(f"writes refused outside your folder: {', '.join(refused[:5])}")
        finally:
            shutil.rmtree(box, ignore_errors=True)
    order = {name: k for k, name in enumerate(sources)}
    result.items.sort(key=lambda i: order.get(i.notebook, len(order)))
    return result


def _progress(done: int, total: int, started: float, last: StudentGrade) -> None:
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done)
    print(f"graded {done}/{total} students ({last.student}: {last.total:g}/{last.max:g}), "
          f"{elapsed:.0f} s so far, about {eta:.0f} s to go", file=sys.stderr, flush=True)


def write_outputs(grades: list[StudentGrade], out: Path) -> None:
    """gradebook.csv (one row per student), points.csv (one row per item) and feedback/<student>.md."""
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(f"{i.notebook} {i.item}" for g in grades for i in g.items))
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *columns, "total", "max", "percent", "flags"])
        for g in grades:
            points = {f"{i.notebook} {i.item}": i.points for i in g.items}
            writer.writerow([g.student, *(f"{points.get(c, 0):g}" for c in columns), f"{g.total:g}", f"{g.max:g}",
                             f"{100 * g.total / g.max:.1f}" if g.max else "0.0", "; ".join(g.flags)])
    with open(out / "points.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "item", "points", "max", "why"])
        for g in grades:
            writer.writerows([g.student, i.notebook, i.item, f"{i.points:g}", f"{i.max:g}", i.why] for i in g.items)
    for g in grades:
        (out / "feedback" / f"{g.student}.md").write_text(feedback_text(g), encoding="utf-8")


def run(cfg: AutogradeConfig, progress=_progress) -> list[StudentGrade]:
    """Grade every student in ``cfg.submissions``; write the outputs into ``cfg.out`` and return the grades."""
    sources = {p.stem: nbformat.read(p, as_version=4) for p in discover(cfg.source)} if Path(cfg.source).is_dir() else {}
    if not sources:
        raise LabError(f"no source notebooks (NN_*.ipynb) in {cfg.source}.")
    class_ = students(cfg.submissions)
    references = grade.load_references(cfg.reference)
    out = Path(cfg.out)
    work = out / ".work"
    started, grades = time.monotonic(), {}
    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        futures = [pool.submit(grade_student, sid, folder, sources, references, cfg, work) for sid, folder in class_]
        for future in as_completed(futures):
            g = future.result()
            grades[g.student] = g
            progress(len(grades), len(class_), started, g)
    shutil.rmtree(work, ignore_errors=True)
    ordered = [grades[sid] for sid, _ in class_]
    write_outputs(ordered, out)
    return ordered

