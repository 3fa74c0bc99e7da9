"""Figures of notebook 05: a model-parallel run's timeline, how the compute divides between stages,
pipelining against its bound, and where each worker's time goes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .base import axes, panels

PHASE_COLORS = {"fwd": "tab:blue", "bwd": "tab:orange", "opt": "tab:gray"}


def mp_timeline(events, steps=None, title=None, ax=None):
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
    fig, ax = axes(ax, (10, 2.8))
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
    return fig


def mp_split_profile(profile, at=None, ax=None):
    """Share of the compute per layer, and how it divides between the stages for every split point."""
    fig, (left, right) = panels(ax, 2, (10, 3.4))
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
    return fig


def mp_pipelining(table, ax=None):
    """Measured speed-up of m micro-batches over one, per model, against the bound from stage times
    and the balanced ideal 2m/(m+1)."""
    fig, ax = axes(ax, (5.5, 3.6))
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
    return fig


def mp_worker_time(table, label="config", ax=None):
    """Per step and worker: computing, waiting for messages (rpc) and otherwise idle, one bar group per row."""
    fig, ax = axes(ax, (6.5, 3.4))
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
    return fig


def mp_variants(table, ax=None):
    """Median step time per variant (``compare_variants``), the bar's line spanning min to max over rounds."""
    fig, ax = axes(ax, (6.5, 3.2))
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["median ms"], color="tab:blue", alpha=0.7)
    ax.errorbar(table["median ms"], y, xerr=[table["median ms"] - table["min ms"], table["max ms"] - table["median ms"]],
                fmt="none", ecolor="black", capsize=3)
    ax.set_yticks(y, [f"{name} ({n} proc.)" for name, n in zip(table.index, table.processes)], fontsize=8)
    ax.set_xlabel("ms per training step (median, min-max over rounds)")
    ax.grid(True, axis="x", alpha=0.3)
    return fig
