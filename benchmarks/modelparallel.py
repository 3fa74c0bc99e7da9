"""Model parallelism over RPC, measured in one run: three comparisons, printed as ratios.

1. Step time of lenet5 split over 3 processes (master + two stages) against one local process.
2. Pipelining on the balanced ``mlp``: m = 4 micro-batches against m = 1, with a batch big enough that
   each micro-batch's compute is far above the RPC round trip, next to the bound from measured stage times.
3. The reference workload (lenet5, 2 epochs, batch 32) in each of labkit's variants (model_parallel.VARIANTS:
   where stage 1 lives, how the optimizer steps) against the textbook implementation
   of the PyTorch RPC tutorials: a DataLoader over a per-sample Dataset (textbook.py) feeding a chain of
   rpc_sync calls through the master, started with torch.multiprocessing.spawn. Both use labkit's
   lenet5 with the same initial weights, SGD(lr 0.01, momentum 0.9), and one torch thread per process.

Usage: python benchmarks/modelparallel.py [--epochs 2] [--steps 200] [--rounds 5] [--mlp-batch 1024]
"""
import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed.autograd as dist_autograd
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed import rpc
from torch.distributed.optim import DistributedOptimizer
from torch.utils.data import DataLoader

import labkit
from labkit import model_parallel as modelparallel
from labkit.data import datasets
from labkit.model_parallel import analysis as mpanalysis
from labkit.train import models, single
from textbook import TutorialMNIST


# ---------------------------------------------------------------- the textbook RPC implementation

class TextbookStage(nn.Module):
    """One half of the model on a worker, as the RPC tutorials write it."""

    def __init__(self, which):
        super().__init__()
        self.net = models.stages(models.build("lenet5", seed=0))[which]

    def forward(self, x):
        return self.net(x)

    def parameter_rrefs(self):
        return [rpc.RRef(p) for p in self.parameters()]


def _call_method(method, rref, *args):
    return method(rref.local_value(), *args)


def _remote_method(method, rref, *args):
    return rpc.rpc_sync(rref.owner(), _call_method, args=[method, rref] + list(args))


class TextbookNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.p1 = rpc.remote("worker1", TextbookStage, args=(0,))
        self.p2 = rpc.remote("worker2", TextbookStage, args=(1,))

    def forward(self, x):
        x = _remote_method(TextbookStage.forward, self.p1, x)
        return _remote_method(TextbookStage.forward, self.p2, x)

    def parameter_rrefs(self):
        return (_remote_method(TextbookStage.parameter_rrefs, self.p1)
                + _remote_method(TextbookStage.parameter_rrefs, self.p2))


