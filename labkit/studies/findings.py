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
NIID_BENCH = {"iid": (99.1, 99.1), "dirichlet α=0.5": (98.9, 98.9), "label_k k=2": (97.0, 97.0),
              "label_k k=1": (20.0, 30.0)}
LITTLE = 2.0  # points: "label skew costs little"
COLLAPSED = 50.0  # % accuracy: "collapses"


def _final(sweep) -> pd.DataFrame:
    final = sweep.final
    return final[final["status"] == "ok"] if len(final) else final


def _pick(final, column: str = "test_acc", **match) -> np.ndarray:
    rows = final
    for name, value in match.items():
        if name not in rows:
            return np.array([])
        rows = rows[rows[name] == value]
    return rows[column].to_numpy(dtype=float)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _gap(final, base: dict, other: dict) -> tuple[float, float]:
    """Accuracy of ``base`` minus ``other`` (points lost by ``other``), with its 95 % CI half-width."""
    return stats.difference_ci(_pick(final, **base), _pick(final, **other))


def _pm(diff: float, half: float) -> str:
    return f"{diff:.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")


def _noise(diff: float, half: float) -> str:
    if not math.isfinite(half):
        return "too few seeds for a CI"
    return "within noise: the 95 % CI includes 0" if abs(diff) <= half else "the 95 % CI excludes 0"


def _trainings(final) -> list[str]:
    return list(dict.fromkeys(final["training"])) if len(final) else []


def samplers(sweep) -> list[str]:
    """Experiment 1: coverage and accuracy of each sampler against random partitioning (iid)."""
    final = _final(sweep)
    if final.empty:
        return ["no finished runs."]
    size = int(final["train_subset"].iloc[0]) or 60000
    epochs = int(final["epochs"].iloc[0])
    lines = []
    if len(_pick(final, setting="sampling")):
        cov, run = _mean(_pick(final, "coverage", setting="sampling")), _mean(_pick(final, "coverage_run", setting="sampling"))
        lines.append(f"Random sampling drew {size} samples per epoch with replacement and covered {cov:.1%} of the "
                     f"{size} training samples per epoch (i.i.d. draws: {expected_coverage(size, size):.1%}); "
                     f"over {epochs} epochs it saw {run:.1%} of them.")
    for kind in ("sampling", "seed_per_rank", "first_slice"):
        if not len(_pick(final, setting=kind)):
            continue
        diff, half = _gap(final, {"setting": kind}, {"setting": "iid"})
        lines.append(f"{kind}: {_mean(_pick(final, 'coverage', setting=kind)):.0%} coverage per epoch, "
                     f"{_mean(_pick(final, 'coverage_run', setting=kind)):.0%} over the run; accuracy "
                     f"{diff:+.2f}" + (f" ± {half:.2f}" if math.isfinite(half) else "")
                     + f" points against random partitioning ({_noise(diff, half)}).")
    spread = final.groupby("setting")["test_acc"].agg(lambda a: a.max() - a.min())
    lines.append(f"Between seeds, one sampler's accuracy varied by up to {spread.max():.2f} points "
                 f"({spread.idxmax()}, {final.groupby('setting').size().max()} seeds). The original lab compared "
                 f"{ORIGINAL_LAB[0]} % with {ORIGINAL_LAB[1]} %, a difference of "
                 f"{ORIGINAL_LAB[1] - ORIGINAL_LAB[0]:.2f} points, from one run each.")
    return lines


def _losses(final, training: str) -> pd.DataFrame:
    """Per non-IID setting under one training mode: points lost against IID, CI, skew and tail."""
    rows = []
    for setting in dict.fromkeys(final.loc[final["training"] == training, "setting"]):
        if setting == "iid":
            continue
        diff, half = _gap(final, {"setting": "iid", "training": training}, {"setting": setting, "training": training})
        where = {"setting": setting, "training": training}
        rows.append({"setting": setting, "loss": diff, "ci95": half, "acc": _mean(_pick(final, **where)),
                     "label_skew": _mean(_pick(final, "label_skew", **where)),
                     "tail_steps": _mean(_pick(final, "tail_steps", **where))})
    return pd.DataFrame(rows, columns=["setting", "loss", "ci95", "acc", "label_skew", "tail_steps"])


