"""Matplotlib figures for the lab: one function per figure kind, each returning its Figure.

Workers never plot; notebooks call these on result tables. Sections follow the notebooks.
"""
from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: F401  (used by the sections below)


# ---------------------------------------------------------------- partitioning (notebook 02)


# ---------------------------------------------------------------- communication (notebook 01)

def comm_costs(table, model, ops=None):
    """Measured collective times (points) against the alpha-beta model (lines), one panel per collective."""
    import numpy as np

    from .comm import OPS
    ops = [op for op in (ops or OPS) if op in set(table["op"])]
    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.6), sharey=True, squeeze=False)
    for ax, op in zip(axes[0], ops):
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
    axes[0][0].set_ylabel("seconds per collective")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"alpha = {model.alpha * 1e6:.0f} us, bandwidth = {model.bandwidth / 1e9:.2f} GB/s")
    fig.tight_layout()
    return fig


def comm_bandwidth(table):
    """Effective bandwidth (bytes / second) against message size: small messages are latency-bound."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (op, nodes), group in table.groupby(["op", "nodes"]):
        group = group.sort_values("bytes")
        ax.loglog(group["bytes"], group["bytes"] / group["seconds"] / 1e6, "o-", label=f"{op}, {nodes} nodes")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("effective bandwidth (MB/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig



# ---------------------------------------------------------------- data parallelism (notebook 03)


# ---------------------------------------------------------------- partitioning impact (notebook 04)


# ---------------------------------------------------------------- model parallelism (notebook 05)
