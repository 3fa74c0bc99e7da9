"""Matplotlib figures for the lab: one function per figure kind, each returning its Figure.

Workers never plot; notebooks call these on result tables. Sections follow the notebooks.
"""
from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: F401  (used by the sections below)
import numpy as np


# ---------------------------------------------------------------- partitioning (notebook 02)
# Each takes a labkit.partition report (or audit reports) and draws on ``ax`` or a new figure.

def _axes(ax, size=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def _finish(ax, xlabel: str, ylabel: str, title: str, legend_loc: str | None = None) -> None:
    """Labels, title, a light grid and (optionally) a small legend: the common end of a plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_loc:
        ax.legend(fontsize="small", loc=legend_loc)


def _node_ticks(ax, nodes: int, axis: str = "y") -> None:
    ticks = range(nodes) if nodes <= 20 else range(0, nodes, max(1, nodes // 10))
    (ax.set_yticks if axis == "y" else ax.set_xticks)(list(ticks))


def _bar_width(bars: int) -> float:
    return 0.9 if bars <= 30 else 1.0


def label_heatmap(report, ax=None, title=None, normalize: bool = False):
    """Nodes x classes: how many samples (or which share of the node, ``normalize``) of each class."""
    fig, ax = _axes(ax)
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
    fig, ax = _axes(ax)
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
    fig, ax = _axes(ax)
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


def partition_overview(report, title=None):
    """Heatmap, stacked bars and sizes of one partition side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    label_heatmap(report, axes[0])
    label_bars(report, axes[1])
    node_sizes(report, axes[2])
    s = report.summary
    fig.suptitle(f"{title + ': ' if title else ''}{s['nodes']} nodes, coverage {s['coverage']:.0%}, "
                 f"overlap {s['overlap']:.0%}, label skew TV {s['label_skew_tv']:.2f}")
    return fig


def strategy_grid(reports: dict, cols: int = 5):
    """One label-share heatmap per strategy (rows sum to 1), titled with its skew, for comparison."""
    rows = -(-len(reports) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), layout="constrained", squeeze=False)
    for ax, (name, report) in zip(axes.flat, reports.items()):
        shares = report.counts.to_numpy() / np.maximum(report.counts.to_numpy().sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}\nTV {report.summary['label_skew_tv']:.2f}, "
                     f"cov {report.summary['coverage']:.0%}", fontsize="medium")
        ax.set_xticks(range(shares.shape[1]), [str(c) for c in report.counts.columns], fontsize="x-small")
        ax.set_yticks([])
    for ax in axes.flat[len(reports):]:
        ax.axis("off")
    fig.supxlabel("class")
    fig.supylabel("node")
    return fig


def sampler_audit(audits: dict, ax=None):
    """Coverage and overlap per sampler (epoch 0), marking samplers that never reshuffle."""
    fig, ax = _axes(ax, size=(max(6, 2.0 * len(audits)), 4))
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

def speedup(table, ax=None, metric: str = "speedup"):
    """Measured speed-up (or efficiency) against cores, per setup family, with the ideal line."""
    fig, ax = _axes(ax)
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
    fig, ax = _axes(ax, (7, 4))
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
    fig, ax = _axes(ax, (6, 4))
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
    fig, ax = _axes(ax)
    ax.plot(table["delay_ms"], table["epoch_seconds"], "o-", label="epoch seconds")
    ax.plot(table["delay_ms"], table["wait_s"], "s--", label="waiting (mean over workers)")
    ax.set_xlabel("straggler delay per step (ms)")
    ax.set_ylabel("seconds")
    ax.set_title("one slow node slows everyone")
    ax.legend()
    return fig


def speedup_projection(predicted, measured=None):
    """Alpha-beta predictions of speed-up for more nodes at several link speeds, one panel per model,
    with the speed-ups measured on this machine as stars."""
    names = list(dict.fromkeys(predicted["model"]))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names):
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


# ---------------------------------------------------------------- partitioning impact (notebook 04)
# Each takes a summary (labkit.experiments.summarize: mean, ci95 per group) or the runs of a sweep.

def _impact_colours(names) -> dict:
    palette = plt.colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(dict.fromkeys(names))}


