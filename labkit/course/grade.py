"""`labkit grade`: check executed student notebooks against the reference run in ``results/notebooks/``.

One row per submitted file, one column per check; a check holds ``ok`` or ``FAIL: <short reason>``:

* ``readable``: the file is notebook JSON and matches one of the reference notebooks (by cell ids,
  else by code cell sources);
* ``ran``: every code cell ran, top to bottom (execution counts increase), with no error output;
* ``full_run``: it ran at full size, not as a ``quick=True`` smoke run whose numbers mean nothing;
* ``figures``: every cell that drew a figure in the reference run has a figure in the submission;
* ``answers``: every markdown cell tagged ``answer`` holds more than its placeholder (``*Your answer:*``);
* ``numbers``: every graded key number (``labkit.notebook.keynumbers``) is there and within the tolerance the
  reference run states for it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd

from ..paths import results_dir
from ..errors import LabError
from ..notebook import keynumbers
from .notebook_files import lab_cells
from .report import parameter_values

CHECKS = ("readable", "ran", "full_run", "figures", "answers", "numbers")
OK = "ok"
SKIPPED = "-"
PLACEHOLDER = re.compile(r"^\s*[*_]{0,2}\s*your\s+answers?(\s+(here|to\s+the\s+exercises))?\s*[:.]?\s*[*_]{0,2}",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    """An executed notebook of the reference run, with what identifies its cells."""

    name: str
    nb: nbformat.NotebookNode

    @property
    def ids(self) -> set[str]:
        return {c.get("id") for c in lab_cells(self.nb) if c.get("id")}

    @property
    def sources(self) -> set[str]:
        return {c.source.strip() for c in lab_cells(self.nb) if c.cell_type == "code" and c.source.strip()}

    @property
    def quick(self) -> bool:
        return ran_quick(self.nb)


def load_references(folder=None) -> list[Reference]:
    """The executed notebooks of the reference run (``results/notebooks`` unless told otherwise)."""
    folder = Path(folder) if folder else results_dir()
    if (folder / "notebooks").is_dir():
        folder = folder / "notebooks"
    paths = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if not paths:
        raise LabError(f"no reference notebooks in {folder}: run `make results` (labkit report) first, "
                       "or point --reference at the results folder of a reference run.")
    return [Reference(p.stem, nbformat.read(p, as_version=4)) for p in paths]


def submissions(paths) -> list[Path]:
    """Files to grade: each file given, and every visible file under each folder given."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            found.append(path)
        else:
            raise LabError(f"{path} does not exist; give executed notebooks or folders of them.")
    return list(dict.fromkeys(found))


def read(path: Path) -> nbformat.NotebookNode:
    """The notebook in ``path``; raises ValueError with a short reason if it is not a readable notebook."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not a notebook (binary {path.suffix or 'file'})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        kind = "corrupt JSON" if path.suffix == ".ipynb" else f"not a notebook ({path.suffix or 'no'} file, not JSON)"
        raise ValueError(f"{kind}: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or "nbformat" not in data:
        raise ValueError("not a notebook (JSON without nbformat and cells)")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any damage makes it unreadable
        raise ValueError(f"damaged notebook: {str(exc).splitlines()[0][:80]}") from None


def match(nb, references: list[Reference]) -> Reference | None:
    """The reference notebook sharing the most cell ids and code cells with ``nb``."""
    ids = {c.get("id") for c in lab_cells(nb) if c.get("id")}
    sources = {c.source.strip() for c in lab_cells(nb) if c.cell_type == "code" and c.source.strip()}
    scored = [(len(ids & r.ids) + len(sources & r.sources), r) for r in references]
    best = max(scored, key=lambda s: s[0], default=(0, None))
    return best[1] if best[0] > 0 else None


def _cells(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, numbers[:limit]))
    return f"cell{'s' * (len(numbers) > 1)} {shown}{f' (+{len(numbers) - limit} more)' if len(numbers) > limit else ''}"


def check_ran(nb) -> str:
    """'' if every code cell ran in order without an error, else why not."""
    code = [(k, c) for k, c in enumerate(lab_cells(nb), 1) if c.cell_type == "code" and c.source.strip()]
    errors = [(k, o.get("ename", "an error")) for k, c in code for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    never = [k for k, c in code if c.get("execution_count") is None]
    reasons = [f"{_cells([k for k, _ in errors])} raised {errors[0][1]}"] if errors else []
    if never:
        reasons.append(f"{_cells(never)} never ran")
    ran = [(k, c.execution_count) for k, c in code if c.get("execution_count") is not None]
    for (k0, n0), (k1, n1) in zip(ran, ran[1:]):
        if n1 <= n0:
            reasons.append(f"out of order: cell {k1} (In [{n1}]) ran before cell {k0} (In [{n0}])")
            break
    return "; ".join(reasons)


def ran_quick(nb) -> bool:
    """Whether the notebook was executed with ``quick = True`` (set in its parameters or injected)."""
    return parameter_values(nb).get("quick") is True


def check_full_run(nb) -> str:
    """'' unless the notebook was executed as a quick smoke run."""
    return ("executed with quick = True: a smoke run whose numbers mean nothing; set quick = False "
            "and run all cells" if ran_quick(nb) else "")


def _counterpart(cell, nb):
    """The submission's cell for a reference cell: same id, else same source; (position, cell) or None."""
    cells = list(enumerate(lab_cells(nb), 1))
    for k, c in cells:
        if cell.get("id") and c.get("id") == cell.get("id"):
            return k, c
    for k, c in cells:
        if c.cell_type == cell.cell_type and c.source.strip() == cell.source.strip():
            return k, c
    return None


def _has_image(cell) -> bool:
    return any(key.startswith("image/") for out in cell.get("outputs", []) for key in out.get("data", {}))


def check_figures(nb, ref: Reference) -> str:
    """'' if every cell that drew a figure in the reference has one in the submission."""
    required = [c for c in lab_cells(ref.nb) if c.cell_type == "code" and _has_image(c)]
    found = [_counterpart(c, nb) for c in required]
    blank = [hit[0] for hit in found if hit and not _has_image(hit[1])]
    gone = sum(hit is None for hit in found)
    reasons = [f"no figure in {_cells(blank)}"] if blank else []
    if gone:
        reasons.append(f"{gone} figure cell{'s' * (gone > 1)} deleted or edited")
    return f"{'; '.join(reasons)} ({len(blank) + gone} of {len(required)} figures missing)" if reasons else ""


def filled(text: str, template: str = "") -> bool:
    """Whether an answer cell says more than its placeholder."""
    text = text.strip()
    template = template.strip()
    if template and text.startswith(template):
        text = text[len(template):]
    return bool(re.search(r"\w", PLACEHOLDER.sub("", text, count=1)))


def check_answers(nb, ref: Reference | None) -> str:
    """'' if every answer cell of the notebook (and of its reference) has been written."""
    ref_answers = [c for c in lab_cells(ref.nb) if "answer" in c.metadata.get("tags", [])] if ref else []
    templates = {c.get("id"): c.source for c in ref_answers if c.get("id")}
    answers = {k: (c, templates.get(c.get("id"), "")) for k, c in enumerate(lab_cells(nb), 1)
               if (c.cell_type == "markdown" and "answer" in c.metadata.get("tags", []))
               or c.get("id") in templates}  # an answer cell whose tag was lost still counts
    empty = sorted(k for k, (c, template) in answers.items() if not filled(c.source, template))
    missing = max(0, len(ref_answers) - len(answers))
    total = max(len(answers), len(ref_answers))
    reasons = [f"{len(empty)} of {total} answers not filled in ({_cells(empty)})"] if empty else []
    if missing:
        reasons.append(f"{missing} answer cell{'s' * (missing > 1)} missing")
    return "; ".join(reasons)


def check_numbers(nb, ref: Reference) -> str:
    """'' if every graded key number of the reference is present and within its tolerance."""
    expected = {name: key for name, key in keynumbers.read(ref.nb).items() if key.graded}
    given = keynumbers.read(nb)
    missing = [name for name in expected if name not in given]
    off = [f"{name} = {given[name].value:.4g} (reference {key.value:.4g} ± {key.allowed():.2g})"
           for name, key in expected.items() if name in given and not key.accepts(given[name].value)]
    reasons = [f"implausible: {'; '.join(off[:3])}{f' (+{len(off) - 3} more)' if len(off) > 3 else ''}"] if off else []
    if missing:
        reasons.append(f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return "; ".join(reasons)


def _verdict(reason: str) -> str:
    return f"FAIL: {reason}" if reason else OK


def grade_file(path: Path, references: list[Reference]) -> dict:
    """One row: the file, the reference it matched, one column per check, and pass/fail."""
    row = {"file": str(path), "notebook": SKIPPED, **{check: SKIPPED for check in CHECKS}}
    try:
        nb = read(path)
    except ValueError as exc:
        return {**row, "readable": _verdict(str(exc)), "result": "fail"}
    ref = match(nb, references)
    row["notebook"] = ref.name if ref else SKIPPED
    row["readable"] = _verdict("" if ref else "matches no notebook of the reference run")
    row["ran"] = _verdict(check_ran(nb))
    row["full_run"] = _verdict(check_full_run(nb))
    row["answers"] = _verdict(check_answers(nb, ref))
    if ref:
        row["figures"] = _verdict(check_figures(nb, ref))
        row["numbers"] = _verdict(check_numbers(nb, ref))
    row["result"] = "pass" if all(row[c] == OK for c in CHECKS) else "fail"
    return row


def grade(paths, reference=None) -> pd.DataFrame:
    """Grade every submission in ``paths`` (files or folders) against the reference run."""
    references = load_references(reference)
    files = submissions(paths)
    if not files:
        raise LabError(f"nothing to grade in {', '.join(map(str, paths))}.")
    return pd.DataFrame([grade_file(p, references) for p in files], columns=["file", "notebook", *CHECKS, "result"])


def reference_notes(reference=None) -> list[str]:
    """Warnings about the reference run itself (e.g. it was a --quick smoke run)."""
    return [f"note: reference {r.name} was run with quick=True; its key numbers are not a fair reference."
            for r in load_references(reference) if r.quick]


def format_table(frame: pd.DataFrame, width: int = 60) -> str:
    """Left-aligned plain-text table; cells longer than ``width`` are cut (the CSV keeps them whole)."""
    cut = frame.astype(str).map(lambda s: s if len(s) <= width else s[:width - 1] + "…")
    widths = [max(len(str(col)), *(len(v) for v in cut[col])) for col in cut.columns]
    lines = ["  ".join(str(col).ljust(w) for col, w in zip(cut.columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cut.itertuples(index=False)]
    return "\n".join(line.rstrip() for line in lines)
