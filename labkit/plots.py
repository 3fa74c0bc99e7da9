"""Matplotlib figures for the lab: one function per figure kind, each returning its Figure.

Workers never plot; notebooks call these on result tables. Sections follow the notebooks.
"""
from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: F401  (used by the sections below)


# ---------------------------------------------------------------- partitioning (notebook 02)


# ---------------------------------------------------------------- communication (notebook 01)


# ---------------------------------------------------------------- data parallelism (notebook 03)


# ---------------------------------------------------------------- partitioning impact (notebook 04)


# ---------------------------------------------------------------- model parallelism (notebook 05)
