"""Notebook 01 runs headless with its quick parameters and teaches what it promises."""
import pytest

from conftest import ROOT
from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "01_cluster_basics.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's labkit
    try:
        yield execute(NAME, tmp_path_factory.mktemp("nb01"), quick=True, nodes=4)
    finally:
        mp.undo()


def test_cell_defined_function_runs_on_four_workers_and_returns_ranks(executed):
    text = outputs_text(executed)
    for r in range(4):
        assert f"'rank': {r}, 'world_size': 4" in text
        assert f"[node {r}] hello from rank {r} of 4" in text


def test_collectives_show_the_right_numbers(executed):
    text = outputs_text(executed)
    assert "[3.0, 0.0, 1.0, 2.0]" in text  # the ring pass: rank k got k-1 (rank 0 from rank 3)
    assert text.count("tensor([10.])") >= 4                  # all-reduce of 1+2+3+4 on every rank


def test_failures_are_caught_and_the_next_launch_works(executed):
    text = outputs_text(executed)
    assert "failed ranks: [1" in text and "reason: exception" in text
    assert "rank 1 raised ValueError: rank 1 trips over a bad batch" in text
    assert "timed out after 6 s: rank(s) 3 had not finished" in text
    assert "[0, 1, 2, 3]" in text


def test_alpha_beta_is_measured_and_plotted(executed):
    text = outputs_text(executed)
    assert "alpha = " in text and "bandwidth = " in text
    assert count_images(executed) >= 2


def test_notebook_is_committed_clean_and_structured():
    nb, _, _ = read_lab_notebook(NAME, answers=4)
