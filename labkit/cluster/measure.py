"""Notebook 06's measurements on emulated nodes (``jobs``): all-reduce time per message size at each link
rate, data-parallel speed-up at each rate, and the alpha-beta prediction from collectives measured under
the same shaping.

Weak scaling, as notebook 03's projection: every node keeps its batch, so N nodes do N times the work
per step, and the speed-up of an epoch is its samples/s over the 1-node run's, epoch by epoch (same
run, same epoch number). The prediction is ``costmodel.predict_speedup`` with the compute per step of
the 1-node run and alpha and beta fitted (``costmodel.fit``) on the all-reduce rows of that rate.

Where no backend works, the tables come from the reference run: ``keep`` copies them to
``results/reference/`` when ``labkit report`` runs the notebook at full size into the lab's results/.
"""
from __future__ import annotations

import pandas as pd

from .. import results
from ..collectives.costmodel import CostModel, fit, predict_speedup
from ..errors import LabError
from ..paths import REPO_ROOT, results_dir
from ..runtime.progress import bar as progress_bar
from . import jobs, shaping

REFERENCE = REPO_ROOT / "results" / "reference"   # committed: the reference run's measured tables
KEEP = ("rate", "nodes", "epoch", "samples_per_s", "epoch_seconds", "compute_s", "comm_s", "wait_s", "samples")


def label(rate: str) -> str:
    """'' -> 'unshaped', '100mbit' -> '100 Mbit/s'."""
    return shaping.describe_rate(shaping.parse_rate(rate)) if rate else "unshaped"


def collectives(sizes=("4k", "64k", "256k", "1M", "4M"), rates=("", "1gbit", "100mbit"), nodes: int = 2,
                repeats: int = 5, backend: str = "netns", progress: bool = True) -> pd.DataFrame:
    """All-reduce time per message size on ``nodes`` emulated nodes, one job per link rate (one row per
    rate and size: median and fastest of ``repeats`` timings)."""
    args = ["run", "comm", "--nodes", str(nodes), "--sizes", ",".join(map(str, sizes)), "--ops", "all_reduce",
            "--repeats", str(repeats), "--no-progress"]
    rows, bar = [], progress_bar(len(rates), "all-reduce per rate", disable=not progress)
    with jobs.Nodes(backend, nodes) as cluster:
        for rate in rates:
            table = cluster.run(nodes, rate, args, "comm")
            rows.append(table.assign(rate=label(rate), rate_bit=shaping.parse_rate(rate)))
            bar.update(1)
    bar.close()
    cols = ["rate", "rate_bit", "op", "bytes", "nodes", "seconds", "min_seconds", "repeats"]
    return pd.concat(rows, ignore_index=True)[cols].assign(backend=backend)


def fits(comm: pd.DataFrame) -> dict:
    """{rate label: CostModel} fitted on that rate's all-reduce rows."""
    return {rate: fit(rows) for rate, rows in comm.groupby("rate", sort=False)}


def fit_table(comm: pd.DataFrame, size: int = 4 * 2**20) -> pd.DataFrame:
    """Per rate: the fitted alpha and bandwidth next to the rate tc was told, and the ``size``-byte all-reduce
    measured against the fit and against the nominal link (the set rate with the unshaped alpha)."""
    models_at, rows = fits(comm), []
    alpha = models_at["unshaped"].alpha if "unshaped" in models_at else 0.0
    for rate, rows_at in comm.groupby("rate", sort=False):
        big, nodes, model = rows_at[rows_at["bytes"] == size], int(rows_at["nodes"].iloc[0]), models_at[rate]
        bit = float(rows_at["rate_bit"].iloc[0])
        nominal = CostModel.link(bit / 1e9, alpha).seconds("all_reduce", size, nodes) if bit else float("nan")
        rows.append({"rate": rate, "alpha_us": 1e6 * model.alpha, "fitted_mbit": model.gbit * 1e3,
                     "set_mbit": bit / 1e6 or float("nan"), f"{size >> 20}MB_measured_ms":
                     1e3 * big["seconds"].median() if len(big) else float("nan"),
                     f"{size >> 20}MB_fit_ms": 1e3 * float(model.seconds("all_reduce", size, nodes)),
                     f"{size >> 20}MB_nominal_ms": 1e3 * float(nominal)})
    return pd.DataFrame(rows)


