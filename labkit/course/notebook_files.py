"""Reading executed notebooks and writing what a report keeps of them: the notebook's own cells, its PNG
figures, an HTML export, ``run.json`` and the key-number table (``labkit.course.report`` runs them)."""
from __future__ import annotations

import base64
import contextlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from .. import environment
from ..notebook import keynumbers

TOOL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}  # cells papermill adds to an executed notebook


def read_notebook(path):
    """nbformat.read, imported when first needed (its schema checker alone costs ~1 s at import)."""
    import nbformat
    return nbformat.read(path, as_version=4)


def lab_cells(nb) -> list:
    """The notebook's own cells, without the ones papermill inserts when it executes it."""
    return [c for c in nb.cells if not TOOL_TAGS & set(c.get("metadata", {}).get("tags", []))]


def save_figures(nb, folder: Path) -> list[Path]:
    """Every PNG output as ``cellKK_N.png`` (KK = the cell's 1-based position in the notebook)."""
    saved = []
    for k, cell in enumerate(lab_cells(nb), 1):
        pngs = [out["data"]["image/png"] for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
        for n, png in enumerate(pngs, 1):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"cell{k:02d}_{n}.png"
            path.write_bytes(base64.b64decode(png if isinstance(png, str) else "".join(png)))
            saved.append(path)
    return saved


def export_html(nb, path: Path) -> None:
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def clear(out: Path, stems: list[str], everything: bool) -> None:
    """Remove what an earlier report made for these notebooks (all of it, tables too, for a full run)."""
    globs = ["notebooks/*.ipynb", "html/*.html", "tables/*.csv"] if everything else \
        [f"notebooks/{s}.ipynb" for s in stems] + [f"html/{s}.html" for s in stems]
    for pattern in globs:
        for path in out.glob(pattern):
            path.unlink()
    for stem in ([p.name for p in out.glob("figures/*")] if everything else stems):
        shutil.rmtree(out / "figures" / stem, ignore_errors=True)


def save_run_json(out: Path, runs: list[NotebookRun], everything: bool) -> dict:
    """Record this run; a partial run (``--only``) keeps the other notebooks' earlier entries."""
    path = out / "run.json"
    earlier = {}
    if not everything and path.exists():
        with contextlib.suppress(ValueError, OSError):
            earlier = json.loads(path.read_text()).get("notebooks", {})
    record = {"environment": environment.describe(), "quick": any(r.quick for r in runs),
              "notebooks": dict(sorted({**earlier, **{r.name: asdict(r) for r in runs}}.items()))}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def key_number_rows(out: Path) -> list[dict]:
    """Every key number of every executed notebook in ``out/notebooks``."""
    rows = []
    for path in sorted((out / "notebooks").glob("*.ipynb")):
        nb = read_notebook(path)
        rows += [{"notebook": path.stem, **asdict(key)} for key in keynumbers.read(nb).values()]
    return rows


def write_key_numbers(out: Path) -> None:
    """``tables/key_numbers.csv``, rebuilt from every executed notebook (so partial runs stay consistent)."""
    import pandas as pd
    path = out / "tables" / "key_numbers.csv"
    rows = key_number_rows(out)
    if rows:
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        path.unlink(missing_ok=True)


def earlier_seconds(out: Path) -> dict[str, float]:
    """How long each notebook took in the last run recorded in ``out`` (empty if none)."""
    try:
        return {name: float(r["seconds"]) for name, r in json.loads((out / "run.json").read_text())["notebooks"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
