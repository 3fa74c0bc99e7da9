"""Notebook 02 is committed clean, teaches in the lab's shape, and runs headless with test parameters."""
import os
import re

import nbformat

from conftest import ROOT
from labkit.data import partition
from nbutil import count_images, execute, outputs_text

NAME = "02_data_partitioning.ipynb"


def cell_output(nb, marker: str) -> str:
    """The text outputs of the one code cell whose source contains ``marker``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, marker
    return outputs_text(nbformat.v4.new_notebook(cells=cells))


def test_notebook_02_is_clean_and_has_the_lab_structure():
    nb = nbformat.read(ROOT / "notebooks" / NAME, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [(c.cell_type, c.metadata.get("tags", [])) for c in nb.cells]
    assert sum("parameters" in tags for _, tags in tagged) == 1
    assert sum(kind == "markdown" and "answer" in tags for kind, tags in tagged) >= 5
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    source = "\n".join(c.source for c in code)
    for strategy in partition.STRATEGIES:
        assert f'"{strategy}"' in source, strategy
    assert not re.search(r"^\s*(for|while|def|class) ", source, re.MULTILINE)  # loops and code live in labkit


def test_notebook_02_runs_headless_and_exposes_the_broken_samplers(tmp_path, monkeypatch):
    # The kernel must import this checkout's labkit, not whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = execute(NAME, tmp_path, quick=True, nodes=4, audit_epochs=2)
    assert "6000 labels" in outputs_text(nb)
    assert count_images(nb) >= len(partition.STRATEGIES) + 2  # every strategy, the grid, the audit plot
    for marker in ("random_partitioning = ", "fixed_shards = ", "with_replacement = "):
        assert "no problems found" in cell_output(nb, marker), marker
    seed_per_rank = cell_output(nb, "seed_per_rank = ")
    assert re.search(r"the ranks cover 7\d\.\d% of the data", seed_per_rank)
    assert re.search(r"overlap (4[6-9]|5[0-4])\.\d%", seed_per_rank)
    assert "set_epoch missing or ignored" in seed_per_rank
    first_slice = cell_output(nb, "first_slice = ")
    assert "the ranks cover 50% of the data" in first_slice and "overlap 100%" in first_slice
    assert "overlap" in cell_output(nb, "torch_sampler = ")  # PyTorch pads by repeating samples
