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

PHASE_COLORS = {"fwd": "tab:blue", "bwd": "tab:orange", "opt": "tab:gray"}


def mp_timeline(events, steps=None, title=None):
    """Gantt chart of a model-parallel run: what the master and each stage worker did, when.

    ``events``: ``MPRun.events`` (or one epoch of it); ``steps``: (first, last) step to show, by default
    the two steps after the first three of the last epoch. Bars are labelled with the micro-batch.
    """
    epoch = events[events.epoch == events.epoch.max()]
    first, last = steps if steps is not None else (min(3, epoch.step.max()), min(4, epoch.step.max()))
    shown = epoch[(epoch.step >= first) & (epoch.step <= last) & epoch.phase_name.isin(list(PHASE_COLORS))]
    t0 = epoch[(epoch.step == first) & (epoch.phase_name == "step")].start.min()
    rows = ["master", "worker1", "worker2"]
    span = 1e3 * (shown.end.max() - t0)
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for _, e in shown.iterrows():
        if e.worker == "master" and e.phase_name == "bwd":
            continue  # the master only waits during backward; its bar would hide nothing useful
        y, left, width = rows.index(e.worker), 1e3 * (e.start - t0), 1e3 * (e.end - e.start)
        ax.barh(y, width, left=left, height=0.6, color=PHASE_COLORS[e.phase_name], edgecolor="black", linewidth=0.4)
        if e.phase_name != "opt" and width > 0.025 * span:
            ax.text(left + width / 2, y, str(e.micro), ha="center", va="center", fontsize=7, color="white")
    part = "half" if (epoch[epoch.worker == "master"].phase_name == "fwd").any() else "stage"  # horizontal split
    ax.set_yticks(range(len(rows)), ["master", f"worker1\n({part} 1)", f"worker2\n({part} 2)"])
    ax.invert_yaxis()
    ax.set_xlabel(f"ms since the start of step {first}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    ax.legend(handles, ["forward", "backward", "optimizer step"], loc="lower right", bbox_to_anchor=(1, 1),
              fontsize=8, ncols=3, frameon=False)
    ax.set_title(title or f"steps {first}-{last} (numbers: micro-batches)", loc="left", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def mp_split_profile(profile, at=None):
    """Share of the compute per layer, and how it divides between the stages for every split point."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    labels = [f"{i}:{k}" for i, k in zip(profile.layer, profile.kind)]
    left.bar(range(len(profile)), 100 * profile.share, color="tab:blue")
    left.set_xticks(range(len(profile)), labels, rotation=60, ha="right", fontsize=8)
    left.set_ylabel("% of forward+backward time")
    splits = profile.layer.to_numpy()[1:]
    stage1 = 100 * profile.share.cumsum().to_numpy()[:-1]
    right.plot(splits, stage1, "o-", label="stage 1")
    right.plot(splits, 100 - stage1, "s-", label="stage 2")
    right.axhline(50, color="gray", lw=0.8, ls="--")
    if at is not None:
        right.axvline(at, color="tab:red", lw=1, label=f"split at {at}")
    right.set_xlabel("split point (first layer of stage 2)")
    right.set_ylabel("% of the work")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def mp_pipelining(table):
    """Measured speed-up of m micro-batches over one, per model, against the bound from stage times
    and the balanced ideal 2m/(m+1)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (model, at), group in table.groupby(["model", "split_at"]):
        group = group.groupby("micro_batches")[["speedup_vs_m1", "bound"]].median().reset_index()
        line = ax.plot(group.micro_batches, group.speedup_vs_m1, "o-", label=f"{model} (split {at}) measured")
        ax.plot(group.micro_batches, group.bound, "--", color=line[0].get_color(), label=f"{model} bound")
    m = sorted(set(table.micro_batches))
    ax.plot(m, [2 * k / (k + 1) for k in m], ":", color="black", label="balanced ideal 2m/(m+1)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(m, [str(k) for k in m])
    ax.set_xlabel("micro-batches m")
    ax.set_ylabel("speed-up over m = 1")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def mp_worker_time(table, label="config"):
    """Per step and worker: computing, waiting for messages (rpc) and otherwise idle, one bar group per row."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(table))
    for k, (worker, offset) in enumerate((("worker1", -0.2), ("worker2", 0.2))):
        compute, rpc = table[f"{worker}_compute_ms"], table[f"{worker}_rpc_ms"]
        idle = (table.step_ms - compute - rpc).clip(lower=0)
        ax.bar(x + offset, compute, 0.38, color="tab:blue", label="compute" if k == 0 else None)
        ax.bar(x + offset, rpc, 0.38, bottom=compute, color="tab:red", label="waiting for messages" if k == 0 else None)
        ax.bar(x + offset, idle, 0.38, bottom=compute + rpc, color="lightgray",
               label="idle (other stage, optimizer)" if k == 0 else None)
    ax.set_xticks(x, [f"{v}\nw1 | w2" for v in table[label]], fontsize=8)
    ax.set_ylabel("ms per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
