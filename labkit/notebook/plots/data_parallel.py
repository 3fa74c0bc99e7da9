"""Figures of notebook 03: speed-up against cores, where a step's time goes, what gradient
aggregation costs, a straggler, and the alpha-beta projection to more nodes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .base import axes, panels


def speedup(table, ax=None, metric: str = "speedup"):
    """Measured speed-up (or efficiency) against cores with 95 % intervals: one process (N threads),
    N synchronous workers per mode, and local SGD (another algorithm, dashed), with the ideal line."""
    fig, ax = axes(ax)
    scale = (lambda rows: rows["cores"]) if metric == "efficiency" else (lambda rows: 1.0)
    for (kind, sync), group in table.groupby(["kind", "sync"], sort=False):
        group = group.sort_values("cores")
        style = {"one process": ("s--", "black"), "local SGD": ("^:", None)}.get(kind, ("o-", None))
        ax.errorbar(group["cores"], group["speedup"] / scale(group), yerr=group["speedup_ci95"].fillna(0) / scale(group),
                    fmt=style[0], color=style[1], capsize=3,
                    label={"one process": "1 process x N threads", "local SGD": "N workers, local SGD (other algorithm)"}
                    .get(kind, f"N workers x 1 thread ({sync})"))
    cores = sorted(table["cores"].unique())
    ax.plot(cores, cores if metric == "speedup" else [1.0] * len(cores), ":", color="grey", label="ideal")
    ax.set_xticks(cores)
    ax.set_xlabel("cores used (workers x threads)")
    ax.set_ylabel("speed-up over 1 process x 1 thread" if metric == "speedup" else "efficiency (speed-up / cores)")
    ax.set_title(f"{table['model'].iloc[0]}: {metric}, mean and 95 % interval over rounds")
    ax.legend(fontsize=8)
    return fig


def time_breakdown(table, ax=None):
    """Stacked bars: milliseconds of compute, communication and waiting per training step and worker."""
    fig, ax = axes(ax, (7, 4))
    bottom = np.zeros(len(table))
    for column, colour in (("compute_ms", "tab:blue"), ("comm_ms", "tab:orange"), ("wait_ms", "tab:red")):
        values = table[column].to_numpy()
        ax.bar(table["setup"], values, bottom=bottom, color=colour, label=column.removesuffix("_ms"))
        bottom += values
    ax.set_ylabel("ms per step (median over rounds)")
    ax.set_title("where the time goes (per worker, mean over workers)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend()
    return fig


def sync_cost(table, ax=None):
    """Communication milliseconds and bytes per step of each sync mode at the same node count."""
    fig, ax = axes(ax, (6, 4))
    rows = table[table["sync"] != "none"]
    x = np.arange(len(rows))
    ax.bar(x, rows["comm_ms"], color="tab:orange")
    ax.set_xticks(x, rows["setup"], rotation=20)
    ax.set_ylabel("communication ms per step")
    twin = ax.twinx()
    twin.plot(x, rows["bytes_per_step"] / 1e6, "kD", label="MB sent per step per worker")
    twin.set_ylabel("MB sent per step per worker")
    twin.set_ylim(bottom=0)
    twin.legend(loc="upper left", fontsize=8)
    ax.set_title("cost of gradient aggregation")
    return fig


def time_to_accuracy(curves, ax=None):
    """Test accuracy against training time for every method (each seed a line), the target as a
    horizontal line, and where each method first reached it."""
    fig, ax = axes(ax, (8, 4.5))
    palette = plt.colormaps["tab10"]
    target = curves["target"].iloc[0]
    for i, (method, runs) in enumerate(curves.groupby("method", sort=False)):
        colour = palette(i % 10)
        for j, (_, run) in enumerate(runs.groupby("seed")):
            run = run.sort_values("wall_seconds")
            ax.plot(run["wall_seconds"], run["test_acc"], "-", color=colour, alpha=0.8, linewidth=1.2,
                    label=method if j == 0 else None)
            hit = run[run["test_acc"] >= target]
            if len(hit):
                ax.plot(hit["wall_seconds"].iloc[0], hit["test_acc"].iloc[0], "o", color=colour)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    low = max(curves["test_acc"].min(), target - 6)
    ax.set_ylim(low, 100)
    ax.set_xlabel("training seconds (evaluation not counted)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"time to {target:g} % test accuracy (dots: first evaluation at or above it)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
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
    """Alpha-beta predictions of speed-up for more nodes at several link speeds and latencies (one line
    style per latency), one panel per model, with the speed-ups measured on this machine as stars."""
    names = list(dict.fromkeys(predicted["model"]))
    fig, grid = panels(ax, len(names), (6.5 * len(names), 4.5))
    palette = plt.colormaps["tab10"]
    for ax, name in zip(grid, names):
        mine = predicted[predicted["model"] == name]
        gbits = list(dict.fromkeys(mine["gbit"]))
        for style, (latency, lines) in zip(("o-", "s--", "^:"), mine.groupby("latency", sort=False)):
            for gbit, group in lines.groupby("gbit"):
                ax.plot(group["nodes"], group["speedup"], style, color=palette(gbits.index(gbit)), markersize=4,
                        label=f"{gbit:g} Gbit/s, α = {group['alpha_us'].iloc[0]:.0f} µs ({latency})")
        points = measured[measured["model"] == name] if measured is not None else mine.iloc[:0]
        if len(points):
            ax.errorbar(points["workers"], points["speedup"], yerr=points.get("speedup_ci95"), fmt="k*",
                        markersize=12, capsize=3, label="measured here (all-reduce)")
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
