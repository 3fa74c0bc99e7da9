"""Data-parallel speed on this machine, in one run, as samples/s and ratios.

Part 1, for lenet5 (batch 32) and cnn (batch 64 per worker): 1 worker x 1 thread, 1 process x
2 threads, 2 workers x 1 thread in each sync mode, and the machine's own limit, two independent
1-thread training processes that never communicate.
Part 2, the reference workload (2 nodes, lenet5, batch 32, 2 epochs) against a textbook
implementation: DataLoader over a per-sample Dataset, DistributedSampler, per-parameter all_reduce.
Usage: python benchmarks/scaling.py [--samples 6400] [--rounds 3] [--seeds 5] [--skip-reference | --only-reference]
"""
import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import labkit
from labkit import data, dataparallel, models, stats, training
from labkit.dataparallel import DPConfig

QUIET = dict(progress=False, save=False, log=lambda *_: None)


def independent_worker(model_name: str, batch: int, samples: int) -> float:
    """Train alone on `samples` samples (no collectives), twice; return the second pass's seconds."""
    train = data.load("mnist")
    train.normalized
    model = models.build(model_name, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    order = training.epoch_order(len(train), dist.get_rank(), 0)[:samples]
    for _ in range(2):  # the first pass warms up, like the first epoch of every other configuration
        dist.barrier()
        start = time.perf_counter()
        for s in range(0, samples, batch):
            x, y = train.batch(order[s:s + batch])
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return time.perf_counter() - start


def single_rate(model, batch, samples, threads) -> float:
    cfg = training.SingleConfig(model=model, batch_size=batch, epochs=2, threads=threads, train_subset=samples)
    return training.train_single(cfg, **QUIET)[-1]["samples_per_s"]


def dp_rate(model, batch, samples, sync) -> float:
    cfg = DPConfig(model=model, batch_size=batch, nodes=2, sync=sync, epochs=2, train_subset=samples)
    return dataparallel.run(cfg, **QUIET)[-1]["samples_per_s"]


def limit_rate(model, batch, samples) -> float:
    return samples / max(labkit.launch(independent_worker, 2, model, batch, samples // 2))


CONFIGS = {"1 worker x 1 thread": lambda *a: single_rate(*a, 1),
           "1 process x 2 threads": lambda *a: single_rate(*a, 2),
           **{f"2 workers {sync}": (lambda *a, sync=sync: dp_rate(*a, sync))
              for sync in ("ddp", "allreduce", "allgather", "local")},
           "limit: 2 independent": limit_rate}


def part1(model: str, batch: int, samples: int, rounds: int) -> None:
    """Every configuration once per round, rounds interleaved so that the machine's drift hits
    them alike; each is timed on its second epoch (the first warms up); the median is printed."""
    runs = {name: [] for name in CONFIGS}
    for r in range(rounds):
        for name, rate in CONFIGS.items():
            runs[name].append(rate(model, batch, samples))
    rates = {name: statistics.median(v) for name, v in runs.items()}
    one, two_threads, limit = (rates[k] for k in ("1 worker x 1 thread", "1 process x 2 threads",
                                                  "limit: 2 independent"))
    print(f"\n{model}, batch {batch} per worker, {samples} samples per epoch, median of {rounds} rounds")
    print(f"  {'configuration':24s} {'samples/s':>10s} {'x 1 worker':>11s} {'x 2 threads':>12s} {'x limit':>8s}"
          f"  {'spread':>7s}")
    for name, rate in rates.items():
        spread = (max(runs[name]) - min(runs[name])) / rate
        print(f"  {name:24s} {rate:10.0f} {rate / one:11.2f} {rate / two_threads:12.2f} {rate / limit:8.2f}"
              f"  {spread:6.0%}")


# ---------------------------------------------------------------- the textbook implementation

def textbook_worker(epochs: int, batch: int, seed: int) -> dict:
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from textbook import TutorialMNIST
    dataset = TutorialMNIST(data.load("mnist"))
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler)
    model = models.build("lenet5", seed=seed)
    for p in model.parameters():
        dist.broadcast(p.data, 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    world = dist.get_world_size()
    seconds = 0.0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            for p in model.parameters():  # one all_reduce per parameter, as in the tutorials
                dist.all_reduce(p.grad)
                p.grad /= world
            opt.step()
        seconds += time.perf_counter() - start
    acc = training.evaluate(model, data.load("mnist", train=False))[1] if dist.get_rank() == 0 else None
    return {"seconds": seconds, "acc": acc}


def part2(seeds: int) -> None:
    """Both implementations on the same seeds: wall time of training (evaluation excluded) and
    final test accuracy. One seed's accuracy moves by ~0.1-0.2 points with the sample order, so
    accuracies are compared as means over seeds."""
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    ours, theirs = [], []
    for seed in range(seeds):
        rows = dataparallel.run(DPConfig(seed=seed), **QUIET)
        ours.append((sum(r["epoch_seconds"] for r in rows), rows[-1]["test_acc"]))
        outs = labkit.launch(textbook_worker, 2, 2, 32, seed, timeout=1800)
        theirs.append((max(o["seconds"] for o in outs), outs[0]["acc"]))
    print(f"\nreference workload: 2 nodes, lenet5, batch 32, 2 epochs, seeds 0..{seeds - 1} "
          "(training wall time, eval excluded)")
    for name, runs in (("labkit allreduce", ours), ("textbook", theirs)):
        times, accs = zip(*runs)
        print(f"  {name:17s} {statistics.mean(times):7.1f} s  acc {statistics.mean(accs):.2f} %  "
              f"(per seed: {', '.join(f'{t:.1f} s {a:.2f} %' for t, a in runs)})")
    diffs = [a - b for (_, a), (_, b) in zip(ours, theirs)]
    if len(diffs) > 1:
        mean, half = stats.mean_ci(diffs)
        print(f"  accuracy labkit - textbook, paired by seed: {mean:+.2f} ± {half:.2f} points "
              "(95 % CI; the two differ only in sample order: DistributedSampler interleaves, labkit slices)")
    speedup = sum(t for t, _ in theirs) / sum(t for t, _ in ours)
    print(f"  speed-up labkit/textbook = {speedup:.2f}x (target >= 2.5x at equal or better accuracy)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=6400, help="samples per cnn measurement (lenet5: 3x)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of part 1 (median shown)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the reference comparison (part 2)")
    ap.add_argument("--skip-reference", action="store_true", help="skip part 2")
    ap.add_argument("--only-reference", action="store_true", help="skip part 1")
    args = ap.parse_args()
    if not args.only_reference:
        part1("lenet5", 32, 3 * args.samples, args.rounds)
        part1("cnn", 64, args.samples, args.rounds)
    if not args.skip_reference:
        part2(args.seeds)


if __name__ == "__main__":
    main()
