"""What grades a student's implementations, and how a graded cell scores.

The plan of a notebook is the SOURCE notebook's parameters cell (then ``quick = True``: small data),
its setup cell and its graded cells (with their hidden tests), in order, with the student's solution
cells (matched by grade_id, else by cell id) in between; the student's copies of the test cells are
never run (they could be edited). A graded cell scores by nbgrader's rule (``determine_grade``): an
error or anything on stderr scores 0, else its points.
"""
from __future__ import annotations

import copy

import nbformat

from .report import parameter_names

QUICK = "quick = True  # injected by labkit autograde: grade on small data"


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata ({} if it has none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_graded(cell) -> bool:
    """An autograded test cell: code, graded, not itself a solution."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_solution(cell) -> bool:
    """A cell the student writes code in."""
    return cell.get("cell_type") == "code" and bool(nbgrader_meta(cell).get("solution"))


def graded_cells(source_nb) -> list[tuple[str, float]]:
    """(grade_id, points) of every autograded cell of a source notebook, in order."""
    return [(nbgrader_meta(c)["grade_id"], float(nbgrader_meta(c).get("points", 0)))
            for c in source_nb.cells if is_graded(c)]


def stub(cell) -> str:
    """The cell as the student release has it (nbgrader's ClearSolutions), e.g. when a student deleted it."""
    from nbgrader.preprocessors import ClearSolutions
    nb = nbformat.v4.new_notebook(cells=[copy.deepcopy(cell)], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    cleared, _ = ClearSolutions().preprocess(nb, {})
    return cleared.cells[0].source


def _solutions(nb) -> tuple[dict, dict]:
    cells = [c for c in nb.cells if is_solution(c)] if nb is not None else []
    by_grade_id = {nbgrader_meta(c).get("grade_id"): c.source for c in cells}
    by_id = {c.get("id"): c.source for c in (nb.cells if nb is not None else []) if c.get("cell_type") == "code"}
    return by_grade_id, by_id


def plan(name: str, source_nb, submission_nb) -> dict:
    """The cells to run for one student's notebook: ``{"name", "steps", "missing"}``; each step has
    ``kind`` (code, solution, grade), ``id``, ``source`` and, for graded cells, ``points``."""
    by_grade_id, by_id = _solutions(submission_nb)
    quick = "quick" in parameter_names(source_nb)
    steps, missing = [], []
    for cell in source_nb.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code":
            continue
        if "parameters" in cell.metadata.get("tags", []):
            steps.append({"kind": "code", "id": "parameters", "source": cell.source})
            if quick:
                steps.append({"kind": "code", "id": "quick", "source": QUICK})
        elif meta.get("grade_id") == "setup":
            steps.append({"kind": "code", "id": "setup", "source": cell.source})
        elif is_solution(cell):
            grade_id = meta["grade_id"]
            mine = by_grade_id.get(grade_id, by_id.get(cell.get("id")))
            if mine is None:
                missing.append(grade_id)
            steps.append({"kind": "solution", "id": grade_id, "source": stub(cell) if mine is None else mine})
        elif is_graded(cell):
            steps.append({"kind": "grade", "id": meta["grade_id"], "source": cell.source,
                          "points": float(meta.get("points", 0)), "meta": dict(meta)})
    return {"name": name, "steps": steps, "missing": missing}


def score(step: dict, outputs: list) -> float:
    """The points a graded cell earns with these outputs, by nbgrader's own rule."""
    from nbgrader.utils import determine_grade
    cell = nbformat.from_dict({"cell_type": "code", "metadata": {"nbgrader": step["meta"]}, "source": step["source"],
                               "outputs": outputs, "execution_count": None})
    points, _ = determine_grade(cell)
    return float(points or 0.0)


def _line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def why(outputs: list) -> str:
    """In one line, why a cell with these outputs scores 0 ('' if nothing went wrong)."""
    for out in outputs:
        if out.get("output_type") == "error":
            if out.get("ename") == "CheckFailed":
                return _line(out.get("evalue", ""))
            return _line(f"{out.get('ename')}: {out.get('evalue', '')}")
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            return _line(f"wrote to stderr, which nbgrader scores as a failure: {out.get('text', '').strip()}")
    return ""
