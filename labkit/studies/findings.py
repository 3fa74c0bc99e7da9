"""Notebook 04's statements, computed from the result tables so the prose cannot disagree with them.

Every function takes the ``Sweep`` of one experiment (``labkit.studies.impact.run``) and returns plain
sentences or a table. Differences between two settings are means over seeds with a Welch 95 %
CI; "within noise" means that interval includes 0.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .impact import expected_coverage

ORIGINAL_LAB = (93.42, 94.46)  # the two single runs of the original course (DESIGN.md)
# NIID-Bench (Li et al., ICDE 2022), MNIST, 10 parties, FedAvg: final accuracy range in %.
NIID_BENCH = {"iid": (99.1, 99.1), "dirichlet α=0.5": (98.9, 98.9), "label_k_random k=2": (97.0, 97.0),
              "label_k k=1": (20.0, 30.0)}


def final_runs(sweep) -> pd.DataFrame:
    """The last row of every run that finished."""
    final = sweep.final
    return final[final["status"] == "ok"] if len(final) else final


def pick(final, column: str = "test_acc", **match) -> np.ndarray:
    """``column`` of the runs matching every ``name=value`` (one value per seed)."""
    rows = final
    for name, value in match.items():
        if name not in rows:
            return np.array([])
        rows = rows[rows[name] == value]
    return rows[column].to_numpy(dtype=float)


def mean(values) -> float:
    """The mean, NaN for no values."""
    return float(np.mean(values)) if len(values) else float("nan")


def gap(final, base: dict, other: dict) -> tuple[float, float]:
    """Accuracy of ``base`` minus ``other`` (points lost by ``other``), with its 95 % CI half-width."""
    return stats.difference_ci(pick(final, **base), pick(final, **other))


def plus_minus(diff: float, half: float) -> str:
    """``"1.23 ± 0.45"``, or the value alone when there is no interval."""
    return f"{diff:.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")


def noise(diff: float, half: float) -> str:
    if not math.isfinite(half):
        return "too few seeds for a CI"
    return "within noise: the 95 % CI includes 0" if abs(diff) <= half else "the 95 % CI excludes 0"


def trainings(final) -> list[str]:
    """The training modes of the runs, in the order they ran."""
    return list(dict.fromkeys(final["training"])) if len(final) else []


def samplers(sweep) -> list[str]:
    """Experiment 1: coverage and accuracy of each sampler against random partitioning (iid)."""
    final = final_runs(sweep)
    if final.empty:
        return ["no finished runs."]
    size = int(final["train_subset"].iloc[0]) or 60000
    epochs = int(final["epochs"].iloc[0])
    lines = []
    if len(pick(final, setting="sampling")):
        cov, run = mean(pick(final, "coverage", setting="sampling")), mean(pick(final, "coverage_run", setting="sampling"))
        lines.append(f"Random sampling drew {size} samples per epoch with replacement and covered {cov:.1%} of the "
                     f"{size} training samples per epoch (i.i.d. draws: {expected_coverage(size, size):.1%}); "
                     f"over {epochs} epochs it saw {run:.1%} of them.")
    for kind in ("sampling", "seed_per_rank", "first_slice"):
        if not len(pick(final, setting=kind)):
            continue
        diff, half = gap(final, {"setting": kind}, {"setting": "iid"})
        lines.append(f"{kind}: {mean(pick(final, 'coverage', setting=kind)):.0%} coverage per epoch, "
                     f"{mean(pick(final, 'coverage_run', setting=kind)):.0%} over the run; accuracy "
                     f"{diff:+.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")
                     + f" points against random partitioning ({noise(diff, half)}).")
    spread = final.groupby("setting")["test_acc"].agg(lambda a: a.max() - a.min())
    lines.append(f"Between seeds, one sampler's accuracy varied by up to {spread.max():.2f} points "
                 f"({spread.idxmax()}, {final.groupby('setting').size().max()} seeds). The original lab compared "
                 f"{ORIGINAL_LAB[0]} % with {ORIGINAL_LAB[1]} %, a difference of "
                 f"{ORIGINAL_LAB[1] - ORIGINAL_LAB[0]:.2f} points, from one run each (with lr 0.001, ten times "
                 "lower than here, which is most of why both are low).")
    return lines


def losses(final, training: str) -> pd.DataFrame:
    """Per non-IID setting under one training mode: points lost against IID, CI, skew and tail."""
    rows = []
    for setting in dict.fromkeys(final.loc[final["training"] == training, "setting"]):
        if setting == "iid":
            continue
        diff, half = gap(final, {"setting": "iid", "training": training}, {"setting": setting, "training": training})
        where = {"setting": setting, "training": training}
        rows.append({"setting": setting, "loss": diff, "ci95": half, "acc": mean(pick(final, **where)),
                     "label_skew": mean(pick(final, "label_skew", **where)),
                     "tail_steps": mean(pick(final, "tail_steps", **where))})
    return pd.DataFrame(rows, columns=["setting", "loss", "ci95", "acc", "label_skew", "tail_steps"])


def skew(sweep) -> list[str]:
    """Experiment 2: what each non-IID partition costs under all-reduce and under local SGD."""
    final = final_runs(sweep)
    lines = []
    for training in trainings(final):
        lost = losses(final, training)
        if lost.empty:
            continue
        iid = mean(pick(final, setting="iid", training=training))
        equal, unequal = lost[lost["tail_steps"] == 0], lost[lost["tail_steps"] > 0]
        text = f"{training}: IID reaches {iid:.2f} %."
        if len(equal):
            worst = equal.loc[equal["loss"].idxmax()]
            text += (f" The worst equal-size non-IID partition loses {plus_minus(worst['loss'], worst['ci95'])} points "
                     f"({worst['setting']}, label skew {worst['label_skew']:.2f}).")
        if len(unequal):
            worst = unequal.loc[unequal["loss"].idxmax()]
            text += f" The worst unequal-size one loses {plus_minus(worst['loss'], worst['ci95'])} points ({worst['setting']}"
            text += ")." if training.startswith("local") else \
                f": its nodes run out of data up to {worst['tail_steps']:.0f} steps apart)."
        one = lost[lost["setting"] == "label_k k=1"]
        if len(one):
            text += f" label_k k=1 ends at {one['acc'].iloc[0]:.1f} %."
        better = lost[-lost["loss"] - lost["ci95"] > 0]
        if len(better):
            text += " Better than IID beyond noise: " + ", ".join(
                f"{r.setting} ({-r.loss:+.2f} ± {r.ci95:.2f})" for r in better.itertuples()) + "."
        lines.append(text)
    modes = trainings(final)
    mean_loss = {t: losses(final, t)["loss"].mean() for t in modes}
    if mean_loss:
        lines.append("Mean loss against IID over the non-IID partitions: "
                     + "; ".join(f"{t}: {v:.1f} points" for t, v in mean_loss.items()) + ".")
    local = [t for t in modes if t.startswith("local SGD H=") and t != "local SGD H=1 epoch"]
    if local and "local SGD H=1 epoch" in modes:
        often, once = losses(final, local[0]).set_index("setting"), losses(final, "local SGD H=1 epoch").set_index("setting")
        gain = (often["acc"] - once["acc"]).dropna()
        lines.append(f"Averaging more often ({local[0]} instead of once per epoch) gave higher accuracy for "
                     f"{int((gain > 0).sum())} of {len(gain)} non-IID partitions (mean change {gain.mean():+.1f} points).")
    r = {t: _correlation(final[final["training"] == t]) for t in modes}
    lines.append("Correlation of final accuracy with label skew over the runs: "
                 + "; ".join(f"{t}: r = {v:.2f}" for t, v in r.items()) + ".")
    return lines


def _correlation(rows: pd.DataFrame) -> float:
    x, y = rows["label_skew"].to_numpy(dtype=float), rows["test_acc"].to_numpy(dtype=float)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def norms(sweep) -> list[str]:
    """Experiment 3: points each model loses under label skew, and how much of BatchNorm's loss
    GroupNorm recovers."""
    final = final_runs(sweep)
    skewed = [s for s in dict.fromkeys(final["setting"]) if s != "iid"] if len(final) else []
    if not skewed:
        return ["no skewed runs."]
    lines, loss = [], {}
    for model in dict.fromkeys(final["model"]):
        diff, half = gap(final, {"model": model, "setting": "iid"}, {"model": model, "setting": skewed[0]})
        loss[model] = diff, half
        lines.append(f"{model}: {mean(pick(final, model=model, setting='iid')):.2f} % IID, "
                     f"{mean(pick(final, model=model, setting=skewed[0])):.2f} % under {skewed[0]}: "
                     f"skew costs {plus_minus(diff, half)} points, negative = a gain ({noise(diff, half)}).")
    if "lenet5_bn" in loss and "lenet5_gn" in loss:
        (bn, bn_half), (gn, gn_half) = loss["lenet5_bn"], loss["lenet5_gn"]
        if not bn - bn_half > 0:
            lines.append(f"BatchNorm's loss under {skewed[0]} ({plus_minus(bn, bn_half)} points) is not beyond the "
                         "noise at this budget, so how much of it GroupNorm recovers cannot be told; more seeds "
                         "or more epochs would.")
        else:
            lines.append(f"GroupNorm loses {plus_minus(gn, gn_half)} points where BatchNorm loses "
                         f"{plus_minus(bn, bn_half)}: by the point estimates, GroupNorm's loss is {gn / bn:.0%} of "
                         "BatchNorm's (see the expectations table for what the intervals decide).")
    return lines


def niid_bench(sweep) -> pd.DataFrame:
    """Experiment 4 next to NIID-Bench's MNIST / FedAvg / 10 parties figures."""
    final = final_runs(sweep)
    rows = []
    for setting in dict.fromkeys(final["setting"]) if len(final) else []:
        mean, half = stats.mean_ci(pick(final, setting=setting))
        low, high = NIID_BENCH.get(setting, (float("nan"), float("nan")))
        rows.append({"setting": setting, "ours (%)": stats.format_ci(mean, half),
                     "NIID-Bench (%)": f"{low:g}" if low == high else f"{low:g}–{high:g}",
                     "points below NIID-Bench": (low + high) / 2 - mean if math.isfinite(low) else float("nan")})
    return pd.DataFrame(rows)


