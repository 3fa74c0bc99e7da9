import os
import subprocess
import sys
import threading
import time
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
    """This process's descendants, except the helpers that live as long as their parent does, as in a
    notebook kernel: multiprocessing's resource tracker (started at the first spawn) and labkit's warm
    interpreter (started at the first launch)."""
    return without_helpers(psutil.Process().children(recursive=True))


def without_helpers(procs) -> list[psutil.Process]:
    """``procs`` without resource trackers and warm interpreters (see ``our_children``)."""
    from labkit.runtime.warm import is_warm_interpreter
    kids = []
    for p in procs:
        try:
            if "multiprocessing.resource_tracker" not in " ".join(p.cmdline()) and not is_warm_interpreter(p):
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


class ProcessWatch:
    """Samples this process's descendants and listening ports while a launch runs."""

    def __init__(self):
        self.seen, self.ports, self._stop = {}, set(), threading.Event()
        self._before = self._listening()

    @staticmethod
    def _listening() -> set:
        return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}

    def _sample(self):
        while not self._stop.is_set():
            for p in our_children():
                try:
                    self.seen.setdefault(p.pid, p.create_time())
                except psutil.Error:
                    pass
            self.ports |= self._listening() - self._before
            time.sleep(0.02)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def survivors(self) -> list:
        alive = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    alive.append((pid, p.status(), " ".join(p.cmdline())[:80]))
            except psutil.Error:
                pass
        return alive

    def assert_clean(self, nodes: int):
        assert len(self.seen) >= nodes + 1, f"the watch saw only {len(self.seen)} processes"
        assert self.survivors() == []
        assert len(self.ports) >= 2, "the watch did not see the store and control ports"
        still = {c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        assert self.ports & still == set()
