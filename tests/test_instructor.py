"""instructor/ holds a model answer and a rubric for every exercise a student writes, and they match the source."""
import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _nbgrader_cells(path, kind):
    return [c for c in nbformat.read(path, as_version=4).cells if c.metadata.get("nbgrader", {}).get(kind)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_solution_cell_has_its_model_answer_and_rubric_in_instructor(path):
    answers = (ROOT / "instructor" / f"{path.stem}_answers.md").read_text()
    blocks = [b.strip() for b in re.findall(r"```python\n(.*?)```", answers, flags=re.S)]
    for solution in _nbgrader_cells(path, "solution"):
        assert solution.source.strip() in blocks, (f"{path.name}: the model answer of {solution.metadata.nbgrader.grade_id} "
                                                   "in instructor/ differs from the notebook's solution cell")
    for graded in _nbgrader_cells(path, "grade"):
        points = graded.metadata.nbgrader["points"]
        assert re.search(rf"\*\*Rubric \({points:g} points?, autograded\)", answers), \
            f"{path.name}: no autograded rubric of {points:g} points for {graded.metadata.nbgrader.grade_id}"
