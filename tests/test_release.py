"""The student release: nbgrader's generation leaves no solution code and no hidden test, `labkit release`
never overwrites a student's notebook, and a released notebook runs top to bottom from its own folder
with labkit's reference answers and their notices."""
import os
import re

import nbformat
import papermill
import pytest

from conftest import ROOT, run_cli
from labkit import LabError
from labkit.course import release
from labkit.course.report import discover

FIXTURES = ROOT / "tests" / "fixtures" / "autograde" / "notebooks"
NOTEBOOKS = ROOT / "notebooks"


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _region(source: str, begin: str, end: str) -> list[str]:
    """The meaningful lines between the markers, read independently of labkit's own check."""
    inside, lines = False, []
    for line in source.splitlines():
        if line.strip() == f"### {begin}":
            inside = True
        elif line.strip() == f"### {end}":
            inside = False
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The student release of the fixture notebooks and of the lab's own notebooks."""
    out = tmp_path_factory.mktemp("release")
    release.generate(out / "fixtures", FIXTURES)
    release.generate(out / "lab", NOTEBOOKS)
    return out


@pytest.mark.parametrize("source_dir, sub", [(FIXTURES, "fixtures"), (NOTEBOOKS, "lab")])
def test_the_release_has_no_solution_code_and_no_hidden_test(released, source_dir, sub):
    sources = discover(source_dir)
    assert sorted(p.name for p in (released / sub).iterdir()) == [p.name for p in sources]
    for path in sources:
        source = nbformat.read(path, as_version=4)
        student = nbformat.read(released / sub / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert not re.search(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)", text), path.name
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
        cells = {_meta(c).get("grade_id"): c for c in student.cells if _meta(c).get("grade_id")}
        for cell in source.cells:
            grade_id = _meta(cell).get("grade_id")
            solution = _region(cell.source, "BEGIN SOLUTION", "END SOLUTION")
            hidden = _region(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
            if not grade_id or not (solution or hidden):
                continue
            outside = {line.strip() for line in cell.source.split("### BEGIN")[0].splitlines()}
            kept = {line.strip() for line in cells[grade_id].source.splitlines()}
            assert not (set(solution + hidden) - outside) & kept, (path.name, grade_id)
            if solution:
                assert "raise NotImplementedError()" in cells[grade_id].source
                assert cells[grade_id].source.split("# YOUR CODE HERE")[0].strip() == \
                    cell.source.split("### BEGIN SOLUTION")[0].strip()  # the scaffold stays as written
            if _meta(cell).get("grade"):
                assert _meta(cells[grade_id])["points"] == _meta(cell)["points"]
                assert cells[grade_id].metadata.get("editable") is False  # a test cell is read-only


def test_the_leak_check_catches_a_solution_left_in():
    source = nbformat.read(FIXTURES / "02_exercises.ipynb", as_version=4)
    problems = release.leaks(source, source)
    assert any("marker 'BEGIN SOLUTION' left in" in p for p in problems)
    assert any("cell 'add' still holds 2 line(s) of its solution" in p for p in problems)
    assert any("cell 'check_add' still holds 1 line(s)" in p for p in problems)


def test_release_never_overwrites_a_students_notebook(tmp_path):
    first = release.release(tmp_path / "student", FIXTURES)
    assert first.wrote == ["01_warmup.ipynb", "02_exercises.ipynb"] and first.kept == []
    mine = tmp_path / "student" / "02_exercises.ipynb"
    mine.write_text(mine.read_text().replace("raise NotImplementedError()", "return a + b"))
    work = mine.read_bytes()
    (tmp_path / "student" / "01_warmup.ipynb").unlink()
    again = release.release(tmp_path / "student", FIXTURES)
    assert again.wrote == ["01_warmup.ipynb"] and again.kept == ["02_exercises.ipynb"]
    assert mine.read_bytes() == work
    assert "kept 02_exercises.ipynb" in again.summary() and "never overwritten" in again.summary()
    nothing = release.release(tmp_path / "student", FIXTURES)
    assert nothing.wrote == [] and "wrote nothing" in nothing.summary()


def test_release_says_what_is_wrong(tmp_path):
    with pytest.raises(LabError, match="no NN_\\*.ipynb notebooks"):
        release.generate(tmp_path / "out", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LabError, match="is a file"):
        release.release(tmp_path / "file", FIXTURES)


def test_the_cli_writes_the_release_where_asked(tmp_path):
    proc = run_cli("release", "--into", str(tmp_path / "mine"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"student release in {tmp_path / 'mine'}: wrote 01_cluster_basics.ipynb" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [p.name for p in discover(NOTEBOOKS)]


def _execute(path, cwd, **parameters):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = path.with_name(f"ran_{path.name}")
    papermill.execute_notebook(str(path), str(out), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                               progress_bar=False, execution_timeout=600)
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                     for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))


def test_a_released_fixture_notebook_runs_to_the_end_on_the_fallbacks(released):
    text = _execute(released / "fixtures" / "02_exercises.ipynb", released / "fixtures", quick=True)
    assert "not written yet: add still raises NotImplementedError" in text
    assert "not written yet: mean_all still raises NotImplementedError" in text
    assert "Note: add is not done yet" in text and "\n3" in text  # the reference answer ran


def test_the_released_notebook_02_runs_from_the_student_folder_with_the_reference_answers(released):
    source = nbformat.read(NOTEBOOKS / "02_data_partitioning.ipynb", as_version=4)
    exercises = [_meta(c)["grade_id"] for c in source.cells if _meta(c).get("solution")]
    if not exercises:
        pytest.skip("notebook 02 has no exercise yet")
    text = _execute(released / "lab" / "02_data_partitioning.ipynb", released / "lab", quick=True, nodes=4,
                    audit_epochs=2)
    for name in exercises:
        assert f"not written yet: {name}" in text, name
        assert f"Note: {name} is not done yet (its check has not passed)" in text, name
