"""Where the lab's files live: the checkout, its data, its notebooks and the results folder.

``$LABKIT_DATA`` and ``$LABKIT_RESULTS`` move data and results elsewhere (tests write their tables
into a temporary folder this way).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "notebooks"


def data_root() -> Path:
    """The folder holding ``MNIST/raw`` (and optionally ``FashionMNIST/raw``)."""
    return Path(os.environ.get("LABKIT_DATA", REPO_ROOT / "data"))


def results_dir() -> Path:
    """Where tables go: ``$LABKIT_RESULTS`` if set (tests use this), else ``results/``."""
    return Path(os.environ.get("LABKIT_RESULTS", REPO_ROOT / "results"))
