"""Figures of notebook 04: accuracy per partition and training mode, over epochs, against label skew
and against coverage. Each takes a summary (``labkit.studies.sweep.summarize``: mean, ci95 per group)
or the runs of a sweep."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ...studies.stats import mean_ci
from .base import axes, colours, finish, panels


def strategy_accuracy(summary, x: str = "setting", panel: str = "training", title=None, zoom: bool = False,
                      ax=None):
    """Final test accuracy per strategy, mean with 95 % CI error bars; one panel per ``panel`` value,
    side by side on a shared y axis. Configs whose runs all failed are marked "failed". ``zoom``
    draws points instead of bars on an axis fitted to the intervals, for differences of a point or two."""
    names = list(dict.fromkeys(summary[panel]))
    fig, grid = panels(ax, len(names), (0.5 * len(summary) + 3 * len(names), 4.2), sharey=True)
    colour = colours(summary[x])
    for ax, name in zip(grid, names):
        part = summary[summary[panel] == name]
        xs = np.arange(len(part))
        if zoom:
            for i, (name_x, mean, half) in enumerate(zip(part[x], part["mean"], part["ci95"].fillna(0))):
                ax.errorbar(i, mean, yerr=half, fmt="o", capsize=4, color=colour[name_x])
            ax.set_xlim(-0.5, len(part) - 0.5)
        else:
            ax.bar(xs, part["mean"].fillna(0), yerr=part["ci95"].fillna(0), capsize=3,
                   color=[colour[v] for v in part[x]])
        for i, (failed, n) in enumerate(zip(part["failed"], part["n"])):
            if failed and not n:
                ax.text(i, 1, "failed", rotation=90, ha="center", va="bottom", color="tab:red")
        ax.set_xticks(xs, part[x], rotation=40, ha="right")
        ax.set_title(str(name))
        ax.grid(axis="y", alpha=0.3)
    grid[0].set_ylabel("final test accuracy (%)\nmean ± 95 % CI over seeds")
    if title:
        fig.suptitle(title)
    return fig


def accuracy_curves(runs, by: str = "setting", panel=None, xlabel: str = "epoch", title=None, ax=None):
    """Test accuracy after each epoch (or round), mean over seeds with a 95 % CI band, per ``by``."""
    ok = runs[runs["status"] == "ok"]
    names = [None] if panel is None else list(dict.fromkeys(ok[panel]))
    fig, grid = panels(ax, len(names), (5.5 * len(names), 4), sharey=True)
    colour = colours(ok[by])
    for ax, name in zip(grid, names):
        part = ok if name is None else ok[ok[panel] == name]
        for label, group in part.groupby(by, sort=False):
            per_epoch = group.groupby("epoch")["test_acc"].agg(list)
            mean, half = np.array([mean_ci(v) for v in per_epoch]).T
            epochs = per_epoch.index.to_numpy()
            ax.plot(epochs, mean, "o-", color=colour[label], label=str(label))
            ax.fill_between(epochs, mean - np.nan_to_num(half), mean + np.nan_to_num(half),
                            color=colour[label], alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_xticks(sorted(part["epoch"].unique()))
        ax.set_title(str(name) if name is not None else (title or ""))
        ax.grid(alpha=0.3)
    grid[0].set_ylabel("test accuracy (%)")
    grid[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
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


def accuracy_vs_coverage(summary, ax=None):
    """Per sampler: final accuracy (mean ± 95 % CI) against the share of the data it covers per
    epoch (filled) and over the whole run (hollow)."""
    fig, ax = axes(ax, (6.5, 4.5))
    palette = colours(summary["setting"])
    for _, row in summary.iterrows():
        c = palette[row["setting"]]
        ax.errorbar(row["coverage"], row["mean"], yerr=row["ci95"] if np.isfinite(row["ci95"]) else None,
                    fmt="o", color=c, capsize=3, label=row["setting"])
        if abs(row["coverage_run"] - row["coverage"]) > 1e-9:
            ax.plot(row["coverage_run"], row["mean"], "o", mfc="none", color=c)
            ax.annotate("", (row["coverage_run"], row["mean"]), (row["coverage"], row["mean"]),
                        arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.5})
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    finish(ax, "coverage of the training set (filled: per epoch, hollow: whole run)",
           "final test accuracy (%), mean ± 95 % CI", "accuracy against coverage", "lower right")
    return fig
