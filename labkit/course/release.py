"""The student release: nbgrader's own assignment generation turns notebooks/ (complete solutions) into
skeletons without hidden tests; ``release`` puts them in student/ and never overwrites a student's work.

``generate`` runs nbgrader 0.9.6's ``GenerateAssignment`` converter in a temporary course directory
(``source/lab/`` -> ``release/lab/``) without its gradebook database (nothing here needs one), then checks
that no solution line, no hidden-test line and no nbgrader marker survived.
"""
from __future__ import annotations

import io
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..errors import LabError
from ..paths import NOTEBOOKS, REPO_ROOT
from .report import discover

ASSIGNMENT = "lab"
STUDENT = REPO_ROOT / "student"
REGIONS = (("BEGIN SOLUTION", "END SOLUTION"), ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"))
MARKERS = tuple(marker for pair in REGIONS for marker in pair)


def secret_lines(source: str) -> set[str]:
    """The meaningful lines inside a cell's solution and hidden-test regions that appear nowhere outside them."""
    inside, outside, depth = set(), set(), 0
    for line in source.splitlines():
        text = line.strip()
        if any(text.lstrip("#").strip() == begin for begin, _ in REGIONS):
            depth += 1
        elif any(text.lstrip("#").strip() == end for _, end in REGIONS):
            depth = max(0, depth - 1)
        elif text and not text.startswith("#"):
            (inside if depth else outside).add(text)
    return inside - outside


def _by_grade_id(nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")}


def leaks(source_nb, released_nb) -> list[str]:
    """What the released notebook still gives away: nbgrader markers, or lines of a solution or hidden test."""
    problems = [f"cell {k}: marker {marker!r} left in" for k, cell in enumerate(released_nb.cells, 1)
                for marker in MARKERS if marker in cell.source]
    released = _by_grade_id(released_nb)
    for grade_id, cell in _by_grade_id(source_nb).items():
        secret = secret_lines(cell.source)
        kept = secret & {line.strip() for line in released.get(grade_id, cell).source.splitlines()}
        if grade_id not in released and secret:
            problems.append(f"cell {grade_id!r} is missing from the release")
        elif kept:
            problems.append(f"cell {grade_id!r} still holds {len(kept)} line(s) of its solution or hidden "
                            f"tests, e.g. {sorted(kept)[0]!r}")
    return problems


def _run_nbgrader(course: Path) -> None:
    """nbgrader's GenerateAssignment over ``course/source/lab`` into ``course/release/lab``."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import SaveCells
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.assignment_id = ASSIGNMENT
    config.GenerateAssignment.no_database = True
    log, text = logging.getLogger("labkit.release.nbgrader"), io.StringIO()
    log.handlers[:] = [logging.StreamHandler(text)]
    log.propagate = False
    app = GenerateAssignment(coursedir=CourseDirectory(config=config), config=config, log=log)
    # SaveCells only records the cells into nbgrader's gradebook database, which a release does not use
    app.preprocessors = [p for p in app.preprocessors if p is not SaveCells]
    app.force = True
    try:
        app.start()
    except Exception as exc:  # noqa: BLE001 - nbgrader explains itself in its log
        detail = [line for line in text.getvalue().splitlines() if line.strip()][-3:]
        raise LabError(f"nbgrader could not generate the student release ({type(exc).__name__}: {exc}); "
                       f"its log ends: {' | '.join(detail) or '(empty)'}. Check the nbgrader metadata of "
                       "the notebooks (solution and graded cells).") from None


def generate(into, notebooks=NOTEBOOKS) -> list[Path]:
    """Write the student version of every ``NN_*.ipynb`` in ``notebooks`` into ``into`` (overwriting there)
    and return the paths; raises LabError if nbgrader fails or anything secret is left in."""
    sources = discover(notebooks) if Path(notebooks).is_dir() else []
    if not sources:
        raise LabError(f"no NN_*.ipynb notebooks in {notebooks}; give the folder of the source notebooks.")
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="labkit-release-") as tmp:
        course = Path(tmp)
        (course / "source" / ASSIGNMENT).mkdir(parents=True)
        for path in sources:
            shutil.copy2(path, course / "source" / ASSIGNMENT / path.name)
        _run_nbgrader(course)
        for path in sources:
            released = course / "release" / ASSIGNMENT / path.name
            if not released.exists():
                raise LabError(f"nbgrader wrote no student version of {path.name}.")
            problems = leaks(nbformat.read(path, as_version=4), nbformat.read(released, as_version=4))
            if problems:
                raise LabError(f"the student version of {path.name} gives answers away: {'; '.join(problems[:3])}. "
                               "Put every solution between ### BEGIN SOLUTION and ### END SOLUTION.")
            shutil.copyfile(released, into / path.name)
            written.append(into / path.name)
    return written


@dataclass
class Release:
    """What ``release`` did: the notebooks it wrote and the ones it kept because a student has them."""

    folder: Path
    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"wrote {', '.join(self.wrote)}" if self.wrote else "wrote nothing"]
        if self.kept:
            parts.append(f"kept {', '.join(self.kept)} (already there: your work is never overwritten; "
                         "delete or rename a notebook to get a fresh copy)")
        return f"student release in {self.folder}: " + "; ".join(parts)


def release(into=None, notebooks=NOTEBOOKS) -> Release:
    """Put the student release in ``into`` (default: student/); a notebook already there is kept as it is."""
    folder = Path(into) if into else STUDENT
    if folder.exists() and not folder.is_dir():
        raise LabError(f"{folder} is a file; give a folder for the student release (--into DIR).")
    names = [p.name for p in discover(notebooks)] if Path(notebooks).is_dir() else []
    result = Release(folder, kept=[n for n in names if (folder / n).exists()])
    if names and len(result.kept) == len(names):
        return result  # nothing missing: no need to run nbgrader
    with tempfile.TemporaryDirectory(prefix="labkit-student-") as tmp:
        for path in generate(tmp, notebooks):
            target = folder / path.name
            if not target.exists():  # checked again: never overwrite a student's notebook
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                result.wrote.append(path.name)
    return result
