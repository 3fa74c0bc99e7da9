"""The multi-seed runner: confidence intervals, stable keys, resuming after a kill, failing configs
that fail alone, the partition measures, statements computed from the numbers, and the plots."""
import ast
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import matplotlib
from matplotlib.collections import PathCollection
import numpy as np
import pandas as pd
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, our_children
from labkit import results
from labkit.data_parallel import DPConfig
from labkit.data_parallel.config import parse_local_steps
from labkit.notebook import plots
from labkit.studies import expectations, findings, impact, stats
from labkit.studies import sweep as experiments
from labkit.errors import LabError

matplotlib.use("Agg")
TINY = dict(nodes=2, train_subset=96, epochs=1, batch_size=32)


@pytest.fixture
def no_leftover_processes():
    yield
    experiments.shutdown()
    left = psutil.wait_procs(our_children(), timeout=20)[1]
    assert not left, f"processes left behind: {left}"


# ---------------------------------------------------------------- confidence intervals

def test_ci_known_example():
    mean, half = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.3027 * 1.0 / np.sqrt(3), rel=1e-4)  # t(0.975, 2) * sd / sqrt(n)
    assert stats.mean_ci([5.0]) == (5.0, pytest.approx(float("nan"), nan_ok=True))


def test_t_factor_is_student_t():
    assert stats.t95(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t95(10) == pytest.approx(2.228, abs=1e-3)
    assert stats.t95(31) == pytest.approx(2.0395, abs=1e-3)  # the expansion takes over smoothly
    assert stats.t95(120) == pytest.approx(1.9799, abs=1e-3)
    factors = [stats.t95(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(factors, factors[1:])) and factors[-1] > 1.959964
    with pytest.raises(LabError, match="at least 1 degree"):
        stats.t95(0)


def test_ci_covers_the_true_mean_95_percent_of_the_time():
    """With 3 seeds the t interval covers the true mean ~95 % of the time; 1.96 would give ~88 %."""
    rng = np.random.default_rng(0)
    samples = rng.normal(10.0, 2.0, size=(4000, 3))
    covered = [abs(m - 10.0) <= h for m, h in map(stats.mean_ci, samples)]
    assert 0.94 <= np.mean(covered) <= 0.96


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=20).filter(lambda v: np.std(v) > 1e-6))
def test_ci_contains_the_mean_and_shrinks_with_more_seeds(values):
    mean, half = stats.mean_ci(values)
    assert mean - half <= np.mean(values) <= mean + half and half > 0
    _, half_more = stats.mean_ci(values * 2)  # the same spread, twice the seeds
    assert half_more < half


@settings(max_examples=40, deadline=None)
@given(st.lists(finite, min_size=2, max_size=10), st.lists(finite, min_size=2, max_size=10))
def test_difference_ci_is_antisymmetric_with_welch_degrees_of_freedom(a, b):
    diff, half = stats.difference_ci(a, b)
    back, half_back = stats.difference_ci(b, a)
    assert diff == pytest.approx(-back) and half == pytest.approx(half_back)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    # Welch's df lies between min(n) - 1 and n_a + n_b - 2, so the factor lies between their t values
    assert stats.t95(len(a) + len(b) - 2) * se * (1 - 1e-9) <= half <= stats.t95(min(len(a), len(b)) - 1) * se * (1 + 1e-9)


def test_welch_known_example():
    a, b = [10.0, 12.0, 14.0], [1.0, 2.0, 3.0, 4.0, 5.0]
    va, vb = 4.0 / 3, 2.5 / 5
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4)  # Welch-Satterthwaite: 3.53, rounded down to 3
    assert df == pytest.approx(3.533, abs=0.001)
    assert stats.difference_ci(a, b) == pytest.approx((9.0, 3.1824 * np.sqrt(va + vb)), rel=1e-4)


# ---------------------------------------------------------------- keys

def test_run_key_is_stable_and_depends_on_what_changes_the_numbers():
    cfg = DPConfig(**TINY)
    key = experiments.run_key(cfg, impact.simulated_run)
    assert key == experiments.run_key(DPConfig(**TINY), impact.simulated_run)
    assert key == experiments.run_key(dataclasses.replace(cfg, timeout=5.0), impact.simulated_run)
    for change in (dict(seed=1), dict(lr=0.02), dict(partition="sorted"), dict(local_steps="epoch"),
                   dict(test_subset=1000)):
        assert experiments.run_key(dataclasses.replace(cfg, **change), impact.simulated_run) != key
    assert experiments.config_key(dataclasses.replace(cfg, seed=3), impact.simulated_run) == \
        experiments.config_key(cfg, impact.simulated_run)
    code = ("from labkit.studies import impact, sweep as experiments; from labkit.data_parallel import DPConfig; "
            f"print(experiments.run_key(DPConfig(**{TINY!r}), impact.simulated_run))")
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(ROOT)})
    assert other.stdout.strip() == key, other.stderr


