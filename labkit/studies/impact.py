"""How partitioning changes the model (notebook 04): the four experiments as config grids, the
measures every run records next to its accuracy, and a resumable multi-seed runner for them.

Runs are simulated, one process per run (``labkit.data_parallel.simulate``: the arithmetic of N real workers,
checked against real processes by tests/test_simulate.py and by ``spot_check``), because these
sweeps measure accuracy only. What the notebook concludes from them is in ``labkit.studies.findings``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..data.measures import label_skew, membership
from ..data_parallel import run as run_data_parallel
from ..data_parallel.config import DPConfig, make_all_samplers, steps_in_epoch, train_labels
from ..data_parallel.simulation import simulate
from ..errors import LabError
from . import sweep

TABLE = "impact"
SAMPLERS = ("sampling", "iid", "seed_per_rank", "first_slice")
IID = {"partition": "iid"}
SKEWS = (IID, {"partition": "sorted"}, {"partition": "label_k", "k": 1}, {"partition": "label_k", "k": 2},
         {"partition": "dirichlet", "alpha": 0.1}, {"partition": "dirichlet", "alpha": 0.5},
         {"partition": "dirichlet", "alpha": 1.0}, {"partition": "quantity", "beta": 0.5})
TRAININGS = ({"sync": "allreduce"}, {"sync": "local", "local_steps": 50}, {"sync": "local", "local_steps": "epoch"})
NORM_MODELS = ("lenet5", "lenet5_bn", "lenet5_gn")
# NIID-Bench's #C=2 draws each node's second class at random (label_k pairs nodes up); with one class
# per node the two are the same: node p holds one class, all classes held.
NIID_PARTITIONS = (IID, {"partition": "dirichlet", "alpha": 0.5}, {"partition": "label_k_random", "k": 2},
                   {"partition": "label_k", "k": 1})
# Equal node sizes (iid, sorted, shards) against unequal ones (label_k k=1, dirichlet, quantity).
TAIL_PARTITIONS = (IID, {"partition": "sorted"}, {"partition": "shards", "k": 2}, {"partition": "label_k", "k": 1},
                   {"partition": "dirichlet", "alpha": 1.0}, {"partition": "quantity", "beta": 1.0})


# ---------------------------------------------------------------- the four grids

def samplers_grid(nodes: int = 2, train_subset: int = 12000, epochs: int = 2, **fields) -> list[DPConfig]:
    """Experiment 1: random sampling, random partitioning and the two broken samplers, all-reduce."""
    return [DPConfig(partition=kind, nodes=nodes, sync="allreduce", train_subset=train_subset, epochs=epochs,
                     **fields) for kind in SAMPLERS]


def skew_grid(nodes: int = 10, train_subset: int = 20000, epochs: int = 1, partitions=SKEWS, trainings=TRAININGS,
              **fields) -> list[DPConfig]:
    """Experiment 2: IID and non-IID partitions under all-reduce every step and under local SGD."""
    return [DPConfig(nodes=nodes, train_subset=train_subset, epochs=epochs, **part, **sync, **fields)
            for sync in trainings for part in partitions]


def tail_grid(nodes: int = 10, train_subset: int = 20000, epochs: int = 1, equal_steps: int = 55,
              partitions=TAIL_PARTITIONS, sync: str = "allreduce", **fields) -> list[DPConfig]:
    """Experiment 2b, the controlled comparison: all-reduce on equal-size and unequal-size partitions,
    with the epoch going on while any node has data (today's rule), ending when the first node runs
    out, and ending after ``equal_steps`` optimizer steps for every partition."""
    endings = ({"epoch_end": "longest"}, {"epoch_end": "shortest"}, {"epoch_steps": equal_steps})
    return [DPConfig(nodes=nodes, sync=sync, train_subset=train_subset, epochs=epochs, **part, **end, **fields)
            for end in endings for part in partitions]


def norm_grid(nodes: int = 10, train_subset: int = 12000, epochs: int = 2, skewed=({"partition": "sorted"},),
              models=NORM_MODELS, **fields) -> list[DPConfig]:
    """Experiment 3: lenet5 without normalisation, with BatchNorm and with GroupNorm, IID and skewed, DDP."""
    return [DPConfig(model=model, nodes=nodes, sync="ddp", train_subset=train_subset, epochs=epochs,
                     **part, **fields) for model in models for part in (IID, *skewed)]


def niid_grid(nodes: int = 10, train_subset: int = 10000, rounds: int = 4, partitions=NIID_PARTITIONS,
              **fields) -> list[DPConfig]:
    """Experiment 4, the NIID-Bench setting: 10 nodes, FedAvg (local SGD averaged once per epoch = round)."""
    return [DPConfig(nodes=nodes, sync="local", local_steps="epoch", train_subset=train_subset, epochs=rounds,
                     **part, **fields) for part in partitions]


# ---------------------------------------------------------------- running

def measures(cfg: DPConfig, samplers=None) -> tuple[dict, list[float]]:
    """What the nodes hold and use: coverage per epoch and over the run, label skew, node-size imbalance,
    and the tail (steps at the end of an epoch in which some nodes have run out of data; none when the
    epoch ends with the shortest node, which leaves the longer nodes' last samples unused instead).
    ``samplers``: the nodes' samplers if not the ones ``cfg.partition`` names (see ``simulate``)."""
    labels = train_labels(cfg)
    node_samplers = make_all_samplers(cfg, labels) if samplers is None else list(samplers)
    sizes = np.array([len(s) for s in node_samplers])
    node_steps = np.ceil(sizes / cfg.batch_size).astype(int)
    steps = steps_in_epoch(cfg, int(node_steps.min()), int(node_steps.max()))
    used = steps * cfg.batch_size
    seen, coverage, skew = np.zeros(len(labels), dtype=bool), [], float("nan")
    for epoch in range(cfg.epochs):
        parts = [s.indices(epoch).numpy()[:used] for s in node_samplers]
        coverage.append(membership(parts, len(labels))["coverage"])
        for part in parts:
            seen[part] = True
        if epoch == 0:
            skew = label_skew(labels.numpy(), parts)
    return {"coverage": float(np.mean(coverage)), "coverage_run": float(seen.mean()), "label_skew": skew,
            "size_imbalance": float(sizes.max() / sizes.mean()), "steps_per_epoch": steps,
            "tail_steps": int(steps - min(node_steps.min(), steps))}, coverage


@sweep.keyed("labkit.impact.simulated_run")  # the name the first results were recorded under: keep it
def simulated_run(cfg: DPConfig, samplers=None) -> tuple[list[dict], dict]:
    """One run for the sweep runner: the simulated history plus the partition measures (``samplers``: as
    in ``simulate``)."""
    fields, coverage = measures(cfg, samplers)
    history = simulate(cfg, samplers=samplers)
    for row, share in zip([r for r in history if r["end_of_epoch"]], coverage):
        row["epoch_coverage"] = share
    return history, fields


def run(configs, seeds=(0, 1, 2), workers: int = 2, table: str = TABLE, progress: bool = True,
        log=print) -> sweep.Sweep:
    """Sweep ``configs`` x ``seeds`` (resumable, see ``labkit.studies.sweep``); runs get readable labels."""
    done = sweep.sweep(configs, simulated_run, seeds=seeds, table=table, workers=workers,
                       progress=progress, log=log)
    return dataclasses.replace(done, runs=labelled(done.runs))


def labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``setting`` (partition and its parameter), ``training`` (how the nodes synchronise) and
    ``ending`` (how an epoch ends when nodes hold unequal shares)."""
    if runs.empty:
        return runs
    return runs.assign(setting=runs.apply(setting, axis=1), training=runs.apply(training, axis=1),
                       ending=runs.apply(ending, axis=1))


def setting(row) -> str:
    part = row["partition"]
    if part in ("label_k", "label_k_random"):
        return f"{part} k={int(row['k'])}"
    if part == "dirichlet":
        return f"dirichlet α={float(row['alpha']):g}"
    if part == "quantity":
        return f"quantity β={float(row['beta']):g}"
    return str(part)


def training(row) -> str:
    if row["sync"] == "local":
        steps = str(row["local_steps"])
        return "local SGD H=1 epoch" if steps == "epoch" else f"local SGD H={int(float(steps))}"
    return {"allreduce": "all-reduce every step", "allgather": "all-gather every step",
            "ddp": "DDP every step"}.get(row["sync"], str(row["sync"]))


def ending(row) -> str:
    """"longest node" (an epoch goes on while any node has data), "shortest node", or "N steps"."""
    cap = row.get("epoch_steps", 0)
    if isinstance(cap, (int, float)) and cap == cap and cap > 0:
        return f"{int(cap)} steps"
    return "shortest node" if row.get("epoch_end") == "shortest" else "longest node"


MEASURES = ("coverage", "coverage_run", "label_skew", "size_imbalance", "steps_per_epoch", "tail_steps")


def summary(done: sweep.Sweep, by=("setting", "training")) -> pd.DataFrame:
    """Final test accuracy, mean ± 95 % CI over seeds, with the partition measures, per group."""
    return sweep.summarize(done.runs, list(by), also=MEASURES)


def value(summary: pd.DataFrame, column: str = "mean", **match) -> float:
    """One number of a summary: ``column`` of the single row matching ``match`` (NaN if none)."""
    rows = summary
    for key, want in match.items():
        rows = rows[rows[key] == want]
    if len(rows) > 1:
        raise LabError(f"{len(rows)} summary rows match {match}; add a column to tell them apart.")
    return float(rows[column].iloc[0]) if len(rows) else float("nan")


def pivot(summary: pd.DataFrame, values: str = "mean", index: str = "setting", columns: str = "training"):
    """``summary`` as a settings x training-modes table, in the order the experiment ran them."""
    table = summary.pivot(index=index, columns=columns, values=values)
    return table.loc[list(dict.fromkeys(summary[index])), list(dict.fromkeys(summary[columns]))]


def spot_check(cfg: DPConfig | None = None) -> pd.DataFrame:
    """Train one small config with real worker processes and in simulation; compare the results."""
    cfg = cfg or DPConfig(nodes=2, sync="allreduce", partition="dirichlet", alpha=0.5, train_subset=640,
                          epochs=1, batch_size=32)
    sim_history, sim_state = simulate(cfg, return_model=True)
    rows, real_state = run_data_parallel(cfg, progress=False, save=False, log=lambda *_: None, return_model=True)
    diff = max(float((sim_state[k].float() - real_state[k].float()).abs().max()) for k in real_state)
    return pd.DataFrame([{"nodes": cfg.nodes, "sync": cfg.sync, "partition": cfg.partition,
                          "simulated test_acc": sim_history[-1]["test_acc"], "real test_acc": rows[-1]["test_acc"],
                          "largest parameter difference": diff, "real seconds": rows[-1]["wall_seconds"]}])


def expected_coverage(draws: int, size: int) -> float:
    """Share of ``size`` items hit at least once by ``draws`` uniform draws with replacement."""
    return 1.0 - math.exp(draws * math.log1p(-1.0 / size))