def skew(sweep) -> list[str]:
    """Experiment 2: what each non-IID partition costs under all-reduce and under local SGD."""
    final = _final(sweep)
    lines = []
    for training in _trainings(final):
        losses = _losses(final, training)
        if losses.empty:
            continue
        iid = _mean(_pick(final, setting="iid", training=training))
        equal, unequal = losses[losses["tail_steps"] == 0], losses[losses["tail_steps"] > 0]
        text = f"{training}: IID reaches {iid:.2f} %."
        if len(equal):
            worst = equal.loc[equal["loss"].idxmax()]
            text += (f" Equal-size non-IID partitions lose at most {_pm(worst['loss'], worst['ci95'])} points "
                     f"({worst['setting']}, label skew {worst['label_skew']:.2f}).")
        if len(unequal):
            worst = unequal.loc[unequal["loss"].idxmax()]
            text += f" Unequal-size partitions lose up to {_pm(worst['loss'], worst['ci95'])} points ({worst['setting']}"
            text += ")." if training.startswith("local") else \
                f": its nodes run out of data up to {worst['tail_steps']:.0f} steps apart)."
        one = losses[losses["setting"] == "label_k k=1"]
        if len(one):
            text += f" label_k k=1 ends at {one['acc'].iloc[0]:.1f} %."
        better = losses[-losses["loss"] - losses["ci95"] > 0]
        if len(better):
            text += " Better than IID beyond noise: " + ", ".join(
                f"{r.setting} ({-r.loss:+.2f} ± {r.ci95:.2f})" for r in better.itertuples()) + "."
        lines.append(text)
    modes = _trainings(final)
    mean_loss = {t: _losses(final, t)["loss"].mean() for t in modes}
    if mean_loss:
        lines.append("Mean loss against IID over the non-IID partitions: "
                     + "; ".join(f"{t}: {v:.1f} points" for t, v in mean_loss.items()) + ".")
    local = [t for t in modes if t.startswith("local SGD H=") and t != "local SGD H=1 epoch"]
    if local and "local SGD H=1 epoch" in modes:
        often, once = _losses(final, local[0]).set_index("setting"), _losses(final, "local SGD H=1 epoch").set_index("setting")
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
    final = _final(sweep)
    skewed = [s for s in dict.fromkeys(final["setting"]) if s != "iid"] if len(final) else []
    if not skewed:
        return ["no skewed runs."]
    lines, loss = [], {}
    for model in dict.fromkeys(final["model"]):
        diff, half = _gap(final, {"model": model, "setting": "iid"}, {"model": model, "setting": skewed[0]})
        loss[model] = diff
        lines.append(f"{model}: {_mean(_pick(final, model=model, setting='iid')):.2f} % IID, "
                     f"{_mean(_pick(final, model=model, setting=skewed[0])):.2f} % under {skewed[0]}: "
                     f"skew costs {_pm(diff, half)} points, negative = a gain ({_noise(diff, half)}).")
    bn, gn = loss.get("lenet5_bn"), loss.get("lenet5_gn")
    if bn is not None and gn is not None:
        if bn > 0 and gn <= 0:
            lines.append(f"GroupNorm loses nothing under {skewed[0]}: it recovers all of BatchNorm's loss.")
        elif bn > 0:
            lines.append(f"GroupNorm recovers {1 - gn / bn:.0%} of the points BatchNorm loses under {skewed[0]}.")
        else:
            lines.append(f"BatchNorm lost nothing under {skewed[0]} here, so there is nothing for GroupNorm to recover.")
    return lines