def _recorded_config(row: dict) -> DPConfig:
    """A DPConfig from a result row's config columns (as written to CSV)."""
    fields = {f.name: row[f.name] for f in dataclasses.fields(DPConfig) if f.name in row}
    fields["local_steps"] = parse_local_steps(fields["local_steps"])
    fields["straggler"] = ast.literal_eval(str(fields["straggler"]))
    return DPConfig(**fields)


def test_keys_of_runs_recorded_before_labkit_was_reorganised_are_unchanged():
    """Keys come from the config and the runner's stable name, never its module path: the 114 runs of
    the reference run at 8193bc4 (labkit.impact.simulated_run, before the subpackages) keep their keys."""
    recorded = pd.read_csv(ROOT / "tests" / "fixtures" / "impact_keys_8193bc4.csv", keep_default_na=False)
    assert len(recorded) == 114
    for row in recorded.to_dict("records"):
        cfg = _recorded_config(row)
        assert experiments.run_key(cfg, impact.simulated_run) == row["run_key"], row
        assert experiments.config_key(cfg, impact.simulated_run) == row["config_key"], row


def test_a_runner_without_a_stable_name_is_refused():
    def unnamed(cfg):
        return [], {}
    with pytest.raises(LabError, match="no stable name"):
        experiments.run_key(DPConfig(**TINY), unnamed)


def test_rerunning_the_notebooks_sweeps_reuses_every_committed_run(tmp_path, monkeypatch):
    """Notebook 04's grids at their defaults find all their runs in results/tables/impact.csv."""
    shutil.copy(ROOT / "results" / "tables" / "impact.csv", tmp_path / "impact.csv")
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path))
    grid = (impact.samplers_grid() + impact.skew_grid() + impact.tail_grid() + impact.norm_grid()
            + impact.niid_grid())
    runs = len(experiments.expand(grid, (0, 1, 2), impact.simulated_run))
    assert runs > 114   # the grids of the reference run at 8193bc4, and section 2b's controlled comparison
    done = impact.run(grid, seeds=(0, 1, 2), workers=1, progress=False, log=lambda *_: None)
    assert (done.ran, done.reused, done.failed) == (0, runs, 0)
    assert done.final["run_key"].nunique() == runs


def test_expand_removes_duplicates_and_needs_seeds():
    cfg = DPConfig(**TINY)
    jobs = experiments.expand([cfg, cfg, dataclasses.replace(cfg, seed=7)], seeds=(0, 1), runner=impact.simulated_run)
    assert len(jobs) == 2 and {j.config.seed for j in jobs} == {0, 1}
    with pytest.raises(LabError, match="seed"):
        experiments.expand([cfg], seeds=(), runner=impact.simulated_run)


def test_bad_workers_is_a_clear_error():
    with pytest.raises(LabError, match="workers"):
        experiments.sweep([DPConfig(**TINY)], impact.simulated_run, workers=0)


# ---------------------------------------------------------------- resuming and failing

SWEEP_SCRIPT = """
from labkit.studies import impact
from labkit.data_parallel import DPConfig
GRID = [DPConfig(nodes=2, train_subset=96, epochs=1, partition=p) for p in ("iid", "sorted", "sampling")]
if __name__ == "__main__":
    impact.run(GRID, seeds=(0, 1, 2, 3), workers={workers}, progress=False)
"""


