"""Notebook 04's table of expected effects, each judged on its 95 % interval, never on a point estimate.

An effect "appeared" when the whole interval satisfies its criterion, "did not appear" when the whole
interval contradicts it, and is "not decided at this budget" when the interval straddles the line:
more seeds (or longer runs) would narrow it. A point estimate of -0.89 with an interval of ± 10.23
decides nothing, and the table says so.
"""
from __future__ import annotations

import math

import pandas as pd

from . import stats
from .findings import final_runs, gap, losses, pick, plus_minus, trainings
from .impact import expected_coverage

APPEARED, ABSENT, UNDECIDED = "appeared", "did not appear", "not decided at this budget"
LITTLE = 2.0       # points: "label skew costs little"
COLLAPSED = 50.0   # % accuracy: "collapses"
COVERAGE = 0.01    # "about 63 %": within one point


def judge(low: float, high: float, limit: float, below: bool = True) -> str:
    """Whether "value <= limit" (``below``) or "value > limit" holds on the whole interval [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNDECIDED
    holds, fails = (high <= limit, low > limit) if below else (low > limit, high <= limit)
    return APPEARED if holds else ABSENT if fails else UNDECIDED


def all_of(outcomes) -> str:
    """Several criteria that must all hold: one failure decides, all must hold to appear."""
    outcomes = list(outcomes)
    if not outcomes:
        return UNDECIDED
    return ABSENT if ABSENT in outcomes else APPEARED if all(o == APPEARED for o in outcomes) else UNDECIDED


def _interval(value: float, half: float) -> tuple[float, float]:
    return value - half, value + half


def table(sampler_sweep, skew_sweep, norm_sweep, tail_sweep=None) -> pd.DataFrame:
    """The effects the lab expects: criterion, what was measured (mean ± 95 % CI) and the outcome."""
    rows = [_coverage(final_runs(sampler_sweep)), _little(final_runs(skew_sweep), final_runs(norm_sweep)),
            _collapse(final_runs(skew_sweep)), *_normalisation(final_runs(norm_sweep))]
    if tail_sweep is not None:
        rows.append(_tail(final_runs(tail_sweep)))
    return pd.DataFrame(rows, columns=["expected effect", "criterion", "measured", "outcome"])


def _coverage(s) -> tuple:
    size = (int(s["train_subset"].iloc[0]) or 60000) if len(s) else 60000
    theory = expected_coverage(size, size)
    cov, half = stats.mean_ci(pick(s, "coverage", setting="sampling"))
    low, high = _interval(cov, half)
    outcome = all_of([judge(low, high, theory + COVERAGE), judge(-high, -low, -(theory - COVERAGE))])
    return ("random sampling covers about 63 % of the data per epoch",
            f"the interval lies within 1 point of 1 - (1 - 1/n)^n = {theory:.1%}",
            f"{stats.format_ci(100 * cov, 100 * half)} %", outcome)


def _little(k, n) -> tuple:
    sync = next((t for t in trainings(k) if not t.startswith("local")), None)
    lost = losses(k, sync) if sync else pd.DataFrame(columns=["setting", "loss", "ci95", "tail_steps"])
    evidence = [(f"{r.setting} ({sync})", r.loss, r.ci95) for r in lost[lost["tail_steps"] == 0].itertuples()]
    skewed = next((x for x in dict.fromkeys(n["setting"]) if x != "iid"), None) if len(n) else None
    if len(pick(n, model="lenet5", setting=skewed)):
        evidence.append((f"{skewed} (lenet5, DDP)",
                         *gap(n, {"model": "lenet5", "setting": "iid"}, {"model": "lenet5", "setting": skewed})))
    return ("all-reduce, equal node sizes, no BatchNorm: label skew costs little",
            f"every equal-size non-IID partition loses at most {LITTLE:g} points against IID, on its whole interval",
            "; ".join(f"{name}: {plus_minus(loss, half)} points" for name, loss, half in evidence) or "none",
            all_of(judge(*_interval(loss, half), LITTLE) for _, loss, half in evidence))


def _collapse(k) -> tuple:
    local = [t for t in trainings(k) if t.startswith("local")]
    accs = {t: stats.mean_ci(pick(k, setting="label_k k=1", training=t)) for t in local}
    return ("local SGD under label_k k=1 collapses", f"final accuracy at most {COLLAPSED:g} % for every H",
            "; ".join(f"{t}: {stats.format_ci(*acc)} %" for t, acc in accs.items()) or "none",
            all_of(judge(*_interval(*acc), COLLAPSED) for acc in accs.values()))


def _normalisation(n) -> list[tuple]:
    skewed = next((x for x in dict.fromkeys(n["setting"]) if x != "iid"), None) if len(n) else None
    bn, bn_half = gap(n, {"model": "lenet5_bn", "setting": "iid"}, {"model": "lenet5_bn", "setting": skewed})
    gn, gn_half = gap(n, {"model": "lenet5_gn", "setting": "iid"}, {"model": "lenet5_gn", "setting": skewed})
    # GroupNorm loses at most half of BatchNorm's loss: gn - bn/2 <= 0 (independent runs: halves add in quadrature)
    excess, excess_half = gn - bn / 2, math.sqrt(gn_half ** 2 + (bn_half / 2) ** 2)
    suffers = judge(*_interval(bn, bn_half), 0.0, below=False)
    # nothing to recover until BatchNorm's loss is established
    recovers = judge(*_interval(excess, excess_half), 0.0) if suffers == APPEARED else UNDECIDED
    return [("BatchNorm suffers under label skew", "BatchNorm's loss against IID is above 0 on its whole interval",
             f"BatchNorm loses {plus_minus(bn, bn_half)} points", suffers),
            ("GroupNorm recovers at least half of BatchNorm's loss",
             "BatchNorm's loss is established, and GroupNorm's loss minus half of it is at most 0 on its interval",
             f"GroupNorm loses {plus_minus(gn, gn_half)} points; minus half of BatchNorm's: "
             f"{plus_minus(excess, excess_half)}", recovers)]


def _tail(t) -> tuple:
    steps = next((e for e in dict.fromkeys(t["ending"]) if e.endswith("steps")), None) if len(t) else None
    where = {"ending": steps} if steps else {}
    loss, half = gap(t, {"setting": "sorted", **where}, {"setting": "label_k k=1", **where})
    controlled = len(pick(t, "tail_steps", setting="label_k k=1", **where)) and \
        not (pick(t, "tail_steps", setting="label_k k=1", **where) > 0).any()
    outcome = judge(*_interval(loss, half), LITTLE) if controlled else UNDECIDED   # a tail left: not controlled
    return ("at equal steps, label_k k=1 is no worse than sorted (the tail, not the skew, sank it)",
            f"label_k k=1 loses at most {LITTLE:g} points against sorted at {steps or 'equal steps'} with no "
            "tail step left, on the interval", f"{plus_minus(loss, half)} points", outcome)
