"""Notebook 04 is committed clean, keeps the lab's shape, and runs headless in quick mode."""
import re

import nbformat
import psutil

from conftest import ROOT
from nbutil import count_images, execute, outputs_text

NAME = "04_partitioning_impact.ipynb"


def test_notebook_04_is_clean_and_structured():
    nb = nbformat.read(ROOT / "notebooks" / NAME, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t for t in tags) == 1 and sum("answer" in t for t in tags) >= 7
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in text and "## Exercises" in text
    assert "simulate" in text and "subsets" in text  # says how it fits the budget
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"^\s*(for|while|def|class) ", code, re.M), "loops and definitions belong in labkit"


def test_notebook_04_runs_in_quick_mode(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    nb = execute(NAME, tmp_path, quick=True)
    text = outputs_text(nb)
    for expected in ("Random sampling drew", "all-reduce every step: IID reaches", "local SGD H=1 epoch",
                     "lenet5_gn", "NIID-Bench", "expected effect", "largest parameter difference"):
        assert expected in text, expected
    assert "Traceback" not in text
    assert count_images(nb) >= 6
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not psutil.wait_procs(new, timeout=20)[1], "the kernel or its sweep workers outlived the notebook"
