"""CI executes every notebook in quick mode (each in its own tests/test_notebook_NN.py, once), and the
whole pipeline works on a real notebook: `labkit report --quick --only 02`, then `labkit grade` on its output."""
import json
import re

import nbformat
import pytest

from conftest import ROOT, run_cli
from labkit.course import grade, report
from labkit.notebook import keynumbers


@pytest.mark.parametrize("notebook", report.discover(), ids=lambda p: p.stem)
def test_every_notebook_has_a_test_that_executes_it_in_quick_mode(notebook):
    test = ROOT / "tests" / f"test_notebook_{notebook.name[:2]}.py"
    assert test.exists(), f"{notebook.name} needs {test.name}, executing it with quick=True (tests/nbutil.execute)"
    source = test.read_text()
    assert f'"{notebook.name}"' in source and re.search(r"execute\(.*quick=True", source), test.name
    assert "quick" in report.parameter_names(nbformat.read(notebook, as_version=4)), "no quick parameter"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "results"
    proc = run_cli("report", "--quick", "--only", "02", "--out", str(out), timeout=600)
    return out, proc


def test_report_quick_runs_a_real_notebook_into_the_given_folder(smoke):
    out, proc = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "02_data_partitioning.ipynb: ran OK" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["quick"] and list(run["notebooks"]) == ["02_data_partitioning.ipynb"]
    assert len(list((out / "figures" / "02_data_partitioning").glob("*.png"))) >= 10
    assert (out / "html" / "02_data_partitioning.html").stat().st_size > 10_000
    readme = (out / "README.md").read_text()
    assert "| sampling_coverage |" in readme and "02 · Data partitioning" in readme


def test_grading_the_executed_notebook_against_its_own_run(smoke, tmp_path):
    out, _ = smoke
    nb = nbformat.read(out / "notebooks" / "02_data_partitioning.ipynb", as_version=4)
    answers = [c for c in nb.cells if "answer" in c.metadata.get("tags", [])]
    assert len(answers) >= 5
    as_submitted = grade.grade_file(out / "notebooks" / "02_data_partitioning.ipynb", grade.load_references(out))
    assert as_submitted["answers"].startswith(f"FAIL: {len(answers)} of {len(answers)} answers not filled in")
    for cell in answers:
        cell.source += " The ranks share a seed."
    nbformat.write(nb, tmp_path / "student.ipynb")
    row = grade.grade_file(tmp_path / "student.ipynb", grade.load_references(out))
    assert row["full_run"].startswith("FAIL: executed with quick = True"), row   # a smoke run is flagged
    assert all(row[c] == "ok" for c in grade.CHECKS if c != "full_run"), row
    shown = [o for c in nb.cells for o in c.get("outputs", []) if keynumbers.MIME in o.get("data", {})]
    coverage = next(o for o in shown if o["data"][keynumbers.MIME]["name"] == "sampling_coverage")
    coverage["data"][keynumbers.MIME]["value"] = 100.0  # every sample covered: impossible with replacement
    nbformat.write(nb, tmp_path / "student.ipynb")
    row = grade.grade_file(tmp_path / "student.ipynb", grade.load_references(out))
    assert row["numbers"].startswith("FAIL: implausible: sampling_coverage = 100 (reference 6")
