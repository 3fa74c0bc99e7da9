import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """Tests never write into the committed results/ folder."""
    monkeypatch.setenv("LABKIT_RESULTS", str(tmp_path / "results"))


def run_cli(*args, env=None, timeout=300):
    """Run ``python -m labkit`` as a user would; return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
