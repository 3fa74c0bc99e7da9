"""Speed measured fairly on a noisy machine: every configuration inside the same N worker processes, a
block of training steps at a time, in a rotating order, over several rounds.

A separate launch per configuration gave ratios that moved by 15-30 % between launches on the shared
2-core machine: its speed drifts within a minute. Interleaved blocks see the same drift, so the ratio
of two configurations within one round is stable, and the spread of that ratio over rounds is the
measurement's own noise (``labkit.studies.speedup`` turns it into 95 % intervals). ``run_blocks`` is
the worker function; one-process setups train on rank 0 alone while the other ranks wait.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..data import datasets
from ..data.batches import batches, epoch_order
from ..data_parallel import sync as synchronizers
from ..data_parallel.train import split_waiting
from ..train import models
from ..train.loop import forward_backward


@dataclass(frozen=True)
class Setup:
    """One configuration: ``sync`` "none" is one process training alone with ``threads`` threads."""

    name: str
    sync: str
    threads: int = 1

    @property
    def alone(self) -> bool:
        return self.sync == "none"


def setups(nodes: int, syncs) -> list[Setup]:
    """The fair set for N workers: one process on one thread, one process on N threads (the same
    cores), and N workers with one thread each in every sync mode."""
    one = [Setup("1 process x 1 thread", "none", 1), Setup(f"1 process x {nodes} threads", "none", nodes)]
    return one + [Setup(f"{nodes} workers {sync}", sync) for sync in syncs]


class _Alone:
    """One process's plain training step (what ``labkit.train.single`` does per batch)."""

    def __init__(self, model, opt):
        self.module, self.opt = model, opt

    def step(self, batch) -> synchronizers.StepTimes:
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = forward_backward(self.module, batch)
        self.opt.step()
        return synchronizers.StepTimes(loss, time.perf_counter() - start, 0.0)

    def bytes_per_step(self) -> float:
        return 0.0


def _stepper(setup: Setup, model_name: str, nodes: int, seed: int, lr: float, local_steps: int, averaging: dict):
    model = models.build(model_name, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if setup.alone:
        return _Alone(model, opt)
    return synchronizers.build(setup.sync, model, opt, nodes, local_steps, averaging.get(setup.sync))


def run_blocks(model_name: str, batch_size: int, chosen: list[Setup], rounds: int, block: int, seed: int = 0,
               lr: float = 0.01, local_steps: int = 50, averaging: dict | None = None) -> dict | None:
    """Worker function (every rank): ``rounds`` rounds after one warm-up round, each running ``block``
    steps of every setup in turn. Rank 0 returns {setup name: [one dict per round]}: samples/s, and
    per step and worker the compute, communication and waiting milliseconds and the bytes sent.
    ``averaging`` maps "allreduce" / "allgather" to a user's ``average(model)`` to time instead of labkit's."""
    rank, nodes = dist.get_rank(), dist.get_world_size()
    train = datasets.load("mnist")
    train.normalized
    stream = itertools.cycle(batches(train, epoch_order(len(train), seed + rank, 0), batch_size))
    steppers = {s.name: _stepper(s, model_name, nodes, seed, lr, local_steps, averaging or {}) for s in chosen}
    for setup in chosen:
        if not setup.alone:
            steppers[setup.name].before_epoch(next(stream))   # DDP measures its compute time here
    measured = {s.name: [] for s in chosen}
    for r in range(rounds + 1):
        for setup in chosen[r % len(chosen):] + chosen[:r % len(chosen)]:   # rotate the order each round
            row = _block(steppers[setup.name], setup, stream, block, batch_size, rank, nodes)
            if r and rank == 0:                                           # round 0 warms every setup up
                measured[setup.name].append(row)
    return measured if rank == 0 else None


def _block(stepper, setup: Setup, stream, block: int, batch_size: int, rank: int, nodes: int) -> dict:
    """``block`` steps of one setup, between two barriers; the same on every rank."""
    comm = torch.zeros(block, dtype=torch.float64)
    compute = 0.0
    dist.barrier()
    start = time.perf_counter()
    if not setup.alone or rank == 0:
        torch.set_num_threads(setup.threads)
        for s in range(block):
            t = stepper.step(next(stream))
            compute, comm[s] = compute + t.compute, t.comm
        torch.set_num_threads(1)
    dist.barrier()
    seconds = time.perf_counter() - start
    if setup.alone:
        return {"samples_per_s": block * batch_size / seconds, "compute_ms": 1e3 * compute / block,
                "comm_ms": 0.0, "wait_ms": 0.0, "bytes_per_step": 0.0}
    every = torch.tensor([compute], dtype=torch.float64)
    dist.all_reduce(every)
    comm_s, wait_s = split_waiting(comm, padded=stepper.pads_uneven)
    return {"samples_per_s": nodes * block * batch_size / seconds, "compute_ms": 1e3 * every.item() / nodes / block,
            "comm_ms": 1e3 * comm_s / block, "wait_ms": 1e3 * wait_s / block, "bytes_per_step": stepper.bytes_per_step()}
