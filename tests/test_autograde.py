"""`labkit autograde` on a class generated from small nbgrader notebooks (tests/fixtures/autograde): each
kind of mistake, a hang, crashes, floods, a write outside, a memory hog, broken files and a quick run are
graded in one command with the expected points, and nothing is left running."""
import csv
import json
import os
import sys
from pathlib import Path

import nbformat
import papermill
import psutil
import pytest

from conftest import ROOT, run_cli
from labkit import LabError, cli
from labkit.course import autograde, exercise_grading, sandbox
from labkit.runtime import guard

FIXTURES = ROOT / "tests" / "fixtures" / "autograde"
SOURCE = FIXTURES / "notebooks"
sys.path.insert(0, str(FIXTURES))
import classgen  # noqa: E402

ADD = "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n    {body}"
MEAN = "def mean_all(t):\n    \"\"\"The mean of t over every rank.\"\"\"\n    {body}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference run: the fixture's solution notebooks executed with papermill."""
    folder = tmp_path_factory.mktemp("reference") / "notebooks"
    folder.mkdir()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for path in sorted(SOURCE.glob("*.ipynb")):
        papermill.execute_notebook(str(path), str(folder / path.name), kernel_name="python3", cwd=str(SOURCE),
                                   progress_bar=False, execution_timeout=300)
    return folder


