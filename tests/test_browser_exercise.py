"""An exercise as a new student meets it, in JupyterLab in headless Chromium.

`make lab` writes the student release (``labkit release``) and opens it; here the release goes to a
temporary folder, JupyterLab serves it, and the student writes notebook 02's random-partitioning
sampler with the original lab's mistake (a seed per rank), runs the check, reads its diagnosis, fixes
the sampler and sees the check pass. Screenshots: test-output/browser/, and with
``DMLLAB_KEEP_SCREENSHOTS=1`` results/screenshots/ for the README.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nbformat
import pytest

from browser_util import Lab, cell, code_cell_index, command, describe, open_notebook, output_text, run_cell, set_cell_text, \
    survivors, wait_done
from conftest import ROOT
from test_browser import KEEP, OUT, browser, page  # noqa: F401 - fixtures (they use this module's `lab`)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NOTEBOOK = "02_data_partitioning.ipynb"
HEADER = '''class RandomPartitionSampler(Sampler):
    """Random partitioning: this rank's disjoint slice of one permutation per epoch that all ranks share."""

    def __init__(self, size, rank, nodes, seed=0):
        super().__init__()
        self.size, self.rank, self.nodes, self.seed, self.epoch = size, rank, nodes, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.size // self.nodes

    def __iter__(self):
'''
# The original lab's mistake: every rank seeds its own shuffle, so the "slices" come from different
# permutations and overlap.
SEED_PER_RANK = HEADER + '''        generator = torch.Generator().manual_seed(self.seed + self.rank + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        return iter(order[self.rank * len(self):(self.rank + 1) * len(self)].tolist())
'''
FIXED = HEADER + '''        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        return iter(order[self.rank * len(self):(self.rank + 1) * len(self)].tolist())
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The student release, written by ``labkit release`` as `make lab` does, served by JupyterLab."""
    state = tmp_path_factory.mktemp("student-lab")
    released = subprocess.run([sys.executable, "-m", "labkit", "release", "--into", str(state / "student")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert released.returncode == 0, released.stderr
    assert "BEGIN SOLUTION" not in (state / "student" / NOTEBOOK).read_text()
    server = Lab(state / "student", state, ROOT)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        left = survivors(server.mark)
        assert not left, f"processes of the browser test survived JupyterLab's stop: {describe(left)}"


def _keep(locator, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    locator.screenshot(path=OUT / name)
    if os.environ.get("DMLLAB_KEEP_SCREENSHOTS"):
        KEEP.mkdir(parents=True, exist_ok=True)
        shutil.copy(OUT / name, KEEP / name)


def _run(page, index: int) -> str:
    run_cell(page, index)
    wait_done(page, index)
    return output_text(page, index) if cell(page, index).locator(".jp-OutputArea").count() else ""


def test_a_student_writes_a_sampler_reads_the_diagnosis_and_fixes_it(page, lab):  # noqa: F811 - fixture
    path = lab.root / NOTEBOOK
    exercise = code_cell_index(path, "class RandomPartitionSampler")
    check = code_cell_index(path, "check_partition_sampler(RandomPartitionSampler)")
    after = code_cell_index(path, "use(partition_result, RandomPartitionSampler)")
    open_notebook(page, lab, NOTEBOOK)
    assert "NotImplementedError" in cell(page, exercise).inner_text(), "the release should hold the skeleton"
    # the cells above the exercise, as a student would have run them (the first exercise still open)
    cell(page, exercise).locator(".jp-InputPrompt").first.click()
    command(page, "notebook:run-all-above")
    wait_done(page, max(i for i, c in enumerate(nbformat.read(path, as_version=4).cells[:exercise])
                        if c.cell_type == "code"), timeout=300_000)

    # untouched skeleton: the check says the exercise is not written yet
    _run(page, exercise)
    assert "not written yet" in _run(page, check)

    # the original lab's sampler: a seed per rank
    set_cell_text(page, exercise, SEED_PER_RANK)
    _run(page, exercise)
    verdict = _run(page, check)
    assert "not yet" in verdict and "overlap" in verdict and "own seed" in verdict, verdict
    cell(page, check).scroll_into_view_if_needed()
    _keep(cell(page, check), "exercise_check_fails.png")

    # fixed: one permutation per epoch from a seed all ranks share
    set_cell_text(page, exercise, FIXED)
    _run(page, exercise)
    verdict = _run(page, check)
    assert "passed" in verdict and "not yet" not in verdict, verdict
    _keep(cell(page, check), "exercise_check_passes.png")

    # the audit after the check now runs the student's sampler, with no fallback notice
    audit = _run(page, after)
    assert "not done yet" not in audit and "reference" not in audit, audit
