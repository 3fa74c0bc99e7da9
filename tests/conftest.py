import os
import subprocess
import sys
from pathlib import Path

import psutil
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


def our_children() -> list[psutil.Process]:
    """This process's descendants, except multiprocessing's resource tracker: Python starts one per
    parent at the first spawn and it lives until pytest exits, as it does in a notebook kernel."""
    kids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(p.cmdline()):
                kids.append(p)
        except psutil.Error:
            pass
    return kids


def quietly(check, *args, **kwargs):
    """Run an exercise check and return (result, what it wrote to stderr); a warning it lets through fails."""
    import contextlib
    import io
    import warnings
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check(*args, **kwargs)
    return result, err.getvalue()