def dp_speedup(models=("lenet5", "cnn"), nodes=(1, 2, 4), rates=("", "1gbit", "100mbit"), epochs: int = 3,
               steps=50, batch_size: int = 32, backend: str = "netns", progress: bool = True) -> pd.DataFrame:
    """Per model: one 1-node run, then N-node runs at each rate (all-reduce, ``steps`` steps an epoch: a
    number, or {model: number} since cnn's 4.8 MB all-reduce takes 0.4 s at 100 Mbit/s). One row per run
    and epoch with samples/s and its ``speedup`` over the 1-node run's same epoch."""
    if 1 not in nodes:
        raise LabError("nodes must include 1: the 1-node run is the speed-up's baseline.")
    most, rows = max(nodes), []
    plan = [(m, n, r) for m in models for n in sorted(nodes) for r in (rates if n > 1 else ("",))]
    bar = progress_bar(len(plan), "data-parallel runs", disable=not progress)
    with jobs.Nodes(backend, most) as cluster:
        for model, n, rate in plan:
            k = steps[model] if isinstance(steps, dict) else steps
            args = ["run", "dp", "--model", model, "--epochs", str(epochs), "--batch-size", str(batch_size),
                    "--epoch-steps", str(k), "--train-subset", str(most * batch_size * k),
                    "--test-subset", "100", "--no-progress"]
            rows.append(cluster.run(n, rate, args, "dp").assign(rate=label(rate) if n > 1 else "one node",
                                                                nodes=n)[list(KEEP)].assign(model=model))
            bar.update(1)
    bar.close()
    frame = pd.concat(rows, ignore_index=True).assign(batch_size=batch_size, backend=backend)
    frame["steps"] = frame["samples"] / (frame["nodes"] * batch_size)
    one = frame[frame["nodes"] == 1].set_index(["model", "epoch"])["samples_per_s"]
    same_epoch = pd.MultiIndex.from_frame(frame[["model", "epoch"]])
    frame["speedup"] = frame["samples_per_s"] / one.reindex(same_epoch).to_numpy()
    return frame


def predicted(speed: pd.DataFrame, comm: pd.DataFrame) -> pd.DataFrame:
    """For every model, rate and N > 1 measured: the predicted speed-up from each 1-node epoch's compute per
    step and the all-reduce fit of that rate; median, min and max over the epochs, next to the measured ones."""
    from ..train import models as zoo
    models_at, rows = fits(comm), []
    for (model, rate, n), runs in speed[speed["nodes"] > 1].groupby(["model", "rate", "nodes"], sort=False):
        if rate not in models_at:
            raise LabError(f"no all-reduce measured at {rate}: measure collectives at every rate of the speed-up runs.")
        one = speed[(speed["model"] == model) & (speed["nodes"] == 1)]
        compute = one["compute_s"] / one["steps"]
        grad_bytes = 4 * zoo.count_parameters(zoo.build(model))
        guess = pd.Series([float(predict_speedup(c, grad_bytes, n, models_at[rate])) for c in compute])
        rows.append({"model": model, "rate": rate, "nodes": n, "measured": runs["speedup"].median(),
                     "measured_min": runs["speedup"].min(), "measured_max": runs["speedup"].max(),
                     "predicted": guess.median(), "predicted_min": guess.min(), "predicted_max": guess.max(),
                     "compute_ms": 1e3 * compute.median(), "grad_mb": grad_bytes / 1e6,
                     "allreduce_ms": 1e3 * float(models_at[rate].seconds("all_reduce", grad_bytes, n))})
    frame = pd.DataFrame(rows)
    return frame.assign(measured_over_predicted=frame["measured"] / frame["predicted"])


