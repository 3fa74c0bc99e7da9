"""Figures of notebook 06: all-reduce time per message size under each link rate next to the alpha-beta
fit of that rate, and measured against predicted data-parallel speed-up per model and rate."""
from __future__ import annotations

import numpy as np

from .base import colours, finish, panels


def _bars(low, mid, high) -> np.ndarray:
    """Matplotlib's asymmetric error bars (distances below and above ``mid``), never negative."""
    mid = np.asarray(mid, dtype=float)
    return np.clip(np.vstack([mid - np.asarray(low, dtype=float), np.asarray(high, dtype=float) - mid]), 0, None)


def _fit_label(rate: str, model) -> str:
    """'100 Mbit/s fit: 670 us + n / 99 Mbit/s' (no bandwidth term where the best fit has beta = 0)."""
    if model.beta == 0:
        return f"{rate} fit: {model.alpha * 1e6:.0f} us, no per-byte term"
    speed = f"{model.gbit:.1f} Gbit/s" if model.gbit >= 1 else f"{model.gbit * 1e3:.0f} Mbit/s"
    return f"{rate} fit: {model.alpha * 1e6:.0f} us + n / {speed}"


def shaped_allreduce(comm, models: dict, ax=None):
    """Measured all-reduce seconds per message size (points: median, bar from the fastest repeat to the
    median, or to the slowest if recorded), one colour per link rate, with that rate's fitted alpha-beta line."""
    fig, (ax,) = panels(ax, 1, (6.4, 4.2))
    colour = colours(comm["rate"])
    for rate, rows in comm.groupby("rate", sort=False):
        rows = rows.sort_values("bytes")
        top = rows["max_seconds"] if "max_seconds" in rows else rows["seconds"]
        model = models[rate]
        ax.errorbar(rows["bytes"], rows["seconds"], yerr=_bars(rows["min_seconds"], rows["seconds"], top), fmt="o",
                    color=colour[rate], capsize=3, label=f"{rate} measured")
        sizes = np.geomspace(rows["bytes"].min(), rows["bytes"].max(), 50)
        ax.plot(sizes, model.seconds("all_reduce", sizes, int(rows["nodes"].iloc[0])), "-", color=colour[rate],
                alpha=0.7, label=_fit_label(rate, model))
    ax.set_xscale("log")
    ax.set_yscale("log")
    finish(ax, "message size (bytes)", "seconds per all-reduce", f"all-reduce on {int(comm['nodes'].iloc[0])} "
           "nodes: measured and alpha-beta fit per link", legend_loc="upper left")
    return fig


def shaped_speedup(table, ax=None):
    """Measured (filled, median and min-max over epochs) against predicted (open, range from the 1-node
    epochs' compute) speed-up, one panel per model, nodes on the x axis, one colour per link rate."""
    models = list(dict.fromkeys(table["model"]))
    fig, grid = panels(ax, len(models), (5.2 * len(models), 4.0), sharey=True)
    colour = colours(table["rate"])
    rates = list(colour)
    for ax, model in zip(grid, models):
        rows = table[table["model"] == model]
        for k, rate in enumerate(rates):
            at = rows[rows["rate"] == rate].sort_values("nodes")
            x = at["nodes"].to_numpy(dtype=float) + 0.18 * (k - (len(rates) - 1) / 2)
            ax.errorbar(x - 0.04, at["measured"], yerr=_bars(at["measured_min"], at["measured"], at["measured_max"]),
                        fmt="o", color=colour[rate], capsize=3, label=f"{rate} measured")
            ax.errorbar(x + 0.04, at["predicted"], yerr=_bars(at["predicted_min"], at["predicted"],
                                                             at["predicted_max"]),
                        fmt="s", mfc="none", color=colour[rate], capsize=3, label=f"{rate} predicted")
        ax.axhline(1, color="grey", lw=0.8, ls="--")
        ax.set_xticks(sorted(set(rows["nodes"])))
        finish(ax, "nodes", "speed-up over 1 node", model)
    grid[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig
