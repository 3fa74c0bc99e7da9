"""Write ``results/README.md`` for a report run: environment, date, how each notebook went, key numbers,
speed-ups, final accuracies per run from the result tables, and the figures.

Every section comes from files the run produced; a section whose table is absent is left out.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd

from .. import environment

# Columns of a result table that are measurements or bookkeeping, not the configuration of a run.
_IDENTITY = ("kind", "model", "sync", "nodes")  # always shown for a run, even when every run shares them
_NOT_CONFIG = re.compile(r"(loss|acc|seconds|_s$|per_s|wall|bytes|time|epoch|speedup|efficiency|run_id)")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table; floats with 4 significant digits."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def title(path: Path) -> str:
    """The notebook's first heading, e.g. ``01 · Cluster basics``."""
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return path.stem
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else []:
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem


def _environment(env: dict) -> list[str]:
    rows = pd.DataFrame([{"": k, "value": env.get(k, "?")} for k in ("cpu", "cores", "torch", "python", "platform",
                                                                      "git_commit")])
    return ["## Environment", "", markdown_table(rows), ""]


def _notebooks(out: Path, record: dict) -> list[str]:
    rows = []
    for name, run in record["notebooks"].items():
        stem = Path(name).stem
        status = (f"ran OK in {run['seconds']:.0f} s" if run["ok"] else
                  f"**failed** at cell {run['failed_cell'] or '?'} of {run['cells']}: {run['error']}")
        rows.append({"notebook": f"[{stem}](notebooks/{name}) ([html](html/{stem}.html))",
                     "topic": title(out / "notebooks" / name), "result": status,
                     "mode": "quick" if run["quick"] else "full", "figures": run["figures"]})
    return ["## Notebooks", "", markdown_table(pd.DataFrame(rows)), ""]


def _tolerance(absolute, relative) -> str:
    parts = ([f"± {float(absolute):g}"] if absolute != "" else []) + ([f"± {float(relative):.0%}"] if relative != "" else [])
    return " or ".join(parts) or "not graded"


def _key_numbers(out: Path) -> list[str]:
    path = out / "tables" / "key_numbers.csv"
    if not path.exists():
        return []
    keys = pd.read_csv(path, keep_default_na=False)
    lines = ["## Key numbers", "",
             "Shown by the notebooks with `labkit.notebook.key_number`; `labkit grade` accepts a student's value "
             "within the tolerance of this run's (the larger one where two are given).", ""]
    for stem, group in keys.groupby("notebook", sort=True):
        table = pd.DataFrame({"key": group["name"], "value": group["value"].astype(float), "unit": group["unit"],
                              "meaning": group["about"],
                              "grading tolerance": list(map(_tolerance, group["tolerance"], group["relative"]))})
        lines += [f"### {title(out / 'notebooks' / f'{stem}.ipynb')}", "", markdown_table(table), ""]
    return lines


def _speedups(out: Path) -> list[str]:
    path = out / "tables" / "scaling.csv"
    if not path.exists():
        return []
    table = pd.read_csv(path).drop_duplicates(["model", "setup"], keep="last")
    cols = [c for c in ("model", "setup", "kind", "samples_per_s", "speedup", "speedup_ci95", "vs_threads",
                        "vs_threads_ci95", "efficiency") if c in table]
    return ["## Speed-up over one process on one thread (`tables/scaling.csv`)", "",
            "`speedup_ci95` and `vs_threads_ci95`: half-widths of the 95 % intervals over the interleaved rounds; "
            "`vs_threads`: against one process using the same cores.", "", markdown_table(table[cols]), ""]


def final_accuracies(table: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every run: what the run was (model, sync, nodes, and every other setting that
    differs between runs) and its final test accuracy."""
    last = table.groupby("run_id", sort=False).tail(1)
    env = set(environment.describe())
    varying = [c for c in last.columns if c not in env and not _NOT_CONFIG.search(c)
               and last[c].astype(str).nunique() > 1]
    shown = [c for c in _IDENTITY if c in last and c not in varying] + varying
    return last[shown + [c for c in ("epoch", "test_acc") if c in last]].reset_index(drop=True)


def _accuracies(out: Path) -> list[str]:
    lines = []
    for path in sorted((out / "tables").glob("*.csv")):
        table = pd.read_csv(path)
        if {"run_id", "epoch", "test_acc"} <= set(table.columns):  # one row per run x epoch
            lines += [f"## Final test accuracy per run (`tables/{path.name}`)", "",
                      markdown_table(final_accuracies(table).head(40)), ""]
    return lines


def _tables(out: Path) -> list[str]:
    paths = sorted((out / "tables").glob("*.csv"))
    if not paths:
        return []
    rows = [f"* [`tables/{p.name}`](tables/{p.name}): {n} row{'s' * (n != 1)}"
            for p, n in ((p, len(pd.read_csv(p))) for p in paths)]
    return ["## Tables", "", *rows, ""]


def _figures(out: Path) -> list[str]:
    lines = []
    for folder in sorted(p for p in (out / "figures").glob("*") if p.is_dir()):
        pngs = sorted(folder.glob("*.png"))
        if pngs:
            images = [f"![{folder.name} {p.stem}](figures/{folder.name}/{p.name})" for p in pngs]
            lines += [f"<details><summary>{title(out / 'notebooks' / f'{folder.name}.ipynb')}: {len(pngs)} figures"
                      "</summary>", "", *images, "", "</details>", ""]
    return ["## Figures", "", *lines] if lines else []


def write(out: Path, record: dict) -> Path:
    """``out/README.md`` from the run record and the files in ``out``."""
    env = record["environment"]
    failed = [n for n, r in record["notebooks"].items() if not r["ok"]]
    lines = ["# Results of `labkit report`", "",
             f"Generated {env.get('timestamp', '?')} (UTC) from commit `{env.get('git_commit', '?')}` by "
             "`make results` (`labkit report`). Do not edit by hand: regenerate it.", ""]
    if record.get("quick"):
        lines += ["**Quick mode** (`--quick`): tiny runs to check that everything works; the numbers mean nothing.", ""]
    if failed:
        lines += [f"**{len(failed)} notebook(s) failed:** {', '.join(failed)}.", ""]
    for section in (_environment(env), _notebooks(out, record), _key_numbers(out), _speedups(out),
                    _accuracies(out), _tables(out), _figures(out)):
        lines += section
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
