"""`labkit grade` on small synthetic executed notebooks: a complete one passes, and each kind of problem
is caught by the right check with the right reason; unreadable files get a row; the rest are still graded."""
import copy
import json
import os
from dataclasses import asdict

import nbformat
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import run_cli
from labkit import LabError
from labkit.course import grade
from labkit.notebook import keynumbers
from labkit.notebook.keynumbers import KeyNumber

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _key(name, value, **bounds):
    key = KeyNumber(name, value, **bounds)
    return new_output("display_data", data={"text/plain": key.text(), keynumbers.MIME: asdict(key)})


def reference_notebook():
    """An executed lab notebook: parameters, a figure, a question with its answer cell, key numbers."""
    cells = [
        new_markdown_cell("# 01 · Demo"),
        new_code_cell("quick = False", metadata={"tags": ["parameters"]}),
        new_code_cell("plots.accuracy(history)", outputs=[new_output("display_data", data={"image/png": PNG})]),
        new_markdown_cell("**Question 1.** Why?"),
        new_markdown_cell("*Your answer:*", metadata={"tags": ["answer"]}),
        new_code_cell("key_number('test_acc', acc, '%', tolerance=1)\nkey_number('seconds', s)",
                      outputs=[_key("test_acc", 98.0, unit="%", tolerance=1.0), _key("seconds", 40.0)]),
        new_markdown_cell("## Summary"),
    ]
    for n, cell in enumerate(c for c in cells if c.cell_type == "code"):
        cell.execution_count = n + 1
    for i, cell in enumerate(cells):
        cell.id = f"lab-cell-{i}"  # what JupyterLab keeps when a student edits and runs the notebook
    return new_notebook(cells=cells)


def complete(ref=None):
    """A student's notebook: the reference, run top to bottom, with the answer written."""
    nb = copy.deepcopy(ref or reference_notebook())
    nb.cells[4].source = "*Your answer:* Because the nodes share one seed."
    nb.cells[5].outputs = [_key("test_acc", 97.4, unit="%", tolerance=5.0), _key("seconds", 95.0)]
    return nb


@pytest.fixture
def reference(tmp_path):
    folder = tmp_path / "results" / "notebooks"
    folder.mkdir(parents=True)
    nbformat.write(reference_notebook(), folder / "01_demo.ipynb")
    return tmp_path / "results"


def _grade(tmp_path, reference, nb, name="student.ipynb"):
    path = tmp_path / name
    nbformat.write(nb, path) if not isinstance(nb, str) else path.write_text(nb)
    return grade.grade([path], reference).iloc[0].to_dict()


def test_a_complete_notebook_passes_every_check(tmp_path, reference):
    row = _grade(tmp_path, reference, complete())
    assert row["notebook"] == "01_demo"
    assert [row[c] for c in grade.CHECKS] == ["ok"] * len(grade.CHECKS) and row["result"] == "pass"


def test_an_error_cell_fails_ran(tmp_path, reference):
    nb = complete()
    nb.cells[2].outputs = [new_output("error", ename="RuntimeError", evalue="boom", traceback=[])]
    row = _grade(tmp_path, reference, nb)
    assert row["ran"] == "FAIL: cell 3 raised RuntimeError" and row["result"] == "fail"
    assert row["answers"] == row["numbers"] == "ok"


def test_an_unfilled_answer_fails_answers(tmp_path, reference):
    nb = complete()
    nb.cells[4].source = "  *Your answer:*\n"
    row = _grade(tmp_path, reference, nb)
    assert row["answers"] == "FAIL: 1 of 1 answers not filled in (cell 5)"
    assert row["ran"] == row["figures"] == row["numbers"] == "ok"


def test_a_notebook_run_out_of_order_fails_ran(tmp_path, reference):
    nb = complete()
    nb.cells[1].execution_count, nb.cells[2].execution_count, nb.cells[5].execution_count = 1, 7, 4
    row = _grade(tmp_path, reference, nb)
    assert row["ran"] == "FAIL: out of order: cell 6 (In [4]) ran before cell 3 (In [7])"


