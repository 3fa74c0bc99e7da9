"""JupyterLab + headless Chromium for the browser tests: start, drive, and prove everything stopped.

Every process started here carries ``DMLLAB_BROWSER_RUN=<id>`` in its environment (JupyterLab and,
through it, kernels and labkit workers; Chromium too), so ``survivors`` finds them all by that mark.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from labkit.runtime.warm import is_warm_interpreter

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
MARK = "DMLLAB_BROWSER_RUN"
WAIT_MS = 120_000   # a loaded, shared machine: page-state waits are generous, never fixed sleeps

# User settings for a fresh JupyterLab: every cell in the DOM (no windowing), no news/update toasts.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on 127.0.0.1 (random port and token) serving ``root``; ``stop()`` ends its process group."""

    def __init__(self, root: Path, state: Path, checkout: Path):
        self.root, self.port, self.token = root, free_port(), secrets.token_hex(16)
        self.mark = secrets.token_hex(8)
        settings = state / "settings"
        for name, value in SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        self.env = {**os.environ, MARK: self.mark,
                    "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                    "LABKIT_RESULTS": str(state / "results"),
                    "JUPYTERLAB_SETTINGS_DIR": str(settings),
                    "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
                    "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
                    "JUPYTER_CONFIG_DIR": str(state / "config"),
                    "IPYTHONDIR": str(state / "ipython"),
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        self.log = open(state / "jupyter.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--port-retries=0", "--allow-root", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer /api/status within {timeout} s; see {self.log.name}")

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def stop(self) -> None:
        """SIGTERM the server's process group (kernels, workers), then SIGKILL whatever is left."""
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            for proc in survivors(self.mark) + [p for p in [_proc(self.proc.pid)] if p]:
                try:
                    proc.send_signal(sig)
                except psutil.Error:
                    pass
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            psutil.wait_procs(survivors(self.mark), timeout=grace)
            if not survivors(self.mark):
                break
        self.log.close()


def _proc(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def survivors(mark: str, extra: str | None = None) -> list[psutil.Process]:
    """Live processes carrying this run's mark in their environment (or ``extra`` in their command line)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if (extra and extra in " ".join(proc.info["cmdline"] or [])) or proc.environ().get(MARK) == mark:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid}: {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            pass
    return "; ".join(out)


def kernel_workers(mark: str) -> list[psutil.Process]:
    """Descendants of this run's kernels (labkit supervisors and workers), excluding the kernels themselves."""
    kids = []
    for proc in survivors(mark):
        try:
            if "ipykernel" in " ".join(proc.cmdline()):
                kids += [c for c in proc.children(recursive=True)
                         if c.status() != psutil.STATUS_ZOMBIE and not is_warm_interpreter(c)]
        except psutil.Error:
            continue
    return kids


# ------------------------------------------------------------------ page helpers

def open_notebook(page, lab: Lab, name: str) -> None:
    """Open a notebook and wait until its kernel is idle."""
    page.goto(lab.notebook_url(name), timeout=WAIT_MS)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=WAIT_MS)
    try:   # JupyterLab may ask "Select Kernel" for a fresh copy: take its default (python3)
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=20_000)
    except Exception:  # noqa: BLE001 - no dialog: the kernel was chosen from the metadata
        pass
    wait_idle(page)


def wait_idle(page) -> None:
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           state="attached", timeout=WAIT_MS)


def command(page, name: str, **args) -> None:
    """Start a JupyterLab command, as the menus and keyboard shortcuts do (without awaiting its end)."""
    page.evaluate("([name, args]) => { window.jupyterapp.commands.execute(name, args); }", [name, args])


def cell(page, index: int):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def run_cell(page, index: int) -> None:
    """Select cell ``index`` (a click on its prompt) and run it."""
    cell(page, index).locator(".jp-InputPrompt").first.click()
    command(page, "notebook:run-cell")


def prompt(page, index: int) -> str:
    return cell(page, index).locator(".jp-InputPrompt").first.inner_text().strip()


def wait_running(page, index: int) -> None:
    cell(page, index).locator(".jp-InputPrompt", has_text="[*]").first.wait_for(timeout=WAIT_MS)


def wait_done(page, index: int, timeout: int = WAIT_MS) -> None:
    """Until the cell shows an execution count (not ``[*]`` or blank) and the kernel is idle."""
    page.wait_for_function(
        """(i) => { const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[i];
                    return c && /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent); }""",
        arg=index, timeout=timeout)
    wait_idle(page)


def wait_all_done(page, timeout: int = WAIT_MS) -> None:
    page.wait_for_function(
        """() => { const ps = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
                   return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }""", timeout=timeout)
    wait_idle(page)


def output_text(page, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").first.inner_text()


def code_cell_index(path: Path, needle: str) -> int:
    """Index (among all cells) of the first code cell whose source contains ``needle``."""
    import nbformat
    cells = nbformat.read(path, as_version=4).cells
    return next(i for i, c in enumerate(cells) if c.cell_type == "code" and needle in c.source)


def set_cell_text(page, index: int, text: str) -> None:
    """Replace a cell's source by typing into its editor, as a student would."""
    editor = cell(page, index).locator(".cm-content").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)
    page.keyboard.press("Escape")


def image_sources(locator) -> list[str]:
    return locator.locator("img").evaluate_all("imgs => imgs.map(i => i.src)")