def _class(reference: Path, outside: Path) -> dict:
    """student -> {notebook: nb or bytes}, and the points each should get (13 in all: 4 + 4 results, 2 + 3 checks)."""
    ok = {p.stem: classgen.executed_with_solutions(nbformat.read(p, as_version=4),
                                                   nbformat.read(SOURCE / p.name, as_version=4))
          for p in sorted(reference.glob("*.ipynb"))}
    ex = ok["02_exercises"]

    def with02(nb):
        return {"01_warmup": ok["01_warmup"], "02_exercises": nb}

    stub = exercise_grading.stub(next(c for c in nbformat.read(SOURCE / "02_exercises.ipynb", as_version=4).cells
                                      if classgen.meta(c).get("grade_id") == "add"))
    return {
        "complete": (ok, 13),
        # subtracts, and edits its test cell to pass: the source's test cell runs anyway
        "subtracts": (with02(classgen.set_graded(classgen.set_solution(ex, "add", ADD.format(body="return a - b")),
                                                 "check_add", "pass")), 11),
        "sums": (with02(classgen.set_solution(ex, "mean_all", MEAN.format(body="dist.all_reduce(t)\n    return t"))), 10),
        "not_done_quick": ({"01_warmup": classgen.as_quick_run(ok["01_warmup"]),
                            "02_exercises": classgen.set_solution(ex, "add", stub)}, 10),
        "hangs": (with02(classgen.set_solution(ex, "mean_all", MEAN.format(body="while True:\n        pass"))), 10),
        "exits": (with02(classgen.set_solution(ex, "mean_all", "import os\nos._exit(3)")), 10),
        "segfaults": (with02(classgen.set_solution(ex, "add", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")), 8),
        "prints": (with02(classgen.set_solution(ex, "add", ADD.format(body="while True:\n        print('spam')"))), 11),
        "floods_fd": (with02(classgen.set_solution(ex, "mean_all", "import os\nwhile True:\n    os.write(1, b'x' * 65536)")), 10),
        "writes_outside": (with02(classgen.set_solution(ex, "mean_all", MEAN.format(
            body=f"open({str(outside)!r}, 'w').write('x')\n    dist.all_reduce(t)\n    return t / dist.get_world_size()"))), 8),
        "hogs_memory": (with02(classgen.set_solution(ex, "add", "import time\nhog = b'x' * (3 * 2**30)\ntime.sleep(10)")), 8),
        "corrupt": ({"01_warmup": ok["01_warmup"], "02_exercises": nbformat.writes(ex).encode()[:-40]}, 4),
        "not_a_notebook": ({"01_warmup": b"%PDF-1.4 \xff\xfe", "02_exercises": ex}, 9),
    }


@pytest.fixture(scope="module")
def graded(reference, tmp_path_factory):
    """The whole class graded with one command; (out folder, class, completed process, outside file)."""
    root = tmp_path_factory.mktemp("class")
    outside = root / "outside.txt"
    klass = _class(reference, outside)
    for student, (notebooks, _) in klass.items():
        classgen.write_student(root / "submissions", student, notebooks)
    out = root / "out"
    proc = run_cli("autograde", str(root / "submissions"), "--out", str(out), "--source", str(SOURCE),
                   "--reference", str(reference.parent), "--timeout", "60", "--memory", "2000", "--jobs", "2",
                   timeout=600)
    return out, klass, proc, outside


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_class_is_graded_in_one_command_with_the_expected_points(graded):
    out, klass, proc, _ = graded
    assert proc.returncode == 0, proc.stderr[-3000:]
    book = {row["student"]: row for row in _rows(out / "gradebook.csv")}
    assert sorted(book) == sorted(klass)
    got = {student: float(row["total"]) for student, row in book.items()}
    assert got == {student: points for student, (_, points) in klass.items()}
    assert all(row["max"] == "13" for row in book.values())
    assert book["complete"]["percent"] == "100.0" and book["complete"]["flags"] == ""
    assert book["sums"]["02_exercises check_mean_all"] == "0" and book["sums"]["02_exercises check_add"] == "2"
    assert f"graded {len(klass)}/{len(klass)} students" in proc.stderr  # progress with an ETA
    assert "to go" in proc.stderr


@pytest.mark.parametrize("student, flag", [
    ("hangs", "02_exercises: timeout"), ("exits", "02_exercises: crash"), ("segfaults", "02_exercises: crash"),
    ("prints", "02_exercises: output flood"), ("floods_fd", "02_exercises: output flood"),
    ("writes_outside", "02_exercises: write outside"), ("hogs_memory", "02_exercises: memory"),
    ("corrupt", "02_exercises: corrupt"), ("not_a_notebook", "01_warmup: not a notebook"),
    ("not_done_quick", "01_warmup: quick=True run"),
])
def test_each_failure_is_flagged(graded, student, flag):
    out, *_ = graded
    flags = {row["student"]: row["flags"] for row in _rows(out / "gradebook.csv")}
    assert flag in flags[student], flags[student]
    assert flags["complete"] == ""


@pytest.mark.parametrize("student, item, why", [
    ("subtracts", "check_add", "did you subtract?"),
    ("sums", "check_mean_all", "did you divide by the world size?"),
    ("not_done_quick", "check_add", "not written yet: add still raises NotImplementedError"),
    ("not_done_quick", "numbers", "quick=True run"),
    ("hangs", "check_mean_all", "timeout: still running after 60 s"),
    ("exits", "check_mean_all", "crash: the process exited with status 3"),
    ("segfaults", "check_add", "crash: the process died of SIGSEGV"),
    ("prints", "check_add", "OutputFlood"),
    ("writes_outside", "check_mean_all", "write outside its folder"),
    ("hogs_memory", "check_add", "memory: used"),
    ("corrupt", "check_mean_all", "corrupt JSON"),
])
def test_points_csv_and_feedback_say_why(graded, student, item, why):
    out, *_ = graded
    rows = [r for r in _rows(out / "points.csv") if r["student"] == student and r["item"] == item and r["why"]]
    assert len(rows) == 1 and rows[0]["points"] == "0" and why in rows[0]["why"], rows
    feedback = (out / "feedback" / f"{student}.md").read_text()
    assert f"`{item}`" in feedback and why in feedback


def test_a_complete_submission_gets_every_point_and_says_so(graded):
    out, *_ = graded
    rows = [r for r in _rows(out / "points.csv") if r["student"] == "complete"]
    assert rows and all(r["points"] == r["max"] for r in rows)
    assert {r["item"] for r in rows} == {"ran", "figures", "answers", "numbers", "check_add", "check_mean_all"}
    assert "**13 of 13 points (100 %).**" in (out / "feedback" / "complete.md").read_text()


def test_the_write_outside_was_refused_and_nothing_is_left_running(graded):
    out, _, _, outside = graded
    assert not outside.exists()
    assert "writes refused outside your folder" in (out / "feedback" / "writes_outside.md").read_text()
    assert not (out / ".work").exists()
    left = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(out) in (p.info["cwd"] or "") or "labkit.course.cellrunner" in " ".join(p.info["cmdline"] or []):
                left.append(p.pid)
        except psutil.Error:
            pass
    assert not left


def test_bad_input_gets_a_one_line_error(tmp_path, capsys):
    assert cli.main(["autograde", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "alice").mkdir(parents=True)
    assert cli.main(["autograde", str(tmp_path / "empty"), "--source", str(SOURCE)]) == 2
    assert "error: no submissions in" in capsys.readouterr().err
    with pytest.raises(LabError, match="jobs must be"):
        autograde.AutogradeConfig(str(tmp_path), jobs=0)
    with pytest.raises(LabError, match="timeout must be a positive number"):
        sandbox.Limits(timeout=0)


def test_the_plan_runs_the_sources_test_cells_and_the_students_solutions():
    source = nbformat.read(SOURCE / "02_exercises.ipynb", as_version=4)
    student = classgen.set_graded(classgen.set_solution(source, "add", "def add(a, b):\n    return 0"), "check_add", "pass")
    plan = exercise_grading.plan("02_exercises", source, student)
    steps = {s["id"]: s for s in plan["steps"]}
    assert [s["id"] for s in plan["steps"]] == ["parameters", "quick", "setup", "add", "check_add", "mean_all",
                                                "check_mean_all"]
    assert steps["add"]["source"] == "def add(a, b):\n    return 0"
    assert "BEGIN HIDDEN TESTS" in steps["check_add"]["source"] and steps["check_add"]["points"] == 2
    deleted = nbformat.v4.new_notebook(cells=[c for c in student.cells if classgen.meta(c).get("grade_id") != "mean_all"])
    plan = exercise_grading.plan("02_exercises", source, deleted)
    assert plan["missing"] == ["mean_all"]
    assert "raise NotImplementedError()" in {s["id"]: s for s in plan["steps"]}["mean_all"]["source"]


@pytest.mark.parametrize("outputs, points, why", [
    ([], 2, ""),
    ([{"output_type": "stream", "name": "stdout", "text": "PASS"}], 2, ""),
    ([{"output_type": "stream", "name": "stderr", "text": "UserWarning: x"}], 0, "wrote to stderr"),
    ([{"output_type": "error", "ename": "CheckFailed", "evalue": "FAIL add: wrong", "traceback": []}], 0, "FAIL add: wrong"),
])
def test_graded_cells_score_by_nbgraders_rule(outputs, points, why):
    step = {"source": "check()", "meta": {"grade": True, "grade_id": "c", "points": 2, "solution": False,
                                          "locked": True, "schema_version": 3, "task": False}}
    assert exercise_grading.score(step, outputs) == points
    assert why in exercise_grading.why(outputs)


def test_the_guard_refuses_writes_outside_and_allows_inside(tmp_path):
    inside, log = tmp_path / "inside", tmp_path / "guard.log"
    inside.mkdir()
    code = (f"from labkit.runtime import guard\nguard.install([{str(inside)!r}], {str(log)!r})\n"
            f"open({str(inside / 'ok.txt')!r}, 'w').write('fine')\nopen({str(inside / 'ok.txt')!r}).read()\n"
            "import os\n"
            f"for attempt in (lambda: open({str(tmp_path / 'no.txt')!r}, 'a'), lambda: os.mkdir({str(tmp_path / 'd')!r}),\n"
            f"                lambda: os.rename({str(inside / 'ok.txt')!r}, {str(tmp_path / 'moved')!r})):\n"
            "    try:\n        attempt()\n        print('allowed')\n    except PermissionError as exc:\n        print('refused')\n")
    proc = run_cli_python(code)
    assert proc.stdout.split() == ["refused"] * 3, proc.stderr
    assert (inside / "ok.txt").read_text() == "fine" and not (tmp_path / "no.txt").exists()
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == ["open", "os.mkdir", "os.rename"]
    assert guard.written_paths("open", ("x", "r", os.O_RDONLY)) == []


def run_cli_python(code: str):
    import subprocess
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)


# ------------------------------------------------------------------ the lab's own notebooks

LAB = ROOT / "notebooks"
REFERENCE_RUN = ROOT / "results" / "notebooks"
PER_RANK_SEED = ("generator.manual_seed(self.seed * 100_003 + self.epoch)",
                 "generator.manual_seed(self.seed * 100_003 + self.epoch + self.rank)")


@pytest.fixture(scope="module")
def lab_graded(tmp_path_factory):
    """Two students built from the reference run and the solution notebooks: one complete, one whose notebook
    02 sampler is seeded per rank and whose other exercises are all left as their stubs."""
    sources = {p.stem: nbformat.read(p, as_version=4) for p in sorted(LAB.glob("[0-9][0-9]_*.ipynb"))}
    if not any(exercise_grading.graded_cells(nb) for nb in sources.values()):
        pytest.skip("the lab's notebooks have no exercise yet")
    ok = {name: classgen.executed_with_solutions(nbformat.read(REFERENCE_RUN / f"{name}.ipynb", as_version=4), nb)
          for name, nb in sources.items()}
    mixed = {}
    for name, nb in ok.items():
        if name.startswith("02"):
            cell = classgen.solutions(nb)["RandomPartitionSampler"]
            assert PER_RANK_SEED[0] in cell
            nb = classgen.set_solution(nb, "RandomPartitionSampler", cell.replace(*PER_RANK_SEED))
        else:
            for c in sources[name].cells:
                if exercise_grading.is_solution(c):
                    nb = classgen.set_solution(nb, classgen.meta(c)["grade_id"], exercise_grading.stub(c))
        mixed[name] = nb
    root = tmp_path_factory.mktemp("lab_class")
    for student, notebooks in (("complete", ok), ("mixed", mixed)):
        classgen.write_student(root / "submissions", student, notebooks)
    proc = run_cli("autograde", str(root / "submissions"), "--out", str(root / "out"), "--reference",
                   str(REFERENCE_RUN.parent), "--timeout", "600", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out", sources


def test_the_lab_graded_with_its_own_checks(lab_graded):
    out, sources = lab_graded
    mine = {(r["student"], r["notebook"], r["item"]): r for r in _rows(out / "points.csv")}
    for name, nb in sources.items():
        for grade_id, _ in exercise_grading.graded_cells(nb):
            complete, mixed = mine[("complete", name, grade_id)], mine[("mixed", name, grade_id)]
            assert complete["points"] == complete["max"], complete  # the reference passes, nothing on stderr
            if grade_id == "check_RandomPartitionSampler":
                assert mixed["points"] == "0" and "every rank shuffles with its own seed" in mixed["why"], mixed
            elif name.startswith("02"):
                assert mixed["points"] == mixed["max"], mixed
            else:
                assert mixed["points"] == "0" and "not written yet" in mixed["why"], mixed
    assert "every rank shuffles with its own seed" in (out / "feedback" / "mixed.md").read_text()
