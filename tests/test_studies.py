"""What notebook 03 prints is computed from its tables, and says only what their intervals support."""
import math

import pandas as pd
import pytest

from labkit.studies import speedup, time_to_accuracy


def _table(vs_threads: float, half: float, rounds: int = 6) -> pd.DataFrame:
    rows = [dict(setup="1 process x 1 thread", kind="one process", sync="none", workers=1, threads=1, speedup=1.0,
                 speedup_ci95=0.0, vs_threads=0.55, vs_threads_ci95=0.02, compute_ms=4.0, comm_ms=0.0, wait_ms=0.0,
                 bytes_per_step=0.0),
            dict(setup="2 workers allreduce", kind="synchronous", sync="allreduce", workers=2, threads=1, speedup=1.6,
                 speedup_ci95=0.1, vs_threads=vs_threads, vs_threads_ci95=half, compute_ms=4.2, comm_ms=1.0,
                 wait_ms=0.5, bytes_per_step=207_608.0),
            dict(setup="2 workers allgather", kind="synchronous", sync="allgather", workers=2, threads=1, speedup=1.4,
                 speedup_ci95=0.1, vs_threads=vs_threads - 0.1, vs_threads_ci95=half, compute_ms=4.2, comm_ms=1.5,
                 wait_ms=0.5, bytes_per_step=207_608.0),
            dict(setup="2 workers local", kind="local SGD", sync="local", workers=2, threads=1, speedup=1.9,
                 speedup_ci95=0.1, vs_threads=1.6, vs_threads_ci95=0.1, compute_ms=4.0, comm_ms=0.1, wait_ms=0.0,
                 bytes_per_step=4_152.0)]
    return pd.DataFrame(rows).assign(model="lenet5", rounds=rounds)


@pytest.mark.parametrize("vs_threads,half,outcome", [(1.2, 0.1, "beat it"), (0.8, 0.1, "lost to it"),
                                                     (1.02, 0.1, "did not differ from it beyond the noise")])
def test_the_verdict_follows_the_interval_of_the_best_synchronous_mode(vs_threads, half, outcome):
    text = speedup.verdict(_table(vs_threads, half))
    assert f"The best of these 2 synchronous mode(s), allreduce, {outcome}." in text
    assert f"allreduce {vs_threads:.2f} ± {half:.2f}x; allgather" in text   # every mode's interval is shown
    assert speedup.best_synchronous(_table(vs_threads, half))["sync"] == "allreduce"  # never local SGD


def test_the_verdict_without_intervals_or_synchronous_modes_says_so():
    assert "one round: no interval" in speedup.verdict(_table(1.2, math.nan, rounds=1))
    only_local = _table(1.2, 0.1)
    only_local = only_local[only_local["kind"] != "synchronous"]
    assert speedup.best_synchronous(only_local) is None
    assert speedup.verdict(only_local).startswith("No synchronous mode was measured")
    assert speedup.collective_cost(only_local).startswith("Measure both")
    volume, seconds, workers = speedup.allgather_over_allreduce(_table(1.2, 0.1))
    assert (volume, seconds, workers) == (1.0, 1.5, 2)


def _curves(times: dict) -> pd.DataFrame:
    """method -> per seed, the seconds at which 98 % was reached (None: never)."""
    rows = []
    for method, per_seed in times.items():
        for seed, reached in enumerate(per_seed):
            for t, acc in ((1.0, 90.0), (reached or 50.0, 98.5 if reached else 97.0)):
                rows.append(dict(method=method, kind="data parallel", processes=2, cores=2, seed=seed,
                                 epoch=t, wall_seconds=t, test_acc=acc, target=98.0))
    return pd.DataFrame(rows)


def test_time_to_accuracy_counts_a_missed_target_as_no_time():
    summary = time_to_accuracy.summary(_curves({"a": [10.0, 12.0], "b": [5.0, None], "c": [11.0, 13.0]}))
    rows = summary.set_index("method")
    assert rows.loc["a", "seconds_to_target"] == 11.0 and rows.loc["a", "reached"] == "2 of 2"
    assert math.isnan(rows.loc["b", "seconds_to_target"]) and rows.loc["b", "reached"] == "1 of 2"
    lines = time_to_accuracy.verdict(summary)
    assert lines[0].startswith("First to the target on every seed: a after 11.0 s") and "also: c" in lines[0]
    assert time_to_accuracy.verdict(time_to_accuracy.summary(_curves({"b": [None, None]})))[0].startswith("No method")
