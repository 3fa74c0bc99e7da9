"""What every figure of the lab shares: where it draws (the ``ax=`` convention), and its common end.

The convention: every plotting function takes ``ax=None`` and returns its Figure. A one-panel figure
draws on ``ax`` (an Axes) or on a new figure; a figure of several panels takes a sequence of Axes, one
per panel, or makes its own. So a notebook can put any two figures side by side, or just call one.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from ...errors import LabError


def axes(ax=None, size=(6, 4)):
    """(figure, axes) to draw one panel on: ``ax`` itself, or a new figure of ``size`` inches."""
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def panels(ax, count: int, size, cols: int | None = None, **shared):
    """(figure, list of ``count`` axes): the given axes, or a new figure of panels in rows of ``cols``
    (default: one row). ``shared`` (e.g. ``sharey=True``) applies to a new figure only."""
    if ax is None:
        cols = cols or count
        rows = -(-count // cols)
        fig, grid = plt.subplots(rows, cols, figsize=size, layout="constrained", squeeze=False, **shared)
        for extra in list(grid.flat)[count:]:
            extra.axis("off")
        return fig, list(grid.flat)[:count]
    given = [ax] if isinstance(ax, Axes) else list(np.ravel(ax))
    if len(given) < count:
        raise LabError(f"this figure has {count} panels; pass ax= a list of {count} axes, or leave it out.")
    return given[0].figure, given[:count]


def finish(ax, xlabel: str, ylabel: str, title: str, legend_loc: str | None = None) -> None:
    """Labels, title, a light grid and (optionally) a small legend: the common end of a plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_loc:
        ax.legend(fontsize="small", loc=legend_loc)


def colours(names) -> dict:
    """One tab10 colour per distinct name, in order of first appearance."""
    palette = plt.colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(dict.fromkeys(names))}
