"""Execute a lab notebook headless, as a student's "Run All" would, with test-sized parameters."""
import os
from pathlib import Path

import nbformat
import papermill

from conftest import ROOT

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
