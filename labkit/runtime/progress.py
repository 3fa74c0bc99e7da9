"""Progress the way the place it is shown needs it: widgets in Jupyter, bars on a terminal, lines in a log.

``bar(total, desc)`` is the one progress bar of the lab (training epochs, sweeps, notebook runs).
In a Jupyter kernel it is a tqdm widget whose text is rewritten when it closes, so an executed
notebook saved by papermill shows the final state ("node 0 epoch 2: 100% 40/40"), not the empty
bar it started as ("0it [00:00, ?it/s]"). On a terminal it is tqdm's text bar. When the output is a
file or a pipe (``labkit run mp > log``), it prints one line every ``LINE_INTERVAL`` seconds and a
last one when it closes, instead of thousands of carriage-return frames.

``NodeProgress`` shows one such bar per node of a launch, fed by ``report(**metrics)`` in workers:
``step``/``total`` move the bar, ``epoch`` goes into its label, every other metric is shown after it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

REFRESH = 0.2         # seconds between redraws of one node's bar
LINE_INTERVAL = 5.0   # seconds between the lines of one bar in a log
_hidden = [0]


@contextlib.contextmanager
def hidden():
    """Launches inside this block draw no progress bars (``labkit run ... --no-progress``)."""
    _hidden[0] += 1
    try:
        yield
    finally:
        _hidden[0] -= 1


def where() -> str:
    """Where progress is shown: "widgets" (a Jupyter kernel), "terminal", or "lines" (a file or pipe)."""
    try:
        from IPython import get_ipython
        if getattr(get_ipython(), "kernel", None) is not None:
            return "widgets"
    except ImportError:
        pass
    return "terminal" if sys.stderr.isatty() else "lines"


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineBar:
    """A progress bar for logs: a line now and then, and one at the end (the subset of tqdm the lab uses)."""

    def __init__(self, total=None, desc: str = "", leave: bool = True, file=None, **_):
        self.total, self.desc, self.leave, self.n = total, desc, leave, 0
        self.file, self.postfix, self.closed = file or sys.stderr, "", False
        self.started = self.printed = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh(False)

    def reset(self, total=None) -> None:
        self.n, self.total = 0, total

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        shown = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in shown.items())

    def line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        return f"{self.desc}: {done} ({time.monotonic() - self.started:.0f} s)" + (f" {self.postfix}" if self.postfix else "")

    def refresh(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self.printed >= LINE_INTERVAL:
            self.printed = now
            print(self.line(), file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed and self.leave:
            self.refresh()
        self.closed = True


def _notebook_bar(**kwargs):
    """A tqdm widget shown under a display id, so closing it leaves its final text in the saved output."""
    from IPython.display import display
    from tqdm.notebook import tqdm as widget_tqdm

    class NotebookBar(widget_tqdm):
        def __init__(self, **kw):
            super().__init__(display=False, **kw)
            self.handle = display(self.container, display_id=True)

        def close(self):
            if self.disable:
                return
            super().close()
            if self.leave:
                self.handle.update(self.container)           # text/plain now shows the final state
            else:
                self.handle.update({"text/plain": ""}, raw=True)  # a bar that leaves leaves nothing
    return NotebookBar(**kwargs)


def bar(total=None, desc: str = "", leave: bool = True, disable: bool = False, position=None):
    """The lab's progress bar for the place it is shown (see the module doc); ``disable``: a silent one."""
    from tqdm.auto import tqdm
    if disable or _hidden[0] or os.environ.get("TQDM_DISABLE") == "1":
        return tqdm(total=total, disable=True)
    kind = where()
    if kind == "widgets":
        return _notebook_bar(total=total, desc=desc, leave=leave)
    if kind == "terminal":
        return tqdm(total=total, desc=desc, leave=leave, position=position, dynamic_ncols=True, file=sys.stderr)
    return LineBar(total=total, desc=desc, leave=leave)


class NodeProgress:
    """Bars for ``nodes`` ranks, created when a rank first reports; ``write`` prints without tearing them."""

    def __init__(self, nodes: int):
        self.nodes, self.bars, self.latest, self._drawn = nodes, {}, {}, {}

    def update(self, rank: int, metrics: dict) -> None:
        merged = {**self.latest.get(rank, {}), **metrics}
        self.latest[rank] = merged
        node_bar = self.bars.get(rank)
        if node_bar is None and _hidden[0]:
            return
        total, step = merged.get("total"), merged.get("step")
        if node_bar is None:
            node_bar = self.bars[rank] = bar(total=total if isinstance(total, (int, float)) else None,
                                             desc=f"node {rank}", position=rank)
        if isinstance(total, (int, float)) and total != node_bar.total:
            node_bar.reset(total=total)
        if isinstance(step, (int, float)):
            node_bar.n = step
        label = f"node {rank}" + (f" epoch {merged['epoch']}" if "epoch" in merged else "")
        node_bar.set_description_str(label, refresh=False)
        node_bar.set_postfix({k: _format(v) for k, v in merged.items() if k not in ("step", "total", "epoch")},
                             refresh=False)
        now = time.monotonic()
        if now - self._drawn.get(rank, 0.0) >= REFRESH:
            self._drawn[rank] = now
            node_bar.refresh() if not isinstance(node_bar, LineBar) else node_bar.refresh(False)

    def write(self, line: str, stream: str = "stdout") -> None:
        from tqdm.auto import tqdm
        tqdm.write(line, file=sys.stderr if stream == "stderr" else sys.stdout)

    def close(self) -> None:
        for node_bar in self.bars.values():
            if not isinstance(node_bar, LineBar):
                node_bar.refresh()
            node_bar.close()
        self.bars = {}
