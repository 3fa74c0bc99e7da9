"""Notebook 04 is committed clean, keeps the lab's shape, and runs headless in quick mode."""
import re

import psutil

from labkit.notebook import keynumbers
from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "04_partitioning_impact.ipynb"


def test_notebook_04_is_clean_and_structured():
    _, text, code = read_lab_notebook(NAME, answers=7)
    assert "simulate" in text and "subsets" in text  # says how it fits the budget
    assert "equal steps" in text and "shortest node" in text and "0.001" in text  # 2b and the original lr
    assert not re.search(r"^\s*(for|while|def|class) ", code, re.M), "loops and definitions belong in labkit"


def test_notebook_04_runs_in_quick_mode(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    nb = execute(NAME, tmp_path, quick=True)
    text = outputs_text(nb)
    for expected in ("Random sampling drew", "all-reduce every step: IID reaches", "local SGD H=1 epoch",
                     "lenet5_gn", "NIID-Bench", "expected effect", "largest parameter difference",
                     "shortest node", "longest node", "2 steps", "label_k_random k=2"):
        assert expected in text, expected
    assert "Traceback" not in text
    # section 1 ran notebook 02's samplers (its solutions: they pass, and draw labkit's orders, so the runs
    # recorded for labkit's samplers are reused rather than trained again)
    assert "PASS RandomPartitionSampler" in text and "PASS RandomSamplingSampler" in text
    assert "is not done yet" not in text and "runs on your samplers" not in text
    assert count_images(nb) >= 6
    assert set(keynumbers.read(nb)) == {"iid_acc_2_nodes", "first_slice_coverage", "iid_acc_10_nodes",
                                        "label_k1_allreduce_acc", "label_k1_shortest_acc", "label_k1_fedavg_acc"}
    outcomes = {"appeared", "did not appear", "not decided at this budget"}
    table = next(o["data"]["text/plain"] for c in nb.cells if "expectations.table" in c.source for o in c.outputs
                 if "data" in o)
    assert any(outcome in table for outcome in outcomes) and "True" not in table and "False" not in table
    assert keynumbers.read(nb)["first_slice_coverage"].value == 50.0  # it only ever shows half the data
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not psutil.wait_procs(new, timeout=20)[1], "the kernel or its sweep workers outlived the notebook"
