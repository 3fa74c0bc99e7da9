"""`labkit report` on tiny synthetic notebooks: order, quick parameters, a failing notebook that does not
stop the others, figures, tables, key numbers, run.json and results/README.md; partial runs with --only."""
import json
import os
import re
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import run_cli
from labkit import LabError
from labkit.course import notebook_files, report
from labkit.course import summary as report_summary

META = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _write(folder, name, cells):
    nbformat.write(new_notebook(cells=cells, metadata=META), folder / name)


def make_lab(folder):
    """01 passes (quick parameter, a figure, a table, a key number), 02 fails in cell 3, 03 has no parameters."""
    folder.mkdir()
    _write(folder, "01_ok.ipynb", [
        new_markdown_cell("# 01 · Everything works"),
        new_code_cell("quick = False\nrepeats = 3", metadata={"tags": ["parameters"]}),
        new_code_cell("import os\nfrom labkit import results\nfrom labkit.notebook.keynumbers import key_number\n"
                      "print('quick is', quick, '| tables in', os.environ['LABKIT_RESULTS'])"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]);"),
        new_code_cell("results.append([{'run_id': s, 'strategy': s, 'epoch': e, 'test_acc': 50.0 + 10 * e + 20 * (s == 'iid')}"
                      " for s in ('iid', 'sorted') for e in (1, 2)], 'toy')"),
        new_code_cell("key_number('toy_acc', 97.5, '%', 'a toy accuracy', tolerance=1)"),
    ])
    _write(folder, "02_fails.ipynb", [
        new_markdown_cell("# 02 · Fails"),
        new_code_cell("x = 1"),
        new_code_cell("raise ValueError('first line\\nthe last line')"),
        new_code_cell("print('never printed')"),
    ])
    _write(folder, "03_noquick.ipynb", [
        new_markdown_cell("# 03 · No parameters cell"),
        new_code_cell("print('quick defined:', 'quick' in dir())"),
    ])
    _write(folder, "notes.ipynb", [new_code_cell("raise SystemExit('not a lab notebook: never run')")])
    return folder


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One quick report over the synthetic lab, with stale files from an 'earlier run' in the way."""
    base = tmp_path_factory.mktemp("report")
    lab, out = make_lab(base / "lab"), base / "out"
    for stale in ("notebooks/99_gone.ipynb", "tables/old.csv", "figures/99_gone/cell01_1.png"):
        (out / stale).parent.mkdir(parents=True, exist_ok=True)
        (out / stale).write_text("stale")
    proc = run_cli("report", "--quick", "--jobs", "1", "--notebooks", str(lab), "--out", str(out), timeout=240)
    return lab, out, proc


def test_quick_runs_two_notebooks_at_once_and_records_them_as_one_after_another_would(full_run, tmp_path):
    lab, one_by_one, _ = full_run
    proc = run_cli("report", "--quick", "--notebooks", str(lab), "--out", str(tmp_path), timeout=240)
    assert proc.returncode == 1 and "running 3 notebooks, 2 at once (--jobs 2)" in proc.stdout
    done = re.findall(r"^\[(\d)/3\] (\S+)\.ipynb", proc.stdout, re.MULTILINE)
    assert sorted(k for k, _ in done) == ["1", "2", "3"] and sorted(n for _, n in done) == ["01_ok", "02_fails", "03_noquick"]
    assert "03_noquick.ipynb (no quick parameter: its defaults): ran OK" in proc.stdout
    runs = json.loads((tmp_path / "run.json").read_text())["notebooks"]
    before = json.loads((one_by_one / "run.json").read_text())["notebooks"]
    assert list(runs) == list(before)
    assert [(r["ok"], r["failed_cell"], r["error"], r["figures"]) for r in runs.values()] == \
        [(r["ok"], r["failed_cell"], r["error"], r["figures"]) for r in before.values()]
    assert sorted(p.name for p in (tmp_path / "html").iterdir()) == sorted(p.name for p in (one_by_one / "html").iterdir())


@pytest.mark.parametrize("jobs", ["-1", "x"])
def test_a_bad_jobs_count_is_one_line(jobs):
    proc = run_cli("report", "--quick", "--jobs", jobs, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def _text(nb):
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_every_notebook_runs_in_order_and_a_failure_does_not_stop_the_rest(full_run):
    lab, out, proc = full_run
    assert proc.returncode == 1, proc.stderr  # something failed
    assert "2 of 3 notebooks ran OK" in proc.stdout
    order = [m.group(1) for m in re.finditer(r"^\[\d/3\] (\S+)\.ipynb", proc.stdout, re.MULTILINE)]
    assert order == ["01_ok", "02_fails", "03_noquick"]
    assert "[3/3] 03_noquick.ipynb (no quick parameter: its defaults)" in proc.stdout
    assert "FAILED 02_fails.ipynb: failed at cell 3 of 4" in proc.stderr
    # into a pipe or a log, progress is a line per notebook (on a terminal, a bar of cells), not \r frames
    assert "    02_fails.ipynb: failed at cell 3 of 4" in proc.stdout and "\r" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    runs = json.loads((out / "run.json").read_text())["notebooks"]
    assert list(runs) == ["01_ok.ipynb", "02_fails.ipynb", "03_noquick.ipynb"]
    assert runs["01_ok.ipynb"]["ok"] and runs["03_noquick.ipynb"]["ok"]
    failed = runs["02_fails.ipynb"]
    assert (failed["ok"], failed["failed_cell"], failed["cells"]) == (False, 3, 4)
    assert failed["error"] == "ValueError: the last line"


def test_quick_goes_only_to_notebooks_that_have_it_and_tables_go_to_the_output(full_run):
    lab, out, _ = full_run
    ok = nbformat.read(out / "notebooks" / "01_ok.ipynb", as_version=4)
    assert f"quick is True | tables in {out / 'tables'}" in _text(ok)
    assert "quick defined: False" in _text(nbformat.read(out / "notebooks" / "03_noquick.ipynb", as_version=4))
    runs = json.loads((out / "run.json").read_text())["notebooks"]
    assert runs["01_ok.ipynb"]["quick"] and not runs["03_noquick.ipynb"]["quick"]
    assert "never printed" not in _text(nbformat.read(out / "notebooks" / "02_fails.ipynb", as_version=4))
    assert not (out / "notebooks" / "notes.ipynb").exists()
    assert len(pd.read_csv(out / "tables" / "toy.csv")) == 4
    assert os.environ["LABKIT_RESULTS"] != str(out / "tables")  # the report restored this process's environment


def test_outputs_html_and_figures_are_collected_and_stale_files_removed(full_run):
    lab, out, _ = full_run
    for stem in ("01_ok", "02_fails", "03_noquick"):
        assert (out / "notebooks" / f"{stem}.ipynb").exists()
        assert "<html" in (out / "html" / f"{stem}.html").read_text()[:2000].lower()
    figure = out / "figures" / "01_ok" / "cell04_1.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (out / "figures").iterdir()] == ["01_ok"]
    assert not (out / "notebooks" / "99_gone.ipynb").exists() and not (out / "tables" / "old.csv").exists()
    keys = pd.read_csv(out / "tables" / "key_numbers.csv")
    assert keys[["notebook", "name", "value", "tolerance"]].values.tolist() == [["01_ok", "toy_acc", 97.5, 1.0]]


def test_results_readme_has_environment_status_numbers_and_figures(full_run):
    lab, out, _ = full_run
    text = (out / "README.md").read_text()
    env = json.loads((out / "run.json").read_text())["environment"]
    for expected in (f"| cores | {env['cores']} |", f"| torch | {env['torch']} |", env["timestamp"], "**Quick mode**",
                     "01 · Everything works", "ran OK in", "failed** at cell 3 of 4: ValueError: the last line",
                     "| toy_acc | 97.5 | % | a toy accuracy | ± 1 |", "figures/01_ok/cell04_1.png",
                     "Final test accuracy per run (`tables/toy.csv`)", "| iid | 2 | 90 |", "| sorted | 2 | 70 |",
                     "[`tables/toy.csv`](tables/toy.csv): 4 rows"):
        assert expected in text, expected
    assert "Speed-up" not in text  # no scaling table in this run: the section is left out


def test_only_reruns_some_notebooks_and_keeps_the_rest(full_run, tmp_path):
    lab, out, _ = full_run
    before = (out / "notebooks" / "01_ok.ipynb").read_bytes()
    runs = report.run(report.ReportConfig(only=("03",), notebooks=str(lab), out=str(out)), log=lambda *_: None)
    assert [r.name for r in runs] == ["03_noquick.ipynb"] and runs[0].ok and not runs[0].quick
    record = json.loads((out / "run.json").read_text())["notebooks"]
    assert list(record) == ["01_ok.ipynb", "02_fails.ipynb", "03_noquick.ipynb"]
    assert (out / "notebooks" / "01_ok.ipynb").read_bytes() == before and (out / "tables" / "toy.csv").exists()
    assert "failed** at cell 3 of 4" in (out / "README.md").read_text()


@given(st.sets(st.integers(0, 4)), st.randoms())
def test_select_returns_the_named_notebooks_in_lab_order(chosen, rng):
    lab = [Path(f"{i:02d}_topic{i}.ipynb") for i in range(5)]
    names = [rng.choice([lab[i].name, lab[i].stem, lab[i].name[:2]]) for i in chosen]
    rng.shuffle(names)
    assert report.select(lab, names) == ([p for i, p in enumerate(lab) if i in chosen] if names else lab)


def test_unknown_names_and_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(LabError, match="no notebook called '07'.*01_a"):
        report.select([Path("01_a.ipynb")], ["07"])
    with pytest.raises(LabError, match="timeout"):
        report.ReportConfig(timeout=0)
    with pytest.raises(LabError, match="no notebooks"):
        report.run(report.ReportConfig(notebooks=str(tmp_path), out=str(tmp_path / "out")))
    proc = run_cli("report", "--notebooks", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: notebook folder") and "Traceback" not in proc.stderr


def test_discover_keeps_only_numbered_notebooks_in_name_order(tmp_path):
    for name in ("10_z.ipynb", "02_b.ipynb", "01_a.ipynb", "scratch.ipynb", "1_x.ipynb", "03_c.txt"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in report.discover(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_z.ipynb"]


def test_parameter_names_come_from_the_tagged_cell():
    nb = new_notebook(cells=[new_code_cell("a = 1"), new_code_cell("quick = False\nn: int = 3\nx, y = 1, 2",
                                                                   metadata={"tags": ["parameters"]})])
    assert report.parameter_names(nb) == {"quick", "n"}
    assert report.parameter_names(new_notebook(cells=[new_code_cell("quick = True")])) == set()


def test_failure_and_figures_count_cells_without_the_ones_papermill_adds(tmp_path):
    injected = new_code_cell("quick = True", metadata={"tags": ["injected-parameters"]})
    banner = new_markdown_cell("An Exception was encountered", metadata={"tags": ["papermill-error-cell-tag"]})
    plot = new_code_cell("plot()", outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "fig"})] * 2)
    error = new_code_cell("boom()", outputs=[new_output("error", ename="KeyError", evalue="'x'", traceback=[])])
    banner2 = new_markdown_cell("here", metadata={"tags": ["papermill-error-cell-tag"]})
    nb = new_notebook(cells=[new_markdown_cell("# t"), banner, injected, plot, banner2, error, new_code_cell("after()")])
    assert report.failure(nb) == (3, "KeyError: 'x'")
    saved = notebook_files.save_figures(nb, tmp_path)
    assert [p.name for p in saved] == ["cell02_1.png", "cell02_2.png"] and saved[0].read_bytes()[:4] == b"\x89PNG"


def test_summary_sections_follow_the_tables_that_exist(tmp_path):
    (tmp_path / "tables").mkdir(parents=True)
    record = {"environment": {"cores": 2, "torch": "2.x", "timestamp": "T"}, "quick": False,
              "notebooks": {"01_a.ipynb": {"ok": True, "seconds": 3.2, "cells": 4, "quick": False, "failed_cell": None,
                                           "error": "", "figures": 0}}}
    text = report_summary.write(tmp_path, record).read_text()
    assert "ran OK in 3 s" in text and "Speed-up" not in text and "Key numbers" not in text and "Quick mode" not in text
    pd.DataFrame([{"model": "lenet5", "setup": s, "cores": c, "samples_per_s": v, "speedup": v / 100, "efficiency": v / 100 / c}
                  for s, c, v in (("1 process x 1 thread", 1, 100.0), ("2 workers ddp", 2, 170.0))]
                 ).to_csv(tmp_path / "tables" / "scaling.csv", index=False)
    text = report_summary.write(tmp_path, record).read_text()
    assert "## Speed-up" in text and "| lenet5 | 2 workers ddp | 170 | 1.7 | 0.85 |" in text


def test_final_accuracies_take_each_runs_last_epoch_and_the_settings_that_differ():
    rows = [{"run_id": r, "nodes": 2, "strategy": s, "epoch": e, "train_loss": 1.0 / e, "wall_seconds": 3.0 * e,
             "test_acc": acc + e, "torch": "2.x"} for r, s, acc in (("a", "iid", 90.0), ("b", "sorted", 40.0))
            for e in (1, 2)]
    table = report_summary.final_accuracies(pd.DataFrame(rows))
    assert table.to_dict("records") == [{"nodes": 2, "strategy": "iid", "epoch": 2, "test_acc": 92.0},
                                        {"nodes": 2, "strategy": "sorted", "epoch": 2, "test_acc": 42.0}]



def test_a_cell_that_runs_past_the_timeout_fails_its_notebook(tmp_path):
    (tmp_path / "lab").mkdir()
    _write(tmp_path / "lab", "01_hangs.ipynb", [new_code_cell("import time"), new_code_cell("time.sleep(120)"),
                                                new_code_cell("print('never')")])
    start = time.monotonic()
    (run,) = report.run(report.ReportConfig(notebooks=str(tmp_path / "lab"), out=str(tmp_path / "out"), timeout=2),
                        log=lambda *_: None)
    assert time.monotonic() - start < 60
    assert (run.ok, run.failed_cell) == (False, 2) and "timed out" in run.error.lower(), run.error
