"""Time every partition strategy on the 60,000 MNIST training labels (the issue's budget: 0.1 s each).

Prints the best of several runs per strategy and its share of the budget; also times the report.
Usage: python benchmarks/partition.py [--nodes 100] [--repeats 5]
"""
import argparse
import time

from labkit.data import datasets, measures, partition

BUDGET = 0.1  # seconds per strategy for 100 nodes over 60,000 labels


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    labels = datasets.load("mnist").labels.numpy()
    print(f"{len(labels)} MNIST labels over {args.nodes} nodes, best of {args.repeats} (budget {BUDGET} s)")
    print(f"  {'strategy':11s} {'ms':>8s} {'of budget':>10s}")
    worst = 0.0
    for strategy in partition.STRATEGIES:
        seconds = best_time(lambda: partition.partition(labels, args.nodes, strategy, seed=0), args.repeats)
        worst = max(worst, seconds)
        print(f"  {strategy:11s} {1000 * seconds:8.2f} {seconds / BUDGET:9.1%}")
    parts = partition.partition(labels, args.nodes, "dirichlet", seed=0)
    seconds = best_time(lambda: measures.measure(labels, parts), args.repeats)
    print(f"  {'(report)':11s} {1000 * seconds:8.2f} {seconds / BUDGET:9.1%}")
    print(f"slowest strategy: {worst / BUDGET:.1%} of the budget -> {'OK' if worst < BUDGET else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
