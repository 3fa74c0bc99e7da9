"""What a model-parallel run's recorded events say: compute, waiting and idle time per worker,
bytes on the wire per step, the pipelining bound, and where a model's compute sits layer by layer.

Events are (worker, seq, phase, start, end, in_bytes, out_bytes) rows; ``seq`` numbers micro-batches
across the run. Times come from ``time.perf_counter``, one clock for all processes of a machine.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from ..train import models
from .stage import BWD, FWD, OPT, PHASES, STEP

COLUMNS = ["seq", "phase", "start", "end", "in_bytes", "out_bytes"]
WORKERS = ("worker1", "worker2")


def events_frame(events: dict[str, torch.Tensor], epoch: int = 1) -> pd.DataFrame:
    """One epoch's raw event tensors (by process) as a table with step numbers and phase names."""
    parts = [pd.DataFrame(t.numpy(), columns=COLUMNS).assign(worker=w) for w, t in events.items() if len(t)]
    frame = pd.concat(parts, ignore_index=True)
    frame[["seq", "phase", "in_bytes", "out_bytes"]] = frame[["seq", "phase", "in_bytes", "out_bytes"]].astype(int)
    steps = frame[(frame.worker == "master") & (frame.phase == STEP)].sort_values("seq")
    frame["step"] = np.searchsorted(steps.seq.to_numpy(), frame.seq.to_numpy(), side="right") - 1
    frame["micro"] = frame.seq - steps.seq.to_numpy()[frame.step]
    frame["phase_name"] = frame.phase.map(PHASES)
    frame["epoch"] = epoch
    return frame[["epoch", "step", "micro", "seq", "worker", "phase", "phase_name", "start", "end",
                  "in_bytes", "out_bytes"]].sort_values(["start", "worker"], ignore_index=True)


def union_length(intervals: np.ndarray) -> float:
    """Total time covered by a set of [start, end] intervals (overlaps counted once)."""
    if len(intervals) == 0:
        return 0.0
    intervals = intervals[np.argsort(intervals[:, 0])]
    total, (cur_start, cur_end) = 0.0, intervals[0]
    for start, end in intervals[1:]:
        if start > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return float(total + cur_end - cur_start)


def _ready_times(frame: pd.DataFrame, horizontal: bool) -> pd.Series:
    """When each worker event's input was ready at its sender (the message could have left)."""
    at: dict = {}   # (worker, phase, seq) -> end of the first such event (the master's head, not its tail)
    for w, p, s, e in frame.sort_values("start")[["worker", "phase", "seq", "end"]].itertuples(index=False):
        at.setdefault((w, p, s), e)
    master = frame[frame.worker == "master"]
    step_start = master[master.phase == STEP].set_index("step").start
    bwd_start = master[master.phase == BWD].set_index("step").start

    def ready(row) -> float:
        if horizontal:   # both halves: input from the master's head, gradient from the master's backward
            return at.get(("master", FWD, row.seq), step_start.get(row.step, np.nan)) if row.phase == FWD \
                else bwd_start.get(row.step, np.nan)
        if row.worker == "worker1":
            return step_start.get(row.step, np.nan) if row.phase == FWD else at.get(("worker2", BWD, row.seq), np.nan)
        return at.get(("worker1", FWD, row.seq), np.nan) if row.phase == FWD else bwd_start.get(row.step, np.nan)
    work = frame[frame.worker.isin(WORKERS)]
    return work.apply(ready, axis=1) if len(work) else pd.Series(dtype=float)


def summarize(frame: pd.DataFrame, wall: float, horizontal: bool = False) -> dict:
    """Per-worker compute, message wait ("rpc") and idle fraction; bytes per step; master's optimizer time.

    A worker's rpc time is the time work for it was ready at the sender but had not started
    while the worker was free: messages in flight and RPC machinery, not pipeline bubbles.
    """
    out: dict = {}
    work = frame[frame.worker.isin(WORKERS)].copy()
    work["ready"] = _ready_times(frame, horizontal)
    for w in WORKERS:
        mine = work[work.worker == w].sort_values("start")
        free_at = mine.end.shift(1).fillna(-np.inf)
        wait = (mine.start - np.maximum(mine.ready, free_at)).clip(lower=0).fillna(0)
        duration = mine.end - mine.start
        out[f"{w}_fwd_s"] = float(duration[mine.phase == FWD].sum())
        out[f"{w}_bwd_s"] = float(duration[mine.phase == BWD].sum())
        out[f"{w}_compute_s"] = out[f"{w}_fwd_s"] + out[f"{w}_bwd_s"]
        out[f"{w}_rpc_s"] = float(wait.sum())
        out[f"{w}_idle_frac"] = max(0.0, 1 - out[f"{w}_compute_s"] / wall) if wall > 0 else float("nan")
    master = frame[frame.worker == "master"]
    out["master_compute_s"] = float((master.end - master.start)[master.phase == FWD].sum())
    out["master_opt_s"] = float((master.end - master.start)[master.phase == OPT].sum())
    computing = frame[frame.worker.isin(WORKERS) | (frame.phase == FWD)][["start", "end"]].to_numpy()
    out["nobody_computes_s"] = max(0.0, wall - union_length(computing))
    out.update(bytes_per_step(frame, horizontal))
    return out