def niid_bench(sweep) -> pd.DataFrame:
    """Experiment 4 next to NIID-Bench's MNIST / FedAvg / 10 parties figures."""
    final = _final(sweep)
    rows = []
    for setting in dict.fromkeys(final["setting"]) if len(final) else []:
        mean, half = stats.mean_ci(_pick(final, setting=setting))
        low, high = NIID_BENCH.get(setting, (float("nan"), float("nan")))
        rows.append({"setting": setting, "ours (%)": stats.format_ci(mean, half),
                     "NIID-Bench (%)": f"{low:g}" if low == high else f"{low:g}–{high:g}",
                     "points below NIID-Bench": (low + high) / 2 - mean if math.isfinite(low) else float("nan")})
    return pd.DataFrame(rows)


def expectations(sampler_sweep, skew_sweep, norm_sweep) -> pd.DataFrame:
    """The four effects the lab expects, each with its criterion, the measured value and a verdict."""
    rows = []
    s = _final(sampler_sweep)
    cov = _mean(_pick(s, "coverage", setting="sampling"))
    size = (int(s["train_subset"].iloc[0]) or 60000) if len(s) else 60000
    theory = expected_coverage(size, size)
    rows.append(("random sampling covers about 63 % of the data per epoch",
                 "coverage within 1 point of 1 - (1 - 1/n)^n", f"{cov:.1%} (theory {theory:.1%})",
                 abs(cov - theory) <= 0.01))
    k, n = _final(skew_sweep), _final(norm_sweep)
    sync = next((t for t in _trainings(k) if not t.startswith("local")), None)
    equal = _losses(k, sync) if sync else pd.DataFrame(columns=["setting", "loss", "ci95", "tail_steps"])
    evidence = [(f"{r.setting} ({sync})", r.loss, r.ci95) for r in equal[equal["tail_steps"] == 0].itertuples()]
    skewed = next((x for x in dict.fromkeys(n["setting"]) if x != "iid"), None) if len(n) else None
    if len(_pick(n, model="lenet5", setting=skewed)):
        evidence.append((f"{skewed} (lenet5, DDP)",
                         *_gap(n, {"model": "lenet5", "setting": "iid"}, {"model": "lenet5", "setting": skewed})))
    worst = max((loss for _, loss, _ in evidence), default=float("nan"))
    rows.append(("all-reduce, equal node sizes, no BatchNorm: label skew costs little",
                 f"every equal-size non-IID partition loses at most {LITTLE:g} points against IID",
                 "; ".join(f"{name}: {_pm(loss, half)} points" for name, loss, half in evidence) or "none",
                 bool(worst <= LITTLE)))
    local = [t for t in _trainings(k) if t.startswith("local")]
    accs = {t: _mean(_pick(k, setting="label_k k=1", training=t)) for t in local}
    rows.append(("local SGD under label_k k=1 collapses", f"final accuracy at most {COLLAPSED:g} % for every H",
                 "; ".join(f"{t}: {a:.1f} %" for t, a in accs.items()),
                 bool(accs) and all(a <= COLLAPSED for a in accs.values())))
    bn, bn_half = _gap(n, {"model": "lenet5_bn", "setting": "iid"}, {"model": "lenet5_bn", "setting": skewed})
    gn, _ = _gap(n, {"model": "lenet5_gn", "setting": "iid"}, {"model": "lenet5_gn", "setting": skewed})
    rows.append(("BatchNorm suffers under label skew; GroupNorm recovers most of it",
                 "BatchNorm's loss is above 0 beyond its 95 % CI, and GroupNorm loses at most half as much",
                 f"BatchNorm loses {_pm(bn, bn_half)}, GroupNorm {gn:.2f} points",
                 bool(bn - bn_half > 0 and gn <= bn / 2)))
    return pd.DataFrame(rows, columns=["expected effect", "criterion", "measured", "appeared"])
