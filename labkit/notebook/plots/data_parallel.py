"""Figures of notebook 03: speed-up against cores, where a step's time goes, what gradient
aggregation costs, a straggler, and the alpha-beta projection to more nodes."""
from __future__ import annotations

import numpy as np

from .base import axes, panels


def speedup(table, ax=None, metric: str = "speedup"):
    """Measured speed-up (or efficiency) against cores, per setup family, with the ideal line."""
    fig, ax = axes(ax)
    for sync, group in table[table["sync"] != "none"].groupby("sync"):
        group = group.sort_values("cores")
        ax.plot(group["cores"], group[metric], "o-", label=f"N workers x 1 thread ({sync})")
    single = table[table["sync"] == "none"].sort_values("cores")
    ax.plot(single["cores"], single[metric], "s--", color="black", label="1 process x N threads")
    cores = sorted(table["cores"].unique())
    ideal = cores if metric == "speedup" else [1.0] * len(cores)
    ax.plot(cores, ideal, ":", color="grey", label="ideal")
    ax.set_xticks(cores)
    ax.set_xlabel("cores used (workers x threads)")
    ax.set_ylabel("speed-up over 1 process x 1 thread" if metric == "speedup" else "efficiency (speed-up / cores)")
    ax.set_title(f"{table['model'].iloc[0]}: {metric}")
    ax.legend(fontsize=8)
    return fig


def time_breakdown(table, ax=None, per: str = "step"):
    """Stacked bars: seconds of compute, communication and waiting, per training step, for each setup."""
    fig, ax = axes(ax, (7, 4))
    steps = table["samples"] / (table["batch_size"] * table["workers"])
    scale = 1e3 / steps if per == "step" else 1.0
    bottom = np.zeros(len(table))
    for column, colour in (("compute_s", "tab:blue"), ("comm_s", "tab:orange"), ("wait_s", "tab:red")):
        values = (table[column] * scale).to_numpy()
        ax.bar(table["setup"], values, bottom=bottom, color=colour, label=column.removesuffix("_s"))
        bottom += values
    ax.set_ylabel("ms per step" if per == "step" else "seconds")
    ax.set_title("where the time goes (per worker, mean over workers)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    return fig


def sync_cost(table, ax=None):
    """Communication seconds and bytes per step of each sync mode at the same node count."""
    fig, ax = axes(ax, (6, 4))
    rows = table[table["sync"] != "none"]
    x = np.arange(len(rows))
    ax.bar(x, rows["comm_s"], color="tab:orange")
    ax.set_xticks(x, rows["setup"], rotation=20)
    ax.set_ylabel("communication seconds per epoch")
    twin = ax.twinx()
    twin.plot(x, rows["bytes_per_step"] / 1e6, "kD", label="MB sent per step per worker")
    twin.set_ylabel("MB sent per step per worker")
    twin.set_ylim(bottom=0)
    twin.legend(loc="upper left", fontsize=8)
    ax.set_title("cost of gradient aggregation")
    return fig


def straggler(table, ax=None):
    """Epoch time and the other workers' waiting as one worker gets slower."""
    fig, ax = axes(ax)
    ax.plot(table["delay_ms"], table["epoch_seconds"], "o-", label="epoch seconds")
    ax.plot(table["delay_ms"], table["wait_s"], "s--", label="waiting (mean over workers)")
    ax.set_xlabel("straggler delay per step (ms)")
    ax.set_ylabel("seconds")
    ax.set_title("one slow node slows everyone")
    ax.legend()
    return fig


def speedup_projection(predicted, measured=None, ax=None):
    """Alpha-beta predictions of speed-up for more nodes at several link speeds, one panel per model,
    with the speed-ups measured on this machine as stars."""
    names = list(dict.fromkeys(predicted["model"]))
    fig, grid = panels(ax, len(names), (6 * len(names), 4))
    for ax, name in zip(grid, names):
        mine = predicted[predicted["model"] == name]
        for gbit, group in mine.groupby("gbit"):
            ax.plot(group["nodes"], group["speedup"], "o-", label=f"model, {gbit:g} Gbit/s")
        points = measured[measured["model"] == name] if measured is not None else mine.iloc[:0]
        if len(points):
            ax.plot(points["workers"], points["speedup"], "k*", markersize=12, label="measured here")
        nodes = sorted(set(mine["nodes"]) | set(points.get("workers", [])))
        ax.plot(nodes, nodes, ":", color="grey", label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("nodes")
        ax.set_ylabel("speed-up over one node")
        ax.set_title(f"{name}: {mine['grad_mb'].iloc[0]:.2f} MB gradients, "
                     f"{mine['step_ms'].iloc[0]:.1f} ms compute per step")
        ax.legend(fontsize=8)
    return fig
