"""Seconds from ``labkit.launch(...)`` until every rank has joined the process group, for 2 and 4 workers.

The worker function returns the wall-clock time at which it starts, i.e. just after its rank joined
the gloo group; the slowest rank counts. Also printed: the whole round trip (start, run, clean exit),
and the same with one fresh interpreter per rank (LABKIT_START_METHOD=spawn) for comparison.
Usage: python benchmarks/launch.py [--nodes 2 4] [--repeats 3]
"""
import argparse
import os
import statistics
import time

import labkit


def joined_at() -> float:
    return time.time()


def measure(nodes: int, repeats: int) -> tuple[float, float]:
    ready, total = [], []
    for _ in range(repeats):
        start = time.time()
        stamps = labkit.launch(joined_at, nodes)
        total.append(time.time() - start)
        ready.append(max(stamps) - start)
    return statistics.median(ready), statistics.median(total)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    labkit.launch(joined_at, 1)  # warm the page cache once
    print(f"median of {args.repeats} launches, {os.cpu_count()} cores")
    results = {}
    for method in ("fork", "spawn"):
        os.environ["LABKIT_START_METHOD"] = method
        for nodes in args.nodes:
            ready, total = measure(nodes, args.repeats)
            results[method, nodes] = ready
            target = "  (target <= 3 s)" if nodes == 4 and method == "fork" else ""
            print(f"  {method:5s} {nodes} workers: all ranks joined after {ready:5.2f} s, "
                  f"launch returned after {total:5.2f} s{target}")
    for nodes in args.nodes:
        print(f"  ratio spawn/fork, {nodes} workers: {results['spawn', nodes] / results['fork', nodes]:.1f}x")


if __name__ == "__main__":
    main()
