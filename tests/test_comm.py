"""labkit.collectives: the alpha-beta model, its fit, speed-up predictions, and real collective timings."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from labkit import results
from labkit.collectives import bench, costmodel
from labkit.notebook import plots
from labkit.errors import LabError

matplotlib.use("Agg")

alphas = st.floats(1e-6, 1e-3)
betas = st.floats(1e-11, 1e-8)
node_counts = st.integers(2, 64)


# ---------------------------------------------------------------- the model

@given(nodes=node_counts, nbytes=st.floats(1, 1e9))
def test_ring_terms_match_the_textbook(nodes, nbytes):
    latencies, volume = costmodel.terms("all_reduce", nbytes, nodes)
    assert latencies == 2 * (nodes - 1)
    assert volume == pytest.approx(2 * (nodes - 1) / nodes * nbytes)
    assert volume < 2 * nbytes  # a ring all-reduce never sends more than 2n bytes per node
    gather_latencies, gather_volume = costmodel.terms("all_gather", nbytes, nodes)
    assert (2 * gather_latencies, 2 * gather_volume) == pytest.approx((latencies, volume))
    steps, _ = costmodel.terms("broadcast", nbytes, nodes)
    assert 2 ** (steps - 1) < nodes <= 2 ** steps


@given(alpha=alphas, beta=betas, nodes=node_counts, small=st.floats(1, 1e6), factor=st.floats(1.01, 100))
def test_modelled_time_grows_with_bytes_and_nodes_and_is_zero_alone(alpha, beta, nodes, small, factor):
    model = costmodel.CostModel(alpha, beta)
    for op in costmodel.OPS:
        assert model.seconds(op, small * factor, nodes) > model.seconds(op, small, nodes)
        assert model.seconds(op, small, nodes + 1) >= model.seconds(op, small, nodes)
        assert model.seconds(op, small, 1) == 0


def _synthetic(alpha, beta, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"op": op, "bytes": b, "nodes": n,
             "seconds": costmodel.CostModel(alpha, beta).seconds(op, b, n) * (1 + noise * rng.standard_normal())}
            for op in costmodel.OPS for n in (2, 4) for b in (256, 4096, 65536, 2**20, 2**22)]
    return pd.DataFrame(rows)


@settings(max_examples=50)
@given(alpha=alphas, beta=betas)
def test_fit_recovers_alpha_and_beta_from_model_data(alpha, beta):
    for ops in (("all_reduce",), costmodel.OPS):
        model = costmodel.fit(_synthetic(alpha, beta), ops=ops)
        assert model.alpha == pytest.approx(alpha, rel=1e-6) and model.beta == pytest.approx(beta, rel=1e-6)


@given(alpha=alphas, beta=betas, seed=st.integers(0, 100))
def test_fit_with_noise_stays_close_and_never_negative(alpha, beta, seed):
    model = costmodel.fit(_synthetic(alpha, beta, noise=0.05, seed=seed))
    assert model.alpha >= 0 and model.beta >= 0
    for op in costmodel.OPS:  # the fitted model predicts every timing within the noise level
        table = _synthetic(alpha, beta)
        predicted = model.seconds(op, table["bytes"], table["nodes"])
        truth = costmodel.CostModel(alpha, beta).seconds(op, table["bytes"], table["nodes"])
        assert np.all(np.abs(predicted / truth - 1) < 0.25)


def test_fit_refuses_too_little_data():
    one_size = _synthetic(1e-4, 1e-9)
    with pytest.raises(LabError, match="at least two message sizes"):
        costmodel.fit(one_size[one_size["bytes"] == 256])


def test_link_speed_converts_to_beta():
    model = costmodel.CostModel.link(10, alpha=5e-5)
    assert model.beta == pytest.approx(8e-10) and model.gbit == pytest.approx(10)
    with pytest.raises(LabError, match="bandwidth must be positive"):
        costmodel.CostModel.link(0, alpha=1e-5)
    with pytest.raises(LabError, match="cannot be negative"):
        costmodel.CostModel(-1.0, 1e-9)


@given(compute=st.floats(1e-4, 1), grad=st.floats(1e3, 1e9), alpha=alphas, nodes=node_counts)
def test_speedup_is_bounded_by_n_and_better_with_more_bandwidth(compute, grad, alpha, nodes):
    slow, fast = costmodel.CostModel.link(1, alpha), costmodel.CostModel.link(100, alpha)
    for scaling in ("weak", "strong"):
        s_slow = costmodel.predict_speedup(compute, grad, nodes, slow, scaling)
        s_fast = costmodel.predict_speedup(compute, grad, nodes, fast, scaling)
        assert 0 < s_slow <= s_fast <= nodes
    free = costmodel.CostModel(0.0, 0.0)
    assert costmodel.predict_speedup(compute, grad, nodes, free) == pytest.approx(nodes)


def test_speedup_table_covers_nodes_and_links():
    table = costmodel.speedup_table(0.01, 200_000, alpha=1e-4)
    assert set(table["nodes"]) == {8, 16, 32, 64} and set(table["gbit"]) == {1, 10, 100}
    assert (table["efficiency"] <= 1).all()
    with pytest.raises(LabError, match="scaling must be"):
        costmodel.predict_speedup(1, 1, 2, costmodel.CostModel(0, 0), scaling="linear")


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("kwargs,message", [
    ({"nodes": (0,)}, "nodes must be at least 1"),
    ({"sizes": "1k,zz"}, "cannot read message size 'zz'"),
    ({"sizes": (2,)}, "at least 4 bytes"),
    ({"ops": "all_reduce,alltoall"}, r"unknown collective\(s\) \['alltoall'\]"),
    ({"repeats": 0}, "repeats and threads must be at least 1"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(LabError, match=message):
        bench.CommConfig(**kwargs)


def test_sizes_and_nodes_parse_from_text():
    cfg = bench.CommConfig(nodes="2,3", sizes="1k,64K,1M,100")
    assert cfg.nodes == (2, 3) and cfg.sizes == (1024, 65536, 2**20, 100)
    assert bench.CommConfig(nodes=4).nodes == (4,)


# ---------------------------------------------------------------- real timings

def test_measure_times_every_collective_and_size():
    cfg = bench.CommConfig(nodes=(2, 3), sizes=(64, 40_000), repeats=3, warmup=1)
    table = bench.measure(cfg)
    assert len(table) == 2 * 3 * 2
    assert set(table["op"]) == set(costmodel.OPS) and set(table["nodes"]) == {2, 3}
    assert (table["seconds"] > 0).all() and (table["min_seconds"] <= table["seconds"]).all()
    gathered = table[(table["op"] == "all_gather") & (table["nodes"] == 3)]["bytes"]
    assert all(b % 12 == 0 for b in gathered)  # whole float32 pieces, one per node
    model = costmodel.fit(table)
    assert model.alpha >= 0 and model.beta >= 0 and model.alpha + model.beta > 0
    fig = plots.comm_costs(table, model)
    assert len(fig.axes) == 3 and all(len(ax.lines) == 4 for ax in fig.axes)  # 2 node counts x (points, model)
    assert len(plots.comm_bandwidth(table).axes[0].lines) == 6


def test_cli_comm_records_rows():
    proc = run_cli("run", "comm", "--nodes", "2", "--sizes", "1k,256k", "--repeats", "2", "--ops",
                   "all_reduce,all_gather", "--no-progress", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "alpha (latency)" in proc.stdout and "Gbit/s" in proc.stdout
    table = results.load("comm")
    assert len(table) == 4 and set(table["op"]) == {"all_reduce", "all_gather"}
    assert {"alpha", "beta", "torch", "seconds"} <= set(table.columns)
    assert math.isfinite(table["alpha"].iloc[0])