def tail(sweep) -> list[str]:
    """Experiment 2b: what the end of an epoch does to equal-size and unequal-size partitions."""
    final = final_runs(sweep)
    if final.empty:
        return ["no finished runs."]
    endings = list(dict.fromkeys(final["ending"]))
    lines = []
    for setting in dict.fromkeys(final["setting"]):
        parts = []
        for end in endings:
            where = {"setting": setting, "ending": end}
            acc = stats.mean_ci(pick(final, **where))
            parts.append(f"{stats.format_ci(*acc)} % ({end}: {mean(pick(final, 'steps_per_epoch', **where)):.0f} steps, "
                         f"{mean(pick(final, 'tail_steps', **where)):.0f} of them with some nodes out of data, "
                         f"{mean(pick(final, 'coverage', **where)):.0%} of the data used)")
        lines.append(f"{setting}: " + "; ".join(parts) + ".")
    for end in endings:
        if len(pick(final, setting="sorted", ending=end)) and len(pick(final, setting="label_k k=1", ending=end)):
            diff, half = gap(final, {"setting": "sorted", "ending": end}, {"setting": "label_k k=1", "ending": end})
            when = f"after {end}" if end.endswith("steps") else f"with the {end}"
            lines.append(f"Epochs ending {when}: label_k k=1 loses {plus_minus(diff, half)} points against sorted "
                         f"({noise(diff, half)}).")
    return lines
