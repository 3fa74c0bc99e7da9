"""Live per-node progress in the parent: one tqdm bar per node, fed by ``report(**metrics)`` in workers.

``step``/``total`` move the bar, ``epoch`` goes into its label, every other metric (loss, acc, ...)
is shown after it. In Jupyter tqdm.auto draws widgets; in a terminal, text bars.
"""
from __future__ import annotations

import contextlib
import sys
import time

from tqdm.auto import tqdm

REFRESH = 0.2  # seconds between redraws of one bar
_hidden = [0]


@contextlib.contextmanager
def hidden():
    """Launches inside this block draw no progress bars (``labkit run ... --no-progress``)."""
    _hidden[0] += 1
    try:
        yield
    finally:
        _hidden[0] -= 1


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class NodeProgress:
    """Bars for ``nodes`` ranks, created when a rank first reports; ``write`` prints without tearing them."""

    def __init__(self, nodes: int):
        self.nodes, self.bars, self.latest, self._drawn = nodes, {}, {}, {}

    def update(self, rank: int, metrics: dict) -> None:
        merged = {**self.latest.get(rank, {}), **metrics}
        self.latest[rank] = merged
        bar = self.bars.get(rank)
        if bar is None and _hidden[0]:
            return
        if bar is None:
            bar = self.bars[rank] = tqdm(total=None, desc=f"node {rank}", position=rank, leave=True,
                                         dynamic_ncols=True, file=sys.stderr)
        total, step = merged.get("total"), merged.get("step")
        if isinstance(total, (int, float)) and total != bar.total:
            bar.reset(total=total)
        if isinstance(step, (int, float)):
            bar.n = step
        label = f"node {rank}" + (f" epoch {merged['epoch']}" if "epoch" in merged else "")
        bar.set_description_str(label, refresh=False)
        shown = {k: _format(v) for k, v in merged.items() if k not in ("step", "total", "epoch")}
        bar.set_postfix(shown, refresh=False)
        now = time.monotonic()
        if now - self._drawn.get(rank, 0.0) >= REFRESH:
            self._drawn[rank] = now
            bar.refresh()

    def write(self, line: str, stream: str = "stdout") -> None:
        tqdm.write(line, file=sys.stderr if stream == "stderr" else sys.stdout)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.refresh()
            bar.close()
        self.bars = {}
