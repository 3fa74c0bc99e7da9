"""The feedback file a student gets from ``labkit autograde``: points per notebook, and for everything
that lost points, why (the check's diagnosis, the timeout, the crash, the results check that failed)."""
from __future__ import annotations

from itertools import groupby


def feedback_text(grade) -> str:
    """Markdown for one ``autograde.StudentGrade``."""
    percent = 100 * grade.total / grade.max if grade.max else 0.0
    lines = [f"# Feedback for {grade.student}", "",
             f"**{grade.total:g} of {grade.max:g} points ({percent:.0f} %).**", ""]
    if grade.flags:
        lines += ["Problems with the submission: " + "; ".join(grade.flags) + ".", ""]
    for notebook, items in groupby(grade.items, key=lambda i: i.notebook):
        items = list(items)
        got, most = sum(i.points for i in items), sum(i.max for i in items)
        lines += [f"## {notebook}: {got:g} / {most:g}", ""]
        lost = [i for i in items if i.points < i.max]
        lines += [f"- `{i.item}` ({i.points:g}/{i.max:g}): {i.why or 'no points'}" for i in lost]
        notes = [n.split(": ", 1)[1] for n in grade.notes if n.startswith(f"{notebook}: ")]
        lines += [f"- note: {n}" for n in notes]
        lines += ["Everything passed." if not lost and not notes else "", ""]
    general = [n for n in grade.notes if not any(n.startswith(f"{i.notebook}: ") for i in grade.items)]
    lines += [f"Note: {n}" for n in general]
    return "\n".join(lines).rstrip() + "\n"