def textbook_rank(rank, port, epochs, queue):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    rpc.init_rpc("master" if rank == 0 else f"worker{rank}", rank=rank, world_size=3)
    if rank == 0:
        loader = DataLoader(TutorialMNIST(datasets.load("mnist")), batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        net = TextbookNet()
        opt = DistributedOptimizer(torch.optim.SGD, net.parameter_rrefs(), lr=0.01, momentum=0.9)
        seconds = 0.0
        for _ in range(epochs):
            start = time.perf_counter()
            for x, y in loader:
                with dist_autograd.context() as context_id:
                    loss = F.cross_entropy(net(x), y)
                    dist_autograd.backward(context_id, [loss])
                    opt.step(context_id)
            seconds += time.perf_counter() - start
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(TutorialMNIST(datasets.load("mnist", train=False)), batch_size=1000):
                correct += (net(x).argmax(1) == y).sum().item()
        queue.put((seconds, 100.0 * correct / 10000))
        del net, opt
    rpc.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_textbook(epochs):
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(textbook_rank, args=(free_port(), epochs, queue), nprocs=3)
    return queue.get()


# ---------------------------------------------------------------- RPC round trip

def ping(times):
    if labkit.rank() == 0:
        one = torch.ones(1)
        rtts = []
        for _ in range(times):
            start = time.perf_counter()
            rpc.rpc_sync("worker1", torch.add, args=(one, 1))
            rtts.append(time.perf_counter() - start)
        torch.distributed.barrier()
        return 1e3 * statistics.median(rtts)
    torch.distributed.barrier()
    return None


# ---------------------------------------------------------------- the three comparisons

def compare_local(steps):
    local = single.step_ms("lenet5", 32, steps=steps)
    split = modelparallel.time_steps([modelparallel.MPConfig()], steps=steps).iloc[0]
    print(f"1. lenet5, batch 32, {steps} steps: one local process {local:.2f} ms/step; "
          f"model parallel over RPC {split.step_ms:.2f} ms/step = {split.step_ms / local:.1f}x slower")
    print(f"   per step: stage compute w1 {split.worker1_compute_ms:.2f} + w2 {split.worker2_compute_ms:.2f} ms, "
          f"nobody computes {split.nobody_computes_ms:.2f} ms (messages, RPC machinery, optimizer "
          f"{split.master_opt_ms:.2f} ms); idle w1 {split.worker1_idle_frac:.0%}, w2 {split.worker2_idle_frac:.0%}")
    dp = mpanalysis.data_parallel_bytes("lenet5")
    print(f"   bytes per step: model parallel {split.bytes_per_step / 1e3:.0f} kB (activations "
          f"{split.activation_bytes_per_step / 1e3:.0f} kB forward, gradients {split.gradient_bytes_per_step / 1e3:.0f} kB "
          f"backward) for 32 samples; data parallel (2 nodes, ring all-reduce) sends the parameter bytes "
          f"{dp['dp_bytes_per_node_step'] / 1e3:.0f} kB per node, {dp['dp_bytes_per_step'] / 1e3:.0f} kB in all, "
          f"for 64 samples")


def compare_pipelining(batch, rounds, steps):
    rtt = labkit.launch(ping, 3, 200, rpc=True, timeout=120)[0]
    configs = [modelparallel.MPConfig(model="mlp", batch_size=batch, micro_batches=m) for _ in range(rounds) for m in (1, 4)]
    table = modelparallel.time_steps(configs, steps=steps)
    med = table.groupby("micro_batches").median(numeric_only=True)
    one, four = med.loc[1], med.loc[4]
    per_micro = (one.worker1_compute_ms + one.worker2_compute_ms) / 2 / 4
    print(f"2. mlp (balanced), batch {batch}, medians of {rounds} interleaved rounds of {steps} steps: "
          f"m = 1 {one.step_ms:.1f} ms/step, m = 4 {four.step_ms:.1f} ms/step -> speed-up "
          f"{one.step_ms / four.step_ms:.2f}x (target >= 1.3x)")
    print(f"   bound from measured stage times (w1 {one.worker1_compute_ms:.1f}, w2 {one.worker2_compute_ms:.1f} ms "
          f"per batch): {mpanalysis.pipeline_bound(one.worker1_compute_ms, one.worker2_compute_ms, 4):.2f}x; "
          f"balanced ideal 2m/(m+1) = 1.60x")
    print(f"   compute per micro-batch and stage ~{per_micro:.1f} ms vs RPC round trip {rtt:.2f} ms; with m = 4 the "
          f"stages compute w1 {four.worker1_compute_ms:.1f}, w2 {four.worker2_compute_ms:.1f} ms per step and wait "
          f"for messages w1 {four.worker1_rpc_ms:.1f}, w2 {four.worker2_rpc_ms:.1f} ms")


def compare_textbook(epochs, rounds):
    """Training wall time of the reference workload: the textbook loop and each labkit variant, interleaved."""
    times = {"textbook": [], **{name: [] for name in modelparallel.VARIANTS}}
    accuracy = {name: [] for name in times}
    for _ in range(rounds):
        seconds, acc = run_textbook(epochs)
        times["textbook"].append(seconds)
        accuracy["textbook"].append(acc)
        for name, fields in modelparallel.VARIANTS.items():
            run = modelparallel.run(modelparallel.MPConfig(epochs=epochs, **fields), progress=False, save=False,
                                    log=lambda *_: None)
            times[name].append(sum(r["epoch_seconds"] for r in run.rows))
            accuracy[name].append(run.rows[-1]["test_acc"])
    textbook = statistics.median(times["textbook"])
    print(f"3. reference workload (lenet5, {epochs} epochs, batch 32), training wall time, median of {rounds} "
          f"interleaved rounds [min-max]; speed-up = textbook median / variant median (target >= 2x at equal or "
          f"better accuracy):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"   {name:45s} {median:6.1f} s [{min(values):.1f}-{max(values):.1f}]  "
              f"acc {statistics.mean(accuracy[name]):.2f} %  speed-up {textbook / median:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="timed steps for comparison 1")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved m=1/m=4 rounds for comparison 2")
    ap.add_argument("--mlp-batch", type=int, default=1024)
    ap.add_argument("--textbook-rounds", type=int, default=3, help="interleaved rounds for comparison 3")
    ap.add_argument("--only", type=int, choices=(1, 2, 3), help="run only this comparison")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, one torch thread per process")
    if args.only in (None, 1):
        compare_local(args.steps)
    if args.only in (None, 2):
        compare_pipelining(args.mlp_batch, args.rounds, 12)
    if args.only in (None, 3):
        compare_textbook(args.epochs, args.textbook_rounds)


if __name__ == "__main__":
    main()
