"""Figures of notebook 02: how a partition divides the labels and the sizes over the nodes, and what
an audit of samplers found. Each takes a ``labkit.data.measures`` report (or audit reports)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .base import axes, panels


def _node_ticks(ax, nodes: int, axis: str = "y") -> None:
    ticks = range(nodes) if nodes <= 20 else range(0, nodes, max(1, nodes // 10))
    (ax.set_yticks if axis == "y" else ax.set_xticks)(list(ticks))


def _bar_width(bars: int) -> float:
    return 0.9 if bars <= 30 else 1.0


def label_heatmap(report, ax=None, title=None, normalize: bool = False):
    """Nodes x classes: how many samples (or which share of the node, ``normalize``) of each class."""
    fig, ax = axes(ax)
    counts = report.counts.to_numpy().astype(float)
    if normalize:
        counts = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest",
                      vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in report.counts.columns])
    _node_ticks(ax, counts.shape[0])
    ax.set_xlabel("class")
    ax.set_ylabel("node")
    ax.set_title(title or f"label skew (TV) {report.summary['label_skew_tv']:.2f}")
    fig.colorbar(image, ax=ax, label="share of node" if normalize else "samples")
    return fig


def label_bars(report, ax=None, title=None):
    """One bar per node, stacked by class: sizes and label mix at a glance."""
    fig, ax = axes(ax)
    counts = report.counts.to_numpy()
    classes = counts.shape[1]
    colors = plt.colormaps["tab10" if classes <= 10 else "viridis"].resampled(classes)(range(classes))
    bottom = np.zeros(counts.shape[0])
    for column, cls in enumerate(report.counts.columns):
        ax.bar(range(counts.shape[0]), counts[:, column], bottom=bottom, color=colors[column], label=str(cls),
               width=_bar_width(counts.shape[0]), linewidth=0)
        bottom += counts[:, column]
    _node_ticks(ax, counts.shape[0], axis="x")
    ax.set_xlabel("node")
    ax.set_ylabel("samples")
    ax.set_title(title or "samples per node by class")
    ax.legend(title="class", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def node_sizes(report, ax=None, title=None):
    """Samples per node, with the mean as a line and the max/mean imbalance in the title."""
    fig, ax = axes(ax)
    sizes = report.per_node["size"].to_numpy()
    width = _bar_width(len(sizes))
    ax.bar(range(len(sizes)), sizes, color="tab:blue", width=width, linewidth=0, label="samples")
    if report.per_node["duplicates"].any():
        ax.bar(range(len(sizes)), report.per_node["duplicates"], color="tab:red", width=width, linewidth=0,
               label="repeats inside the node")
        ax.legend(fontsize="small", loc="lower right")
    ax.axhline(sizes.mean(), color="black", linestyle="--", linewidth=1)
    _node_ticks(ax, len(sizes), axis="x")
    ax.set_xlabel("node")
    ax.set_ylabel("samples")
    ax.set_title(title or f"node sizes (max/mean {report.summary['size_imbalance']:.2f})")
    return fig


def partition_overview(report, title=None, ax=None):
    """Heatmap, stacked bars and sizes of one partition side by side (three panels)."""
    fig, (heat, bars, sizes) = panels(ax, 3, (15, 4))
    label_heatmap(report, heat)
    label_bars(report, bars)
    node_sizes(report, sizes)
    s = report.summary
    fig.suptitle(f"{title + ': ' if title else ''}{s['nodes']} nodes, coverage {s['coverage']:.0%}, "
                 f"overlap {s['overlap']:.0%}, label skew TV {s['label_skew_tv']:.2f}")
    return fig


def strategy_grid(reports: dict, cols: int = 5, ax=None):
    """One label-share heatmap per strategy (rows sum to 1), titled with its skew, for comparison."""
    rows = -(-len(reports) // cols)
    fig, grid = panels(ax, len(reports), (3.2 * cols + 1, 3.0 * rows), cols=cols)
    image = None
    for ax, (name, report) in zip(grid, reports.items()):
        shares = report.counts.to_numpy() / np.maximum(report.counts.to_numpy().sum(axis=1, keepdims=True), 1)
        image = ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}\nTV {report.summary['label_skew_tv']:.2f}, "
                     f"cov {report.summary['coverage']:.0%}", fontsize="medium")
        ax.set_xticks(range(shares.shape[1]), [str(c) for c in report.counts.columns], fontsize="x-small")
        _node_ticks(ax, shares.shape[0])
        ax.tick_params(axis="y", labelsize="x-small")
    if image is not None:
        fig.colorbar(image, ax=grid, label="share of the node's samples", shrink=0.8)
    fig.supxlabel("class")
    fig.supylabel("node")
    return fig


def sampler_audit(audits: dict, ax=None):
    """Coverage and overlap per sampler (epoch 0), marking samplers that never reshuffle."""
    fig, ax = axes(ax, size=(max(6, 2.0 * len(audits)), 4))
    names = list(audits)
    x = np.arange(len(names))
    coverage = [a.table["coverage"].iloc[0] for a in audits.values()]
    overlap = [a.table["overlap"].iloc[0] for a in audits.values()]
    ax.bar(x - 0.2, coverage, width=0.4, label="coverage", color="tab:green")
    ax.bar(x + 0.2, overlap, width=0.4, label="overlap", color="tab:red")
    still = [a.table["order_changed"].iloc[1:].eq(False).any() for a in audits.values()]
    ax.set_xticks(x, [f"{n}\n(never reshuffles)" if s else n for n, s in zip(names, still)],
                  fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction (epoch 0)")
    ax.set_title("sampler audit")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