def bytes_per_step(frame: pd.DataFrame, horizontal: bool) -> dict:
    """Tensor payload sent per training step (message headers not counted), forward and backward.

    Vertical: input to worker1, activations worker1 -> worker2, outputs to the master; backward:
    output gradients to worker2, activation gradients worker2 -> worker1. Horizontal: each half
    gets the input and returns its outputs; backward sends each half its output gradients and
    returns the input gradients.
    """
    fwd = frame[(frame.phase == FWD) & frame.worker.isin(WORKERS)]
    steps = max(1, frame[frame.phase == STEP].step.nunique())
    w1, w2 = fwd[fwd.worker == "worker1"], fwd[fwd.worker == "worker2"]
    if horizontal:
        forward = backward = float(fwd.in_bytes.sum() + fwd.out_bytes.sum())
    else:
        forward = float(w1.in_bytes.sum() + w2.in_bytes.sum() + w2.out_bytes.sum())
        backward = float(w2.out_bytes.sum() + w2.in_bytes.sum())
    return {"activation_bytes_per_step": forward / steps, "gradient_bytes_per_step": backward / steps,
            "bytes_per_step": (forward + backward) / steps}


def data_parallel_bytes(model_name: str, nodes: int = 2) -> dict:
    """Gradient bytes of one data-parallel step with ring all-reduce: every node sends
    2(N-1)/N x the parameter bytes (= the parameter bytes for N = 2); all nodes together N times that."""
    param_bytes = 4 * models.count_parameters(models.build(model_name))
    per_node = 2 * (nodes - 1) / nodes * param_bytes
    return {"parameter_bytes": param_bytes, "dp_bytes_per_node_step": per_node,
            "dp_bytes_per_step": nodes * per_node}


def pipeline_bound(t1: float, t2: float, m: int) -> float:
    """Best speed-up of m micro-batches over one for two stages taking t1 and t2 per batch, if
    messages were free: m(t1 + t2) / (t1 + t2 + (m - 1) max(t1, t2)); 2m/(m + 1) when balanced."""
    return m * (t1 + t2) / (t1 + t2 + (m - 1) * max(t1, t2))


def profile_layers(model_name: str, batch_size: int = 32, repeats: int = 20, seed: int = 0,
                   threads: int = 1) -> pd.DataFrame:
    """Forward + backward time of each layer in this process with ``threads`` torch threads, as a
    stage worker runs it (median of ``repeats``), each layer's share of the whole, and the cumulative share."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _profile(model_name, batch_size, repeats, seed)
    finally:
        torch.set_num_threads(before)


def _profile(model_name: str, batch_size: int, repeats: int, seed: int) -> pd.DataFrame:
    model = models.build(model_name, seed=seed)
    x = torch.randn(batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    inputs = []
    with torch.no_grad():
        for layer in model:
            inputs.append(x)
            x = layer(x)
    rows, upstream_params = [], False
    for i, (layer, h) in enumerate(zip(model, inputs)):
        h = h.clone().requires_grad_(upstream_params)   # an input gradient only if something before learns
        upstream_params |= any(True for _ in layer.parameters())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = layer(h)
            if out.requires_grad:
                out.backward(torch.ones_like(out))
            times.append(time.perf_counter() - start)
        rows.append({"layer": i, "kind": type(layer).__name__, "ms": 1e3 * float(np.median(times)),
                     "params": sum(p.numel() for p in layer.parameters())})
    table = pd.DataFrame(rows)
    table["share"] = table.ms / table.ms.sum()
    table["cumulative_share"] = table.share.cumsum()   # stage 1's share if stage 2 starts at the next layer
    return table


def best_split(profile: pd.DataFrame) -> int:
    """The split point (first layer of stage 2) that makes the slower stage as fast as possible."""
    stage1 = profile.share.cumsum().to_numpy()[:-1]        # split at k+1: stage 1 = layers 0..k
    return int(np.argmin(np.maximum(stage1, 1 - stage1))) + 1


def comparison(single: list[dict], data_parallel: list[dict], runs: dict[str, list[dict]], model: str = "lenet5",
               batch_size: int = 32) -> pd.DataFrame:
    """One row per way of training: the single process, data parallelism on 2 nodes (its rows; bytes from
    the parameter count, every node's all-reduce traffic together), and each model-parallel run
    (``runs``: name -> result rows). Times and accuracy are the last epoch's."""
    last, dp_last = single[-1], data_parallel[-1]
    dp = data_parallel_bytes(model, nodes=2)
    table = [{"training": "single machine", "processes": 1, "wall s": last["wall_seconds"], "test acc %": last["test_acc"],
              "samples/s": last["samples_per_s"], "bytes per step": 0, "bytes per sample": 0.0},
             {"training": "data parallel, 2 nodes (all-reduce)", "processes": 2, "wall s": dp_last["wall_seconds"],
              "test acc %": dp_last["test_acc"], "samples/s": dp_last["samples_per_s"],
              "bytes per step": dp["dp_bytes_per_step"], "bytes per sample": dp["dp_bytes_per_step"] / (2 * batch_size)}]
    for name, rows in runs.items():
        r = rows[-1]
        table.append({"training": name, "processes": 3, "wall s": r["wall_seconds"], "test acc %": r["test_acc"],
                      "samples/s": r["samples_per_s"], "bytes per step": r["bytes_per_step"],
                      "bytes per sample": r["bytes_per_step"] / r["batch_size"]})
    return pd.DataFrame(table).set_index("training")


def best_pipelining(medians: pd.DataFrame) -> tuple[float, int]:
    """(speed-up over m = 1, m) of the best micro-batch count in a ``time_steps`` median table."""
    best = medians.loc[medians["speedup_vs_m1"].idxmax()]
    return float(best["speedup_vs_m1"]), int(best["micro_batches"])
