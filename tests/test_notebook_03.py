"""Notebook 03 is committed clean, keeps the lab's shape, and runs headless in quick mode."""
import nbformat

from conftest import ROOT
from nbutil import count_images, execute, outputs_text

NAME = "03_data_parallel_training.ipynb"


def test_notebook_03_is_clean_and_structured():
    nb = nbformat.read(ROOT / "notebooks" / NAME, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("parameters" in t for t in tags) == 1 and sum("answer" in t for t in tags) >= 4
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in text and "## Exercises" in text and "oversubscri" in text.lower()


def test_notebook_03_runs_in_quick_mode(tmp_path):
    nb = execute(NAME, tmp_path, quick=True, nodes=[2])
    text = outputs_text(nb)
    assert "Best 2-worker mode" in text and "all-gather sends" in text and "this machine: alpha" in text
    assert "[node 1]" not in text or "Traceback" not in text
    assert count_images(nb) >= 5
