"""Notebook 04's sampler experiment on samplers a student wrote (notebook 02): each class runs in this
process, its orders are recorded (``labkit.data.samplers.record``) and the simulation trains on exactly them.

A class that draws exactly what labkit's own sampler of that kind draws runs as that kind, so the runs
recorded for labkit's are reused. Any other is keyed by a fingerprint of its orders: the same orders, the
same key, so a rerun with an unchanged sampler reuses its runs too.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..data import samplers
from ..data_parallel.config import DPConfig, make_all_samplers, train_labels
from ..errors import LabError
from . import impact, sweep


@dataclass(frozen=True)
class OwnSamplerConfig(DPConfig):
    """A ``DPConfig`` whose nodes train on a recorded sampler instead of ``partition``'s (which names its kind)."""

    sampler: str = field(default="", metadata={"help": "the sampler class and a fingerprint of its orders"})


_RECORDED: dict[str, list] = {}  # fingerprint -> every rank's RecordedSampler, for the runs of this process


@sweep.keyed("labkit.impact.own_sampler_run")
def own_sampler_run(cfg: OwnSamplerConfig) -> tuple[list[dict], dict]:
    """One run on a recorded sampler (in the process that recorded it, see ``run``)."""
    if cfg.sampler not in _RECORDED:
        raise LabError(f"the orders of {cfg.sampler!r} were not recorded in this process; run the experiment "
                       "with labkit.studies.own_samplers.run.")
    return impact.simulated_run(cfg, _RECORDED[cfg.sampler])


def recorded(cls, cfg: DPConfig) -> list[samplers.RecordedSampler]:
    """Every rank's orders for each epoch of ``cfg`` from ``cls(size, rank, nodes, seed)``."""
    size = len(train_labels(cfg))
    return samplers.record(lambda rank, nodes: cls(size, rank, nodes, cfg.seed), cfg.nodes, size, cfg.epochs,
                           cfg.seed)


def same_as_labkit(cfg: DPConfig, node_samplers) -> bool:
    """True if the recorded samplers give exactly the orders of labkit's sampler ``cfg.partition``."""
    labkit = make_all_samplers(cfg, train_labels(cfg))
    return all(torch.equal(mine.indices(epoch), theirs.indices(epoch))
               for mine, theirs in zip(node_samplers, labkit) for epoch in range(cfg.epochs))


def fingerprint(cls, node_samplers) -> str:
    """The class's name and a hash of every rank's recorded orders."""
    digest = hashlib.sha256()
    for sampler in node_samplers:
        for order in sampler.orders:
            digest.update(order.numpy().tobytes() + b"|")
        digest.update(b"#")
    return f"{cls.__name__} {digest.hexdigest()[:12]}"


def _own_configs(cfg: DPConfig, cls, seeds) -> list[OwnSamplerConfig]:
    """One config per seed on ``cls``'s recorded orders; none if it draws exactly what labkit's does."""
    configs, same = [], True
    for seed in seeds:
        one = dataclasses.replace(cfg, seed=int(seed))
        node_samplers = recorded(cls, one)
        same = same and same_as_labkit(one, node_samplers)
        key = fingerprint(cls, node_samplers)
        _RECORDED[key] = node_samplers
        base = {f.name: getattr(one, f.name) for f in dataclasses.fields(DPConfig)}
        configs.append(OwnSamplerConfig(**base, sampler=key))
    return [] if same else configs


def run(configs, classes: dict, seeds=(0, 1, 2), workers: int = 2, table: str = impact.TABLE,
        progress: bool = True, log=print) -> sweep.Sweep:
    """``impact.run`` with the sampler kinds in ``classes`` (e.g. ``{"iid": MyPartitionSampler, "sampling":
    MySamplingSampler}``, classes built as ``cls(size, rank, nodes, seed)``) run on those classes.

    Runs on a student's class execute in this process, one at a time (the class lives here)."""
    unknown = set(classes) - {cfg.partition for cfg in configs}
    if unknown:
        raise LabError(f"no config of the grid uses the sampler kind(s) {', '.join(sorted(unknown))}.")
    standard, own = [], []  # own: (position in the grid, its per-seed configs)
    for position, cfg in enumerate(configs):
        mine = _own_configs(cfg, classes[cfg.partition], seeds) if cfg.partition in classes else []
        if mine:
            own.append((position, mine))
        else:
            standard.append(cfg)
    done = impact.run(standard, seeds=seeds, workers=workers, table=table, progress=progress, log=log)
    where = {sweep.config_key(cfg, impact.simulated_run): position for position, cfg in enumerate(configs)}
    parts = [done.runs.assign(position=done.runs["config_key"].map(where))] if len(done.runs) else []
    counts = [done.ran, done.reused, done.failed]
    if own:
        log(f"{sum(len(m) for _, m in own)} runs on your samplers ({', '.join(mine[0].sampler.split()[0] for _, mine in own)}), in this process "
            f"one at a time; those already in {table}.csv are reused")

    def quiet(text: str) -> None:  # the count line of every one-run sweep is noise; failures are not
        if text.startswith("run failed"):
            log(text)
    for position, mine in own:
        for cfg in mine:
            one = sweep.sweep([cfg], own_sampler_run, seeds=(cfg.seed,), table=table, workers=1,
                              progress=False, log=quiet)
            counts = [a + b for a, b in zip(counts, (one.ran, one.reused, one.failed))]
            # one group per class: its seeds' fingerprints differ, and so do their config keys
            if len(one.runs):
                parts.append(impact.labelled(one.runs).assign(
                    config_key=f"own {cfg.partition} {cfg.sampler.split()[0]}", position=position))
    runs = pd.concat(parts, ignore_index=True).sort_values("position", kind="stable").drop(columns="position") \
        .reset_index(drop=True) if parts else pd.DataFrame()
    return sweep.Sweep(runs, ran=counts[0], reused=counts[1], failed=counts[2])
