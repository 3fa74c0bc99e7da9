"""Execute a lab notebook headless, as a student's "Run All" would, with test-sized parameters."""
import os
from pathlib import Path

import nbformat
import papermill

from conftest import ROOT
from labkit.course.grade import filled

NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, tmp_path: Path, timeout: int = 600, **parameters) -> nbformat.NotebookNode:
    """Run notebooks/<name> top to bottom with ``parameters`` injected; return the executed notebook.

    Raises papermill's PapermillExecutionError (with the failing cell) if any cell fails.
    """
    out = tmp_path / name
    # the kernel must import the labkit of the checkout under test, not whatever is installed
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
                               execution_timeout=timeout)
    return nbformat.read(out, as_version=4)


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """All stream and text/plain outputs of a notebook, concatenated."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def count_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def is_exercise(cell) -> bool:
    """A cell a student writes (an nbgrader solution cell): its code follows the exercise, not the lab's rules."""
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def read_lab_notebook(name: str, answers: int) -> tuple[nbformat.NotebookNode, str, str]:
    """Check the shape every lab notebook shares and return (notebook, markdown text, code text).

    Committed without outputs, valid, one ``parameters`` cell, at least ``answers`` markdown cells
    tagged ``answer`` that hold only their placeholder, and a Summary and Exercises section.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit it without outputs"
    tagged = [(c.cell_type, c.metadata.get("tags", [])) for c in nb.cells]
    assert sum("parameters" in tags for _, tags in tagged) == 1
    assert sum(kind == "markdown" and "answer" in tags for kind, tags in tagged) >= answers
    assert all(kind == "markdown" for kind, tags in tagged if "answer" in tags)
    given_away = [c.source[:40] for c in nb.cells if "answer" in c.metadata.get("tags", []) and filled(c.source, "")]
    assert not given_away, f"answer cells must hold only the placeholder (model answers go to instructor/): {given_away}"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    return nb, markdown, "\n".join(c.source for c in code if not is_exercise(c))
