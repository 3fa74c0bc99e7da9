"""Seconds the ``labkit`` command takes to print its help and to refuse a bad flag (target: under 1 s each).

Each command runs in a fresh interpreter, as a user types it; the median of ``--repeats`` runs is printed
next to ``python -c pass`` (the interpreter's own start) and ``python -c "import torch"`` for scale.
Usage: python benchmarks/cli.py [--repeats 5]
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "labkit --help": [sys.executable, "-m", "labkit", "--help"],
    "labkit run dp --help": [sys.executable, "-m", "labkit", "run", "dp", "--help"],
    "labkit run dp --sync nope": [sys.executable, "-m", "labkit", "run", "dp", "--sync", "nope"],
    "labkit run mp --micro-batches 5": [sys.executable, "-m", "labkit", "run", "mp", "--micro-batches", "5"],
    "labkit run mp --split 0": [sys.executable, "-m", "labkit", "run", "mp", "--split", "0"],
}
TARGETS = {name for name in COMMANDS if name.startswith("labkit")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    print(f"median of {args.repeats} runs, each in a fresh interpreter")
    for name, values in times.items():
        target = "  (target < 1 s: " + ("met" if statistics.median(values) < 1 else "MISSED") + ")" \
            if name in TARGETS else ""
        print(f"  {name:34s} {statistics.median(values):5.2f} s (range {min(values):.2f}-{max(values):.2f}){target}")


if __name__ == "__main__":
    main()
