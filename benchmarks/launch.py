"""Seconds from ``labkit.launch(...)`` until every rank is inside the user's function: warm against cold.

Warm: the supervisor is forked by this process's warm interpreter (torch already imported), the default
on Linux. Cold: a fresh interpreter per launch (``LABKIT_WARM=0``, what every launch cost before).
Also a 3-process RPC launch each way, and one fresh interpreter per rank (``LABKIT_START_METHOD=spawn``,
macOS's way). Each configuration is measured ``--repeats`` times, interleaved, and the median printed;
the ratios compare medians from this same run.
Usage: python benchmarks/launch.py [--nodes 2 4] [--repeats 5]
"""
import argparse
import os
import statistics
import time
from unittest import mock

import labkit

MODES = {"warm": {}, "cold": {"LABKIT_WARM": "0"}, "spawn": {"LABKIT_START_METHOD": "spawn"}}


def entered_at() -> float:
    return time.time()


def launch_once(mode: str, nodes: int, rpc: bool) -> tuple[float, float]:
    """(seconds until the last rank entered the function, seconds until launch returned)."""
    with mock.patch.dict(os.environ, MODES[mode]):  # restores the environment afterwards
        start = time.time()
        stamps = labkit.launch(entered_at, nodes, rpc=rpc, timeout=120)
        return max(stamps) - start, time.time() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cases = [(mode, n, False) for n in args.nodes for mode in ("warm", "cold", "spawn")]
    cases += [("warm", 3, True), ("cold", 3, True)]
    launch_once("warm", 1, False)  # start the warm interpreter (and warm the page cache) outside the timing
    ready, total = {c: [] for c in cases}, {c: [] for c in cases}
    for _ in range(args.repeats):
        for case in cases:
            r, t = launch_once(*case)
            ready[case].append(r)
            total[case].append(t)
    med = {c: statistics.median(v) for c, v in ready.items()}
    print(f"median of {args.repeats} launches (interleaved), {os.cpu_count()} cores; "
          "ready = every rank inside the function")
    for case in cases:
        mode, nodes, rpc = case
        spread = f"{min(ready[case]):.3f}-{max(ready[case]):.3f}"
        print(f"  {mode:5s} {nodes} workers{' rpc' if rpc else '    '}: ready after {med[case]:6.3f} s "
              f"(range {spread}), launch returned after {statistics.median(total[case]):6.3f} s")
    for nodes in args.nodes:
        warm, cold = med["warm", nodes, False], med["cold", nodes, False]
        print(f"  {nodes} workers: warm {warm:.3f} s (target <= 0.25 s), cold/warm {cold / warm:.1f}x "
              f"(target >= 5x), spawn/warm {med['spawn', nodes, False] / warm:.1f}x")
    rpc_ratio = med["cold", 3, True] / med["warm", 3, True]
    print(f"  3 processes with RPC: cold/warm {rpc_ratio:.1f}x (target >= 2x)")


if __name__ == "__main__":
    main()
