"""Samples/s of labkit's training loop against a textbook DataLoader loop, in one run.

The textbook loop is what the PyTorch tutorials write: a per-sample ``Dataset`` (see
textbook.py), a ``DataLoader`` with default collation, the same model, batch and threads.
Usage: python benchmarks/baseline.py [--model lenet5] [--steps 600] [--threads 1 2]
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from labkit.data import datasets
from labkit.data.batches import batches, epoch_order
from labkit.train import models
from labkit.train.loop import make_optimizer
from labkit.train.single import SingleConfig
from textbook import TutorialMNIST


def time_steps(model, opt, batches, steps):
    start = time.perf_counter()
    for _, (x, y) in zip(range(steps), batches):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    for threads in args.threads:
        compare(args, threads)


def compare(args, threads):
    torch.set_num_threads(threads)
    train = datasets.load("mnist")
    cfg = SingleConfig(model=args.model, batch_size=args.batch_size)
    n, b = args.steps * args.batch_size, args.batch_size

    def labkit_batches():
        return batches(train, epoch_order(len(train), 0, 0), b)

    textbook = DataLoader(TutorialMNIST(train), batch_size=b, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    rates = {}
    for name, make in (("labkit", labkit_batches), ("textbook", lambda: iter(textbook))):
        model = models.build(args.model, seed=0)
        opt = make_optimizer(model, cfg)
        time_steps(model, opt, make(), 20)  # warm-up
        rates[name] = n / time_steps(model, opt, make(), args.steps)
    print(f"model {args.model}, batch {b}, threads {threads}, {args.steps} steps each")
    for name, rate in rates.items():
        print(f"  {name:9s} {rate:9.0f} samples/s")
    print(f"  ratio labkit/textbook = {rates['labkit'] / rates['textbook']:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