def _sweep_grid():
    namespace = {}
    exec(SWEEP_SCRIPT.format(workers=1).split("if __name__")[0], namespace)
    return namespace["GRID"]


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, no_leftover_processes):
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(SWEEP_SCRIPT.format(workers=2)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # LABKIT_RESULTS: the test's tmp folder (conftest)
    parent = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _finished(results.load("impact")) < 3:
            assert parent.poll() is None, parent.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep never finished 3 runs"
            time.sleep(0.05)
        workers = psutil.Process(parent.pid).children(recursive=True)
        parent.send_signal(signal.SIGKILL)  # the sweep's parent dies without any cleanup
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not psutil.wait_procs(workers, timeout=30)[1], "pool workers outlived their killed parent"

    before = results.load("impact")
    done_before = before.loc[before["status"] == "ok", ["run_key", "run_id"]].drop_duplicates()
    assert 3 <= len(done_before) < 12, "the kill must land part-way through the grid"

    resumed = impact.run(_sweep_grid(), seeds=(0, 1, 2, 3), workers=1, progress=False, log=lambda *_: None)
    assert resumed.ran == 12 - len(done_before) and resumed.reused == len(done_before)
    after = results.load("impact")
    ok = after[after["status"] == "ok"]
    assert ok["run_key"].nunique() == 12 and ok.groupby("run_key")["run_id"].nunique().max() == 1
    assert set(map(tuple, done_before.to_numpy())) <= set(map(tuple, ok[["run_key", "run_id"]].to_numpy()))
    again = impact.run(_sweep_grid(), seeds=(0, 1, 2, 3), workers=1, progress=False, log=lambda *_: None)
    assert again.ran == 0 and again.reused == 12 and len(results.load("impact")) == len(after)


def _finished(table: pd.DataFrame) -> int:
    return 0 if table.empty else int((table["status"] == "ok").sum())


def test_failing_config_fails_alone_and_pool_matches_sequential(no_leftover_processes):
    good = [DPConfig(partition="iid", **TINY), DPConfig(partition="label_k", k=1, **TINY)]
    bad = DPConfig(partition="label_k", k=11, **TINY)
    logged = []
    pooled = impact.run([good[0], bad, good[1]], seeds=(0, 1), workers=2, table="pooled", progress=False,
                        log=logged.append)
    assert pooled.failed == 2 and pooled.ran == 6
    assert len(pooled.errors) == 2 and pooled.errors["error"].str.contains("use k <= 10").all()
    summary = impact.summary(pooled)
    failed = summary[summary["setting"] == "label_k k=11"].iloc[0]
    assert failed["n"] == 0 and failed["failed"] == 2 and np.isnan(failed["mean"])
    assert "k=11 is more than the 10 classes" in failed["error"]
    assert (summary.loc[summary["setting"] != "label_k k=11", "n"] == 2).all()
    assert summary.loc[summary["setting"] != "label_k k=11", "error"].eq("").all()
    assert any("k=11" in line for line in logged)

    sequential = impact.run(good, seeds=(0, 1), workers=1, table="sequential", progress=False, log=lambda *_: None)
    merged = pooled.final.merge(sequential.final, on="run_key", suffixes=("_pool", "_seq"))
    assert len(merged) == 4 and (merged["test_acc_pool"] == merged["test_acc_seq"]).all()

    retried = impact.run([good[0], bad, good[1]], seeds=(0, 1), workers=1, table="pooled", progress=False,
                         log=lambda *_: None)
    assert retried.ran == 2 and retried.failed == 2  # only the failed runs are tried again


def test_incomplete_runs_do_not_count_as_finished(tmp_path):
    base = {"run_key": "a", "status": "ok", "error": "", "rows_in_run": 3, "test_acc": 50.0}
    rows = [{**base, "run_id": "r1", "epoch": 1}, {**base, "run_id": "r1", "epoch": 2},  # cut off by a kill
            {**base, "run_key": "b", "run_id": "r2", "epoch": 1, "rows_in_run": 1},
            {**base, "run_key": "c", "run_id": "r3", "status": "failed", "error": "boom", "rows_in_run": 1}]
    results.append(rows, "partial")
    assert experiments.finished_keys("partial") == {"b"}
    latest = experiments.latest_runs(results.load("partial"), ["c", "b", "a"])
    assert list(latest["run_key"]) == ["c", "b"] and latest["status"].tolist() == ["failed", "ok"]


# ---------------------------------------------------------------- what a run records

def test_measures_of_samplers_and_partitions():
    def measure(**kw):
        return impact.measures(DPConfig(**{**dict(nodes=2, train_subset=6000, epochs=2), **kw}))[0]
    sampling = measure(partition="sampling")
    assert sampling["coverage"] == pytest.approx(impact.expected_coverage(6000, 6000), abs=0.015)
    assert sampling["coverage_run"] > sampling["coverage"] + 0.15  # fresh draws each epoch
    assert measure(partition="iid")["coverage"] == 1.0
    assert measure(partition="first_slice")["coverage_run"] == pytest.approx(0.5)
    assert measure(partition="seed_per_rank")["coverage_run"] == pytest.approx(0.75, abs=0.02)
    one = measure(partition="label_k", k=1, nodes=10)
    assert one["label_skew"] == pytest.approx(0.9, abs=0.02) and one["tail_steps"] > 0
    sorted_ = measure(partition="sorted", nodes=10)
    assert sorted_["tail_steps"] == 0 and sorted_["size_imbalance"] == 1.0
    assert measure(partition="iid", nodes=10)["label_skew"] < 0.1


def test_grids_have_the_experiments_settings():
    skew = impact.skew_grid()
    assert len(skew) == 24 and {c.nodes for c in skew} == {10}
    assert {(c.sync, c.local_steps) for c in skew} == {("allreduce", 50), ("local", 50), ("local", "epoch")}
    assert sorted(c.k for c in skew if c.partition == "label_k" and c.sync == "allreduce") == [1, 2]
    assert {c.model for c in impact.norm_grid()} == {"lenet5", "lenet5_bn", "lenet5_gn"}
    assert all(c.sync == "ddp" for c in impact.norm_grid())
    assert [c.partition for c in impact.samplers_grid()] == ["sampling", "iid", "seed_per_rank", "first_slice"]
    assert all(c.sync == "local" and c.local_steps == "epoch" for c in impact.niid_grid())


# ---------------------------------------------------------------- statements follow the numbers

def _fake_sweep(rows) -> experiments.Sweep:
    runs = pd.DataFrame(rows).assign(status="ok", error="")
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    return experiments.Sweep(impact.labelled(runs), ran=len(runs), reused=0, failed=0)


def _skew_rows(sorted_loss: float, spread: float = 0.1):
    rows = []
    for seed, noise in enumerate((-spread, 0.0, spread)):
        for partition, k, acc, tail in (("iid", 2, 95.0, 0), ("sorted", 2, 95.0 - sorted_loss, 0),
                                        ("label_k", 1, 60.0, 3)):
            for sync, steps, drop in (("allreduce", 50, 0.0), ("local", 50, 30.0), ("local", "epoch", 45.0)):
                # the sorted runs' noise runs the other way: the two settings are independent runs
                rows.append(dict(partition=partition, k=k, alpha=0.5, beta=0.5, sync=sync, local_steps=steps,
                                 seed=seed, model="lenet5", epoch=1, train_subset=1000, epochs=1,
                                 test_acc=acc + (noise if partition != "sorted" else -noise)
                                 - (drop if partition != "iid" else 0.0),
                                 label_skew=0.9 if partition != "iid" else 0.05, tail_steps=tail))
    return rows


@pytest.mark.parametrize("sorted_loss,spread,outcome", [(0.5, 0.1, expectations.APPEARED),
                                                         (3.0, 0.1, expectations.ABSENT),
                                                         (1.5, 2.0, expectations.UNDECIDED)])
def test_statements_and_expectations_are_computed_from_the_results(sorted_loss, spread, outcome):
    skew = _fake_sweep(_skew_rows(sorted_loss, spread))
    text = "\n".join(findings.skew(skew))
    assert f"The worst equal-size non-IID partition loses {sorted_loss:.2f} ± " in text
    assert "all-reduce every step: IID reaches 95.00 %" in text and "label_k k=1 ends at 60.0 %" in text
    assert "local SGD H=50: IID reaches 95.00 %" in text and "label_k k=1 ends at 30.0 %" in text
    samplers = _fake_sweep([dict(partition=p, k=2, alpha=0.5, beta=0.5, sync="allreduce", local_steps=50, seed=s,
                                 model="lenet5", epoch=1, train_subset=1000, epochs=1, test_acc=90.0 + s,
                                 coverage=cov, coverage_run=cov)
                            for p, cov in (("iid", 1.0), ("sampling", 0.632)) for s in range(3)])
    table = expectations.table(samplers, skew, _fake_sweep(_norm_rows(bn_loss=3.0, gn_loss=0.5)))
    seen = table.set_index("expected effect")["outcome"]
    assert seen.iloc[0] == expectations.APPEARED                       # coverage 63.2 % against 63.2 %
    assert seen.iloc[1] == outcome                                     # decided on the interval, not the mean
    assert seen.iloc[2] == expectations.APPEARED                       # label_k k=1 under local SGD: 30 and 15 %
    assert "local SGD H=50: 30.00 ± " in table["measured"].iloc[2]
    assert seen.iloc[3] == seen.iloc[4] == expectations.APPEARED       # BN loses 3 points, GN 0.5
    norms = "\n".join(findings.norms(_fake_sweep(_norm_rows(bn_loss=3.0, gn_loss=0.5))))
    assert "GroupNorm's loss is 17% of BatchNorm's" in norms


def test_an_effect_inside_the_noise_is_not_decided():
    norm = _fake_sweep(_norm_rows(bn_loss=0.3, gn_loss=-0.3, spread=1.0))   # BN's loss within its interval
    rows = expectations.table(_fake_sweep([]), _fake_sweep(_skew_rows(0.5)), norm).set_index("expected effect")
    assert rows.loc["BatchNorm suffers under label skew", "outcome"] == expectations.UNDECIDED
    assert "cannot be told" in " ".join(findings.norms(norm))
    assert expectations.judge(1.0, 3.0, 2.0) == expectations.UNDECIDED
    assert expectations.judge(-1.0, 1.5, 2.0) == expectations.APPEARED
    assert expectations.judge(2.5, 4.0, 2.0) == expectations.ABSENT
    assert expectations.judge(0.1, 0.4, 0.0, below=False) == expectations.APPEARED
    assert expectations.all_of([expectations.APPEARED, expectations.UNDECIDED]) == expectations.UNDECIDED
    assert expectations.all_of([expectations.UNDECIDED, expectations.ABSENT]) == expectations.ABSENT


def _norm_rows(bn_loss: float, gn_loss: float, spread: float = 0.2):
    rows = []
    for model, loss in (("lenet5_bn", bn_loss), ("lenet5_gn", gn_loss)):
        for partition, minus in (("iid", 0.0), ("sorted", loss)):
            for seed, noise in enumerate((-spread, 0.0, spread)):
                rows.append(dict(partition=partition, k=2, alpha=0.5, beta=0.5, sync="ddp", local_steps=50,
                                 seed=seed, model=model, epoch=1, train_subset=1000, epochs=1,
                                 test_acc=96.0 - minus + noise))
    return rows


# ---------------------------------------------------------------- plots

def test_impact_plots_show_every_seed_and_mark_unequal_sizes():
    skew = _fake_sweep(_skew_rows(1.0))
    runs = skew.runs.assign(config_key=skew.runs["setting"] + skew.runs["training"],
                            coverage=1.0, coverage_run=1.0, size_imbalance=1.0)
    final = experiments.final_rows(runs)
    fig = plots.strategy_accuracy(final)
    assert len(fig.axes) == 3
    first = fig.axes[0]
    points = [c for c in first.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in points) == 9               # 3 settings x 3 seeds, one point each
    assert not any(p.get_height() for p in first.patches)                # no bars, no CI bands
    assert 0 < first.get_ylim()[0] < final["test_acc"].min()            # a fitted axis, not bars from 0
    labels = [t.get_text() for t in first.get_xticklabels()]
    assert "label_k k=1 *" in labels and "sorted" in labels               # unequal sizes (tail steps) marked
    hollow = [c for c in points if not len(c.get_facecolor()) or c.get_facecolor()[0][3] == 0]
    assert len(hollow) == 1                                               # ... and drawn hollow
    assert len(plots.accuracy_vs_skew(final).axes[0].collections) >= 6
    curves = plots.accuracy_curves(runs, panel="training")
    assert len(curves.axes) == 3 and len(curves.axes[0].lines) == 3 * 3 + 3   # a line per seed, a mean per setting
    assert len(plots.accuracy_vs_coverage(final[final["training"] == "all-reduce every step"]).axes) == 1


def test_pool_workers_ignore_ctrl_c_and_stop_with_the_sweep(no_leftover_processes):
    """Jupyter signals the kernel's whole process group: pool workers must not die with a
    KeyboardInterrupt traceback each, but stop when the parent stops the sweep."""
    executor = experiments.pool(1)
    assert executor.submit(int, "7").result(timeout=60) == 7   # the worker is up
    worker = psutil.Process(next(iter(executor._processes)))
    os.kill(worker.pid, signal.SIGINT)
    time.sleep(1.0)
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    assert executor.submit(int, "8").result(timeout=60) == 8   # and still works
    experiments.shutdown(1, terminate=True)
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
