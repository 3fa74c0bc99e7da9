"""Notebook 03 is committed clean, keeps the lab's shape, and runs headless in quick mode."""
import re

from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "03_data_parallel_training.ipynb"


def test_notebook_03_is_clean_and_structured():
    _, text, code = read_lab_notebook(NAME, answers=4)
    assert "oversubscri" in text.lower()
    assert not re.search(r"^\s*(for|while|def|class) ", code, re.M), "loops and definitions belong in labkit"


def test_notebook_03_runs_in_quick_mode(tmp_path):
    nb = execute(NAME, tmp_path, quick=True, nodes=[2])
    text = outputs_text(nb)
    assert "Best 2-worker mode" in text and "all-gather sends" in text and "this machine: alpha" in text
    assert "[node 1]" not in text or "Traceback" not in text
    assert count_images(nb) >= 5
