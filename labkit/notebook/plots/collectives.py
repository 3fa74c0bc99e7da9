"""Figures of notebook 01: collective timings against the alpha-beta model, and effective bandwidth."""
from __future__ import annotations

import numpy as np

from ...collectives.costmodel import OPS
from .base import axes, panels


def comm_costs(table, model, ops=None, ax=None):
    """Measured collective times (points) against the alpha-beta model (lines), one panel per collective."""
    ops = [op for op in (ops or OPS) if op in set(table["op"])]
    fig, grid = panels(ax, len(ops), (4.2 * len(ops), 3.6), sharey=True)
    for ax, op in zip(grid, ops):
        rows = table[table["op"] == op]
        for nodes, group in rows.groupby("nodes"):
            group = group.sort_values("bytes")
            dots = ax.loglog(group["bytes"], group["seconds"], "o", label=f"{nodes} nodes measured")
            sizes = np.geomspace(group["bytes"].min(), group["bytes"].max(), 50)
            ax.loglog(sizes, model.seconds(op, sizes, nodes), "-", color=dots[0].get_color(), alpha=0.7,
                      label=f"{nodes} nodes model")
        ax.set_title(op.replace("_", "-"))
        ax.set_xlabel("message size (bytes)")
        ax.grid(True, which="both", alpha=0.3)
    grid[0].set_ylabel("seconds per collective")
    grid[-1].legend(fontsize=8)
    fig.suptitle(f"alpha = {model.alpha * 1e6:.0f} us, bandwidth = {model.bandwidth / 1e9:.2f} GB/s")
    return fig


def comm_bandwidth(table, ax=None):
    """Effective bandwidth (bytes / second) against message size: small messages are latency-bound."""
    fig, ax = axes(ax, (5.5, 3.6))
    for (op, nodes), group in table.groupby(["op", "nodes"]):
        group = group.sort_values("bytes")
        ax.loglog(group["bytes"], group["bytes"] / group["seconds"] / 1e6, "o-", label=f"{op}, {nodes} nodes")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("effective bandwidth (MB/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig
