"""Result tables: one row per run x epoch, with the config, seed and environment, in results/*.csv.

Rows are plain dicts so every experiment kind can add its own columns; ``append`` keeps the
union of columns when a table grows, and never rewrites rows that are already there. A process
killed in the middle of an append can leave a torn last line: ``load`` ignores it and the next
``append`` cuts it off, so every complete row survives and the table stays readable.
"""
from __future__ import annotations

import dataclasses
import io
import os
import uuid
from pathlib import Path

import pandas as pd

from . import environment
from .paths import results_dir


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def run_rows(config, history: list[dict], **run_fields) -> list[dict]:
    """Long-format rows: config fields + per-epoch metrics + run-level fields + environment."""
    base = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    base = {k: (str(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in base.items()}
    env = environment.describe()
    run_id = run_fields.pop("run_id", None) or new_run_id()
    return [{"run_id": run_id, **base, **epoch, **run_fields, **env} for epoch in history]


def append(rows: list[dict], table: str, directory: Path | None = None) -> Path:
    """Append rows to ``<directory>/<table>.csv``, widening the header if new columns appear."""
    directory = Path(directory) if directory else results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{table}.csv"
    new = pd.DataFrame(rows)
    old = _complete_rows(path, repair=True)
    if len(old.columns):
        if list(old.columns) == list(new.columns):
            new.to_csv(path, mode="a", header=False, index=False)
            return path
        new = pd.concat([old, new], ignore_index=True, sort=False)
    tmp = path.with_suffix(".csv.tmp")
    new.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def load(table: str, directory: Path | None = None) -> pd.DataFrame:
    """Read a result table's complete rows; an empty frame if nothing has been recorded yet."""
    return _complete_rows((Path(directory) if directory else results_dir()) / f"{table}.csv")


def _complete_rows(path: Path, repair: bool = False) -> pd.DataFrame:
    """The rows of a table up to its last newline (a row is complete only once its newline is
    written); ``repair`` also cuts a torn last line off the file, before anything is appended."""
    if not path.exists():
        return pd.DataFrame()
    with open(path, "rb+" if repair else "rb") as f:
        data = f.read()
        complete = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
        if repair and len(complete) < len(data):
            f.truncate(len(complete))
    return pd.read_csv(io.BytesIO(complete)) if complete.strip() else pd.DataFrame()