def strategy_accuracy(summary, x: str = "setting", panel: str = "training", title=None, zoom: bool = False):
    """Final test accuracy per strategy, mean with 95 % CI error bars; one panel per ``panel`` value,
    side by side on a shared y axis. Configs whose runs all failed are marked "failed". ``zoom``
    draws points instead of bars on an axis fitted to the intervals, for differences of a point or two."""
    panels = list(dict.fromkeys(summary[panel]))
    fig, axes = plt.subplots(1, len(panels), figsize=(0.5 * len(summary) + 3 * len(panels), 4.2), sharey=True,
                             squeeze=False, layout="constrained")
    colours = _impact_colours(summary[x])
    for ax, name in zip(axes[0], panels):
        part = summary[summary[panel] == name]
        xs = np.arange(len(part))
        if zoom:
            for i, (name_x, mean, half) in enumerate(zip(part[x], part["mean"], part["ci95"].fillna(0))):
                ax.errorbar(i, mean, yerr=half, fmt="o", capsize=4, color=colours[name_x])
            ax.set_xlim(-0.5, len(part) - 0.5)
        else:
            ax.bar(xs, part["mean"].fillna(0), yerr=part["ci95"].fillna(0), capsize=3,
                   color=[colours[v] for v in part[x]])
        for i, (failed, n) in enumerate(zip(part["failed"], part["n"])):
            if failed and not n:
                ax.text(i, 1, "failed", rotation=90, ha="center", va="bottom", color="tab:red")
        ax.set_xticks(xs, part[x], rotation=40, ha="right")
        ax.set_title(str(name))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy (%)\nmean ± 95 % CI over seeds")
    if title:
        fig.suptitle(title)
    return fig


def accuracy_curves(runs, by: str = "setting", panel=None, xlabel: str = "epoch", title=None):
    """Test accuracy after each epoch (or round), mean over seeds with a 95 % CI band, per ``by``."""
    from .stats import mean_ci
    ok = runs[runs["status"] == "ok"]
    panels = [None] if panel is None else list(dict.fromkeys(ok[panel]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False,
                             layout="constrained")
    colours = _impact_colours(ok[by])
    for ax, name in zip(axes[0], panels):
        part = ok if name is None else ok[ok[panel] == name]
        for label, group in part.groupby(by, sort=False):
            per_epoch = group.groupby("epoch")["test_acc"].agg(list)
            mean, half = np.array([mean_ci(v) for v in per_epoch]).T
            epochs = per_epoch.index.to_numpy()
            ax.plot(epochs, mean, "o-", color=colours[label], label=str(label))
            ax.fill_between(epochs, mean - np.nan_to_num(half), mean + np.nan_to_num(half),
                            color=colours[label], alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_xticks(sorted(part["epoch"].unique()))
        ax.set_title(str(name) if name is not None else (title or ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def accuracy_vs_skew(final, colour: str = "training", ax=None):
    """One point per run: final accuracy against label skew (mean TV distance). Hollow markers:
    unequal node sizes, so some nodes ran out of data before the others in every epoch."""
    fig, ax = _axes(ax, (7, 4.5))
    ok = final[final["status"] == "ok"]
    colours = _impact_colours(ok[colour])
    for name, group in ok.groupby(colour, sort=False):
        equal = group["tail_steps"] == 0
        ax.scatter(group.loc[equal, "label_skew"], group.loc[equal, "test_acc"], color=colours[name], label=str(name))
        ax.scatter(group.loc[~equal, "label_skew"], group.loc[~equal, "test_acc"], facecolors="none",
                   edgecolors=colours[name])
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="(hollow: unequal node sizes)")
    _finish(ax, "label skew: mean TV distance of a node's labels from the global mix", "final test accuracy (%)",
            "accuracy against label skew, one point per run", "lower left")
    return fig


def accuracy_vs_coverage(summary, ax=None):
    """Per sampler: final accuracy (mean ± 95 % CI) against the share of the data it covers per
    epoch (filled) and over the whole run (hollow)."""
    fig, ax = _axes(ax, (6.5, 4.5))
    colours = _impact_colours(summary["setting"])
    for _, row in summary.iterrows():
        c = colours[row["setting"]]
        ax.errorbar(row["coverage"], row["mean"], yerr=row["ci95"] if np.isfinite(row["ci95"]) else None,
                    fmt="o", color=c, capsize=3, label=row["setting"])
        if abs(row["coverage_run"] - row["coverage"]) > 1e-9:
            ax.plot(row["coverage_run"], row["mean"], "o", mfc="none", color=c)
            ax.annotate("", (row["coverage_run"], row["mean"]), (row["coverage"], row["mean"]),
                        arrowprops={"arrowstyle": "->", "color": c, "alpha": 0.5})
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    _finish(ax, "coverage of the training set (filled: per epoch, hollow: whole run)",
            "final test accuracy (%), mean ± 95 % CI", "accuracy against coverage", "lower right")
    return fig



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
