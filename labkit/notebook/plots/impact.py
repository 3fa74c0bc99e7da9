"""Figures of notebook 04: accuracy per partition and training mode, over epochs, against label skew
and against coverage. Each takes the runs of a sweep (``Sweep.runs``, or ``Sweep.final``: one row per
run) and shows every seed, with the mean; partitions with unequal node sizes are marked."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .base import axes, colours, finish, panels

UNEQUAL_NOTE = "hollow, *: unequal node sizes (some nodes run out of data first)"


def _unequal(rows) -> bool:
    """Whether these runs' nodes held unequal shares (steps at the end of an epoch with nodes out of data,
    or, when the epoch ended early, sizes that differ)."""
    tail = rows["tail_steps"] if "tail_steps" in rows else None
    sizes = rows["size_imbalance"] if "size_imbalance" in rows else None
    return bool((tail is not None and (tail > 0).any()) or (sizes is not None and (sizes > 1.0001).any()))


def strategy_accuracy(final, x: str = "setting", panel: str = "training", title=None, ax=None):
    """Final test accuracy of every run as a point (one per seed), the mean over seeds as a bar-shaped
    tick; one panel per ``panel`` value on a shared y axis. Hollow points and a * mark partitions whose
    nodes hold unequal shares; configs whose runs all failed are marked "failed"."""
    names = list(dict.fromkeys(final[panel]))
    settings = list(dict.fromkeys(final[x]))
    fig, grid = panels(ax, len(names), (0.55 * len(settings) * len(names) + 2.5 * len(names), 4.2), sharey=True)
    colour = colours(final[x])
    for ax, name in zip(grid, names):
        part = final[final[panel] == name]
        shown = list(dict.fromkeys(part[x]))
        for i, setting in enumerate(shown):
            rows = part[part[x] == setting]
            ok = rows[rows["status"] == "ok"] if "status" in rows else rows
            if ok.empty:
                ax.text(i, 0.5, "failed", rotation=90, ha="center", va="bottom", color="tab:red",
                        transform=ax.get_xaxis_transform())
                continue
            hollow = _unequal(ok)
            jitter = np.linspace(-0.12, 0.12, len(ok)) if len(ok) > 1 else [0.0]
            ax.scatter(i + np.asarray(jitter), ok["test_acc"], s=22, color=colour[setting],
                       facecolors="none" if hollow else colour[setting], zorder=3)
            ax.hlines(ok["test_acc"].mean(), i - 0.3, i + 0.3, color=colour[setting], linewidth=2.5, zorder=2)
        ax.set_xticks(range(len(shown)), [f"{s} *" if _unequal(part[part[x] == s]) else s for s in shown],
                      rotation=40, ha="right")
        ax.set_title(str(name))
        ax.grid(axis="y", alpha=0.3)
    grid[0].set_ylabel("final test accuracy (%)\npoints: seeds, line: mean")
    fig.suptitle((f"{title}\n" if title else "") + UNEQUAL_NOTE, fontsize="medium")
    return fig


def accuracy_curves(runs, by: str = "setting", panel=None, xlabel: str = "epoch", title=None, ax=None):
    """Test accuracy after each epoch (or round, or evaluation): every seed as a thin line, the mean over
    seeds as a thick one, per ``by``; dashed and marked * where nodes hold unequal shares."""
    ok = runs[runs["status"] == "ok"]
    names = [None] if panel is None else list(dict.fromkeys(ok[panel]))
    fig, grid = panels(ax, len(names), (5.5 * len(names), 4), sharey=True)
    colour = colours(ok[by])
    for ax, name in zip(grid, names):
        part = ok if name is None else ok[ok[panel] == name]
        for label, group in part.groupby(by, sort=False):
            style = "--" if _unequal(group) else "-"
            for _, seed in group.groupby("seed"):
                ax.plot(seed["epoch"], seed["test_acc"], style, color=colour[label], alpha=0.35, linewidth=0.8)
            means = group.groupby("epoch")["test_acc"].mean()
            ax.plot(means.index, means.to_numpy(), "o" + style, color=colour[label], linewidth=2, markersize=4,
                    label=f"{label} *" if style == "--" else str(label))
        ax.set_xlabel(xlabel)
        ax.set_title(str(name) if name is not None else (title or ""))
        ax.grid(alpha=0.3)
    grid[0].set_ylabel("test accuracy (%)\nthin: seeds, thick: mean")
    grid[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0),
                    title="* dashed: unequal node sizes", title_fontsize="x-small")
    return fig


def accuracy_vs_skew(final, colour: str = "training", ax=None):
    """One point per run: final accuracy against label skew (mean TV distance). Hollow markers:
    unequal node sizes, so some nodes ran out of data before the others in every epoch."""
    fig, ax = axes(ax, (7, 4.5))
    ok = final[final["status"] == "ok"]
    palette = colours(ok[colour])
    for name, group in ok.groupby(colour, sort=False):
        equal = group["tail_steps"] == 0
        ax.scatter(group.loc[equal, "label_skew"], group.loc[equal, "test_acc"], color=palette[name], label=str(name))
        ax.scatter(group.loc[~equal, "label_skew"], group.loc[~equal, "test_acc"], facecolors="none",
                   edgecolors=palette[name])
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="(hollow: unequal node sizes)")
    finish(ax, "label skew: mean TV distance of a node's labels from the global mix", "final test accuracy (%)",
           "accuracy against label skew, one point per run", "lower left")
    return fig


def accuracy_vs_coverage(final, ax=None):
    """Per sampler: final accuracy of every seed against the share of the data it covered per epoch
    (filled points, the mean as a larger one) and over the whole run (hollow, at the mean accuracy)."""
    fig, ax = axes(ax, (6.5, 4.5))
    ok = final[final["status"] == "ok"]
    palette = colours(ok["setting"])
    for setting, rows in ok.groupby("setting", sort=False):
        c = palette[setting]
        ax.scatter(rows["coverage"], rows["test_acc"], s=14, color=c, alpha=0.6)
        ax.plot(rows["coverage"].mean(), rows["test_acc"].mean(), "o", color=c, markersize=9, label=setting)
        run, per_epoch = rows["coverage_run"].mean(), rows["coverage"].mean()
        if abs(run - per_epoch) > 1e-9:
            ax.plot(run, rows["test_acc"].mean(), "o", mfc="none", color=c, markersize=9)
            ax.annotate("", (run, rows["test_acc"].mean()), (per_epoch, rows["test_acc"].mean()),
                        arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.5})
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    finish(ax, "coverage of the training set (filled: per epoch, hollow: whole run)",
           "final test accuracy (%): small points seeds, large the mean", "accuracy against coverage", "lower right")
    return fig
