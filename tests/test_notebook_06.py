"""Notebook 06 ("A real network") is committed clean and keeps the lab's shape; it runs headless in quick
mode on emulated nodes (network namespaces as root, or Docker) and, on a machine with neither
(LABKIT_CLUSTER_BACKEND=none), says so in one line and shows the reference run to the end. The prediction
math of ``labkit.cluster.measure`` is checked on made-up tables, without any node."""
import re

import pandas as pd
import pytest

from labkit.cluster import jobs, measure
from labkit.collectives.costmodel import CostModel
from labkit.errors import LabError
from labkit.notebook import keynumbers
from nbutil import count_images, execute, outputs_text, read_lab_notebook

NAME = "06_real_network.ipynb"


def test_notebook_06_is_clean_and_structured():
    nb, text, code = read_lab_notebook(NAME, answers=3)
    assert "tbf" in text and "netem" in text and "oversubscribed" in text.lower()
    assert not re.search(r"^\s*(for|while|def|class) ", code, re.M), "loops and definitions belong in labkit"
    parameters = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "quick = False" in parameters and 'backend = "auto"' in parameters


def _backend_or_skip():
    backend, why = jobs.available()
    if backend is None:
        pytest.skip(why)
    return backend


@pytest.mark.timeout(600)
def test_notebook_06_runs_in_quick_mode_on_emulated_nodes(tmp_path, monkeypatch):
    backend = _backend_or_skip()
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path / "tables"))
    nb = execute(NAME, tmp_path, quick=True)
    text = outputs_text(nb)
    assert f"measuring on emulated nodes: {backend} backend" in text and "Traceback" not in text
    assert re.search(r"lenet5, 2 nodes: speed-up unshaped [\d.]+x \([\d.]+-[\d.]+\), at 100 Mbit/s [\d.]+x", text), text
    assert count_images(nb) >= 2   # the all-reduce fits and measured against predicted speed-up
    assert {"lenet5_speedup_2_nodes_unshaped", "lenet5_speedup_2_nodes_100mbit"} <= set(keynumbers.read(nb))
    assert set(pd.read_csv(tmp_path / "tables" / "cluster_dp.csv")["rate"]) == {"one node", "unshaped", "100 Mbit/s"}


@pytest.mark.timeout(300)
def test_without_a_backend_the_notebook_says_why_in_one_line_and_shows_the_reference_run(tmp_path, monkeypatch):
    if not (measure.REFERENCE / "cluster_dp.csv").exists():
        pytest.skip("no reference run committed in results/reference/ yet (labkit report --only 06)")
    monkeypatch.setenv("LABKIT_CLUSTER_BACKEND", "none")
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path / "tables"))
    nb = execute(NAME, tmp_path, quick=True)
    text = outputs_text(nb)
    line = next(line for line in text.splitlines() if "LABKIT_CLUSTER_BACKEND=none" in line)
    assert "the tables and figures below are the reference run's" in line and "Traceback" not in text
    assert count_images(nb) >= 2 and "lenet5, 2 nodes: speed-up unshaped" in text
    assert not (tmp_path / "tables").exists()   # nothing measured, nothing written


# ---------------------------------------------------------------- the prediction math, on made-up tables

def _comm(links: dict, nodes: int = 2) -> pd.DataFrame:
    """All-reduce rows exactly on CostModel lines: {rate label: (alpha, bit/s)}."""
    rows = [{"rate": rate, "rate_bit": bits, "op": "all_reduce", "bytes": n, "nodes": nodes,
             "seconds": float(CostModel.link(bits / 1e9, alpha).seconds("all_reduce", n, nodes)),
             "min_seconds": 0.0, "repeats": 1} for rate, (alpha, bits) in links.items() for n in (4096, 2**20, 2**22)]
    return pd.DataFrame(rows)


def _speed(rates, compute_ms=(4.0, 5.0, 6.0), model="lenet5") -> pd.DataFrame:
    """A 1-node run of three epochs (10 steps of ``compute_ms``) and 2-node runs at ``rates``."""
    rows = [{"model": model, "rate": "one node", "nodes": 1, "epoch": e + 1, "compute_s": c / 100, "steps": 10,
             "speedup": 1.0} for e, c in enumerate(compute_ms)]
    rows += [{"model": model, "rate": r, "nodes": 2, "epoch": e + 1, "compute_s": 0.0, "steps": 10,
              "speedup": 1.0} for r in rates for e in range(len(compute_ms))]
    return pd.DataFrame(rows)