def test_an_unexecuted_cell_fails_ran(tmp_path, reference):
    nb = complete()
    nb.cells[5].execution_count, nb.cells[5].outputs = None, []
    row = _grade(tmp_path, reference, nb)
    assert row["ran"] == "FAIL: cell 6 never ran" and row["numbers"] == "FAIL: missing: test_acc"


def test_an_implausible_number_fails_numbers_with_the_reference_and_tolerance(tmp_path, reference):
    nb = complete()
    nb.cells[5].outputs = [_key("test_acc", 42.0, unit="%", tolerance=100.0), _key("seconds", 1e6)]
    row = _grade(tmp_path, reference, nb)
    # the reference states the tolerance (the student's own is ignored); 'seconds' is not graded
    assert row["numbers"] == "FAIL: implausible: test_acc = 42 (reference 98 ± 1)"
    assert row["ran"] == row["answers"] == row["figures"] == "ok"


def test_a_missing_figure_fails_figures(tmp_path, reference):
    nb = complete()
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="no plot")]
    assert _grade(tmp_path, reference, nb)["figures"] == "FAIL: no figure in cell 3 (1 of 1 figures missing)"


def test_a_corrupt_file_gets_a_row_saying_so(tmp_path, reference):
    text = json.dumps(nbformat.v4.new_notebook())[:-7]
    row = _grade(tmp_path, reference, text, "broken.ipynb")
    assert row["readable"].startswith("FAIL: corrupt JSON: ") and "line 1" in row["readable"]
    assert row["result"] == "fail" and row["ran"] == row["numbers"] == "-"


@pytest.mark.parametrize("name, content, reason", [
    ("essay.pdf", b"%PDF-1.4 \xff\xfe", "FAIL: not a notebook (binary .pdf)"),
    ("answers.txt", b"my answers", "FAIL: not a notebook (.txt file, not JSON): Expecting value at line 1, column 1"),
    ("data.ipynb", b'{"a": 1}', "FAIL: not a notebook (JSON without nbformat and cells)"),
    ("other.ipynb", nbformat.writes(new_notebook(cells=[new_code_cell("print(1)")])).encode(),
     "FAIL: matches no notebook of the reference run"),
])
def test_files_that_are_not_lab_notebooks_are_named(tmp_path, reference, name, content, reason):
    (tmp_path / name).write_bytes(content)
    assert grade.grade([tmp_path / name], reference).iloc[0]["readable"] == reason


def test_cells_are_matched_by_source_when_ids_are_gone(tmp_path, reference):
    nb = complete()
    for i, cell in enumerate(nb.cells):
        cell.id = f"renamed-{i}"
    nb.cells[4].metadata = {}  # the answer cell lost its tag too: nothing left to find it by
    row = _grade(tmp_path, reference, nb)
    assert row["notebook"] == "01_demo" and row["figures"] == "ok" and row["answers"] == "FAIL: 1 answer cell missing"


def test_an_answer_cell_that_lost_its_tag_still_counts(tmp_path, reference):
    nb = complete()
    nb.cells[4].metadata = {}
    assert _grade(tmp_path, reference, nb)["answers"] == "ok"
    nb.cells[4].source = "*Your answer:*"
    assert _grade(tmp_path, reference, nb)["answers"] == "FAIL: 1 of 1 answers not filled in (cell 5)"


def test_a_folder_is_graded_file_by_file_and_written_as_csv(tmp_path, reference):
    folder = tmp_path / "submissions"
    (folder / "bob" / ".ipynb_checkpoints").mkdir(parents=True)
    nbformat.write(complete(), folder / "alice.ipynb")
    unfilled = complete()
    unfilled.cells[4].source = ""
    nbformat.write(unfilled, folder / "bob" / "bob.ipynb")
    nbformat.write(unfilled, folder / "bob" / ".ipynb_checkpoints" / "bob-checkpoint.ipynb")
    (folder / "carol.ipynb").write_text("{ not json")
    csv = tmp_path / "grades.csv"
    proc = run_cli("grade", str(folder), "--reference", str(reference), "--csv", str(csv))
    assert proc.returncode == 1, proc.stderr
    assert "1 of 3 passed every check" in proc.stdout
    table = pd.read_csv(csv)
    assert [p.split("submissions/")[1] for p in table["file"]] == ["alice.ipynb", "bob/bob.ipynb", "carol.ipynb"]
    assert table["result"].tolist() == ["pass", "fail", "fail"]
    assert list(table.columns) == ["file", "notebook", *grade.CHECKS, "result"]
    assert table.loc[1, "answers"] == "FAIL: 1 of 1 answers not filled in (cell 5)"
    assert table.loc[2, "readable"].startswith("FAIL: corrupt JSON")
    header, *rows = proc.stdout.splitlines()[:4]
    assert header.split() == ["file", "notebook", *grade.CHECKS, "result"] and "FAIL: corrupt JSON" in rows[2]


