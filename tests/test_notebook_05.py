"""Notebook 05 runs headless with its quick parameters and shows what it promises."""
import re

import psutil
import pytest

from conftest import ROOT
from labkit.notebook import keynumbers
from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "05_model_parallel_rpc.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's labkit
    folder = tmp_path_factory.mktemp("nb05")
    mp.setenv("LABKIT_RESULTS", str(folder / "results"))  # module-scoped: conftest's per-test folder is not set yet
    try:
        yield execute(NAME, folder, quick=True)
    finally:
        mp.undo()


@pytest.mark.slow
def test_runs_trains_compares_and_plots(executed):
    text = outputs_text(executed)
    assert "epoch 1/1" in text and "test acc" in text
    for row in ("single machine", "data parallel, 2 nodes", "model parallel, 4 micro-batches"):
        assert row in text
    comparison = next(o["data"]["text/plain"] for c in executed.cells if "analysis.comparison(" in c.source
                      for o in c.outputs if "data" in o)
    assert "NaN" not in comparison and "data parallel, 2 nodes (all-reduce)" in comparison   # every row measured
    assert "DeprecationWarning" not in text and "Traceback" not in text
    assert "max |grad difference|" in text
    assert count_images(executed) >= 7
    shown = keynumbers.read(executed)
    assert set(shown) == {"mp_test_acc", "mp_max_difference", "mp_bytes_per_step", "mp_step_over_single",
                          "pipeline_speedup"}
    assert shown["mp_max_difference"].value < 1e-5 and shown["mp_step_over_single"].value > 1  # two profiles, four timelines... and the sweep plots


@pytest.mark.slow
def test_split_model_agrees_with_the_local_model_in_the_notebook(executed):
    cells = [c for c in executed.cells if c.cell_type == "code" and "compare_to_local" in c.source]
    assert len(cells) == 2
    for cell in cells:
        shown = next(o["data"]["text/plain"] for o in cell.outputs if "data" in o)
        numbers = [float(v) for v in re.findall(r"\d\.\d+e-\d+|\b0\.0+\b", shown)]
        assert numbers and max(numbers) < 1e-5


@pytest.mark.slow
def test_failing_stage_is_named_and_nothing_is_left_running(executed):
    text = outputs_text(executed)
    assert "stage 2 on worker2 failed: RuntimeError: injected failure" in text
    children = [p for p in psutil.Process().children(recursive=True) if "worker" in " ".join(p.cmdline())]
    assert not children


def test_notebook_is_committed_clean_and_structured():
    nb, _, _ = read_lab_notebook(NAME, answers=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert all(len(src.splitlines()) <= 8 for src in code)  # short cells that call labkit
    assert not any(re.search(r"^\s*(for|while) ", src, re.MULTILINE) for src in code)