def test_the_prediction_drops_with_the_rate_and_is_n_at_unlimited_bandwidth():
    links = {"fast": (0.0, 1e15), "1 Gbit/s": (50e-6, 1e9), "100 Mbit/s": (50e-6, 1e8), "10 Mbit/s": (50e-6, 1e7)}
    table = measure.predicted(_speed(list(links)), _comm(links)).set_index("rate")
    assert list(table["predicted"]) == sorted(table["predicted"], reverse=True)
    assert table.loc["fast", "predicted"] == pytest.approx(2.0, abs=1e-3)   # compute only: N x
    assert table.loc["10 Mbit/s", "predicted"] < 0.1
    # 100 Mbit/s by hand: lenet5's gradients once over the link (2 nodes), plus 2 alphas, after 5 ms of compute
    slow = table.loc["100 Mbit/s"]
    by_hand = 2 * 5e-3 / (5e-3 + 2 * 50e-6 + slow["grad_mb"] * 1e6 * 8 / 1e8)
    assert slow["predicted"] == pytest.approx(by_hand, rel=1e-3)
    assert slow["predicted_min"] < slow["predicted"] < slow["predicted_max"]   # the slowest and fastest 1-node epoch


def test_the_prediction_needs_the_collectives_of_every_rate():
    with pytest.raises(LabError, match="no all-reduce measured at 100 Mbit/s"):
        measure.predicted(_speed(["100 Mbit/s"]), _comm({"unshaped": (50e-6, 1e10)}))


def test_the_speedup_is_paired_epoch_by_epoch_with_the_one_node_run(monkeypatch):
    """dp_speedup on fake nodes: the job arguments, and samples/s over the 1-node run's same epoch."""
    calls = []

    class FakeNodes:
        def __init__(self, backend, nodes):
            self.nodes = nodes

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def run(self, nodes, rate, args, table):
            calls.append((nodes, rate, args))
            fast = {"": 1.5, "100mbit": 0.5}[rate] if nodes > 1 else 1.0
            return pd.DataFrame([{"epoch": e, "samples_per_s": 100 * e * fast, "epoch_seconds": 1.0,
                                  "compute_s": 0.1, "comm_s": 0.0, "wait_s": 0.0, "samples": 20 * nodes * 32}
                                 for e in (1, 2)])
    monkeypatch.setattr(jobs, "Nodes", FakeNodes)
    speed = measure.dp_speedup(["lenet5"], [1, 2], ["", "100mbit"], epochs=2, steps={"lenet5": 20}, progress=False)
    assert [(n, r) for n, r, _ in calls] == [(1, ""), (2, ""), (2, "100mbit")]
    args = calls[1][2]
    assert args[args.index("--epoch-steps") + 1] == "20" and args[args.index("--train-subset") + 1] == str(2 * 32 * 20)
    by_rate = speed.groupby("rate")["speedup"].apply(list).to_dict()
    assert by_rate == {"one node": [1.0, 1.0], "unshaped": [1.5, 1.5], "100 Mbit/s": [0.5, 0.5]}
    assert set(speed["steps"]) == {20}


def test_rates_are_compared_only_beyond_the_spread_of_the_epochs():
    table = pd.DataFrame([{"model": "lenet5", "nodes": 2, "rate": r, "measured": m, "measured_min": lo,
                           "measured_max": hi} for r, m, lo, hi in (("unshaped", 1.1, 1.0, 1.2),
                                                                     ("100 Mbit/s", 0.4, 0.3, 0.5))])
    assert measure.compare_rates(table, "lenet5", 2) == ("lenet5, 2 nodes: speed-up unshaped 1.10x (1.00-1.20), at 100 "
                                                         "Mbit/s 0.40x (0.30-0.50): lower at 100 Mbit/s (the epochs' "
                                                         "ranges do not overlap), by 2.8x.")
    table.loc[1, "measured_max"] = 1.05
    assert "overlap: no difference shown" in measure.compare_rates(table, "lenet5", 2)


def test_the_backend_choice_says_in_one_line_why_there_is_none(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_CLUSTER_BACKEND", "none")
    assert jobs.available() == jobs.available("auto") == (None, "LABKIT_CLUSTER_BACKEND=none: measuring on emulated "
                                                                "nodes is switched off")
    monkeypatch.setenv("PATH", str(tmp_path))   # no docker on this PATH
    backend, why = jobs.available("docker")
    assert why.startswith("no emulated cluster here (docker: docker is not installed") and "\n" not in why
    assert backend is None
    with pytest.raises(LabError, match="unknown cluster backend 'kubernetes'"):
        jobs.available("kubernetes")