def _range(row, key: str) -> str:
    """'0.31x (0.29-0.33)' from a row's key, key_min and key_max."""
    return f"{row[key]:.2f}x ({row[key + '_min']:.2f}-{row[key + '_max']:.2f})"


def compare_rates(table: pd.DataFrame, model: str, nodes: int, fast: str = "unshaped", slow: str = "100 Mbit/s") -> str:
    """'lenet5, 2 nodes: speed-up unshaped X, at 100 Mbit/s Y: ...' with a verdict only where the epochs'
    ranges do not overlap."""
    at = table[(table["model"] == model) & (table["nodes"] == nodes)].set_index("rate")
    if fast not in at.index or slow not in at.index:
        return f"{model}, {nodes} nodes: not measured both {fast} and at {slow}."
    a, b = at.loc[fast], at.loc[slow]
    if b["measured_max"] < a["measured_min"]:
        verdict = f"lower at {slow} (the epochs' ranges do not overlap), by {a['measured'] / b['measured']:.1f}x"
    elif b["measured_min"] > a["measured_max"]:
        verdict = f"higher at {slow} (the epochs' ranges do not overlap)"
    else:
        verdict = "the epochs' ranges overlap: no difference shown"
    return (f"{model}, {nodes} nodes: speed-up {fast} {_range(a, 'measured')}, at {slow} {_range(b, 'measured')}: "
            f"{verdict}.")


def rate_lines(table: pd.DataFrame) -> list[str]:
    """``compare_rates`` for every model and node count, between the fastest and the slowest link measured."""
    rates = list(dict.fromkeys(table["rate"]))
    pairs = table.groupby(["model", "nodes"], sort=False).size().index
    return [compare_rates(table, model, nodes, rates[0], rates[-1]) for model, nodes in pairs]


def compute_per_step(speed: pd.DataFrame) -> pd.DataFrame:
    """Median compute milliseconds per step and node, per model and node count (unshaped and 1-node runs):
    on 2 cores, 4 nodes time-slice and each step's compute stretches."""
    rows = speed[speed["rate"].isin(["unshaped", "one node"])]
    per_step = 1e3 * rows["compute_s"] / rows["steps"]
    return per_step.groupby([rows["model"], rows["nodes"]]).median().unstack("nodes").round(2)


def keep(frame: pd.DataFrame, table: str, quick: bool) -> None:
    """Append the rows to ``results/<table>.csv`` like every study; the reference run (``labkit report`` at
    full size into the lab's own results/) also writes them to ``results/reference/`` for machines without a backend."""
    results.append(frame.to_dict("records"), table)
    if not quick and results_dir().resolve() == (REPO_ROOT / "results" / "tables").resolve():
        REFERENCE.mkdir(parents=True, exist_ok=True)
        frame.to_csv(REFERENCE / f"{table}.csv", index=False)


def measured_or_reference(table: str, measure, backend: str | None, quick: bool, **kwargs) -> pd.DataFrame:
    """``measure(backend=backend, **kwargs)``, kept as ``table`` (``keep``), where a backend runs here;
    otherwise the reference run's ``table``: what notebook 06 shows either way."""
    if not backend:
        return reference(table)
    frame = measure(backend=backend, **kwargs)
    keep(frame, table, quick)
    return frame


def reference(table: str) -> pd.DataFrame:
    """The reference run's table; a LabError saying how to make one if none is committed."""
    path = REFERENCE / f"{table}.csv"
    if not path.exists():
        raise LabError(f"no reference run in {path.parent}: run `labkit report --only 06` once on a machine with "
                       "root (network namespaces) or Docker.")
    return pd.read_csv(path)


def where(backend: str | None, reason: str) -> str:
    """One line: which nodes the measurements run on, or why the reference run is shown instead."""
    if backend:
        return f"measuring on emulated nodes: {backend} backend, links shaped with tc (tbf)"
    made = reference("cluster_comm")["backend"].iloc[0] if (REFERENCE / "cluster_comm.csv").exists() else "?"
    return f"{reason}: the tables and figures below are the reference run's (results/reference/, {made} backend)"