def test_without_a_reference_run_grading_says_what_to_do(tmp_path):
    nbformat.write(complete(), tmp_path / "a.ipynb")
    with pytest.raises(LabError, match="make results"):
        grade.grade([tmp_path / "a.ipynb"], tmp_path / "nothing")
    proc = run_cli("grade", str(tmp_path / "missing.ipynb"), "--reference", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@given(st.lists(st.integers(1, 50) | st.none(), min_size=1, max_size=8))
def test_ran_fails_exactly_when_counts_do_not_increase_or_a_cell_never_ran(counts):
    nb = new_notebook(cells=[new_code_cell(f"x = {i}", execution_count=n) for i, n in enumerate(counts)])
    ran = [n for n in counts if n is not None]
    in_order = all(a < b for a, b in zip(ran, ran[1:]))
    reason = grade.check_ran(nb)
    assert (reason == "") == (in_order and None not in counts)
    assert ("out of order" in reason) == (not in_order) and ("never ran" in reason) == (None in counts)


placeholders = st.sampled_from(["*Your answer:*", "*Your answer here.*", "*Your answers to the exercises:*",
                                "Your answer:", "_your answer_", ""])
spaces = st.sampled_from(["", " ", "\n", "  \n\n"])


@given(placeholders, spaces, spaces)
def test_a_placeholder_alone_is_not_an_answer(placeholder, before, after):
    assert not grade.filled(before + placeholder + after)


@given(placeholders, st.text(alphabet="abcdefghijklmnpqstvwxz0123456789 .,!?-\n", min_size=1)  # no o, r, u, y:
       .filter(lambda t: any(ch.isalnum() for ch in t)))                     # the words never spell "your"
def test_any_words_after_the_placeholder_are_an_answer(placeholder, words):
    assert grade.filled(f"{placeholder} {words}")
    assert grade.filled(f"{placeholder}\n\n{words}", template=placeholder)


def test_the_reference_run_defaults_to_the_results_folder(tmp_path, reference):
    """Without --reference, the grader reads the reference run from results/ ($LABKIT_RESULTS in tests)."""
    assert reference == tmp_path / "results" and os.environ["LABKIT_RESULTS"] == str(reference)
    nbformat.write(complete(), tmp_path / "student.ipynb")
    assert grade.grade([tmp_path / "student.ipynb"]).iloc[0]["result"] == "pass"
    assert [r.name for r in grade.load_references()] == ["01_demo"]


@pytest.mark.parametrize("how", ["parameters", "injected", "papermill"])
def test_a_quick_smoke_run_is_flagged(tmp_path, reference, how):
    nb = complete()
    if how == "parameters":      # a student set quick = True in the parameters cell
        nb.cells[1].source = "quick = True"
    elif how == "injected":      # papermill -p quick True adds a cell after the parameters
        nb.cells.insert(2, new_code_cell("# Parameters\nquick = True\n", metadata={"tags": ["injected-parameters"]},
                                         execution_count=1))
    else:
        nb.metadata["papermill"] = {"parameters": {"quick": True}}
    row = _grade(tmp_path, reference, nb)
    assert row["full_run"] == ("FAIL: executed with quick = True: a smoke run whose numbers mean nothing; "
                               "set quick = False and run all cells") and row["result"] == "fail"
    assert _grade(tmp_path, reference, complete())["full_run"] == "ok"
