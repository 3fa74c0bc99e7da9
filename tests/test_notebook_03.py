"""Notebook 03 is committed clean, keeps the lab's shape, and runs headless in quick mode."""
import re

from labkit.notebook import keynumbers
from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "03_data_parallel_training.ipynb"


def test_notebook_03_is_clean_and_structured():
    _, text, code = read_lab_notebook(NAME, answers=5)
    assert "oversubscri" in text.lower()
    assert not re.search(r"^\s*(for|while|def|class) ", code, re.M), "loops and definitions belong in labkit"


def test_notebook_03_runs_in_quick_mode(tmp_path):
    nb = execute(NAME, tmp_path, quick=True, nodes=[2])
    text = outputs_text(nb)
    assert "2 workers against one process with 2 threads (95 % intervals" in text  # the verdict, from the table
    assert "speedup_ci95" in text and "vs_threads_ci95" in text    # every speed-up with its interval
    assert "all-gather sends" in text and "this machine: alpha" in text and "First to the target on every seed: " in text
    assert "Traceback" not in text
    assert count_images(nb) >= 6                                   # ... the time-to-accuracy figure among them
    shown = keynumbers.read(nb)
    assert {"speedup_2_sync", "seconds_to_target_allreduce"} <= set(shown) and "speedup_2_workers" not in shown
    assert "synchronous" in shown["speedup_2_sync"].about and shown["speedup_2_sync"].tolerance == 0.4
