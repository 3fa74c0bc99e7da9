"""The lab as a student sees it: JupyterLab in headless Chromium (Debian's, driven by Playwright).

Widgets and live progress render only in a browser, so these tests open the notebooks in
JupyterLab, run them and assert on what the page shows. Screenshots go to test-output/browser/
(and, with ``DMLLAB_KEEP_SCREENSHOTS=1``, to results/screenshots/ for the README).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from browser_util import (CHROMIUM, CHROMIUM_FLAGS, WAIT_MS, Lab, cell, code_cell_index, command, describe,
                          image_sources, kernel_workers, open_notebook, output_text, prompt, run_cell,
                          set_cell_text, survivors, wait_all_done, wait_done, wait_running)
from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                     "(make setup installs it with the dev extras)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}); `make browser` installs it as root",
                allow_module_level=True)

OUT = ROOT / "test-output" / "browser"
KEEP = ROOT / "results" / "screenshots"

# Small runs for the notebooks (papermill parameters, injected into the copies JupyterLab serves).
PARAMS = {
    "01_cluster_basics.ipynb": {"nodes": 2, "quick": True},
    "02_data_partitioning.ipynb": {"quick": True, "nodes": 10, "alpha": 0.5, "audit_epochs": 2},
    "03_data_parallel_training.ipynb": {"quick": False, "reference_epochs": 3},  # long: scenario 3 stops it
}
HELLO = "labkit.launch(collectives.hello_worker, nodes, 40, 0.02)"
HELLO_SLOW = "labkit.launch(collectives.hello_worker, nodes, 40, 0.25)"  # ~10 s, to watch the bars move


def _copy_notebooks(dest: Path) -> None:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    dest.mkdir(parents=True)
    for name, params in PARAMS.items():
        nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / name)), params)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        for c in nb.cells:
            c.source = c.source.replace(HELLO, HELLO_SLOW)
        nbformat.write(nb, dest / name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    state = tmp_path_factory.mktemp("jupyter")
    _copy_notebooks(state / "notebooks")
    server = Lab(state / "notebooks", state, ROOT)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        left = survivors(server.mark)
        assert not left, f"processes of the browser test survived JupyterLab's stop: {describe(left)}"


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900}, env={**os.environ, "DMLLAB_BROWSER_RUN": lab.mark})
        try:
            yield context
        finally:
            context.close()
    left = survivors(lab.mark, extra=str(profile))
    assert not [p for p in left if "chromium" in describe([p])], f"Chromium survived: {describe(left)}"


@pytest.fixture
def page(browser, request):
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=OUT / f"{request.node.name}-last.png")   # the state at the end, pass or fail
    page.close()


KEPT = {"partition_explorer.png", "launch_progress.png", "stop_button.png"}   # one per scenario, for the README


def _save(locator_or_page, name: str) -> Path:
    """Screenshot into test-output/browser/ (and, for KEPT names, results/screenshots/ when asked to keep them)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    locator_or_page.screenshot(path=path)
    if os.environ.get("DMLLAB_KEEP_SCREENSHOTS") and name in KEPT:
        KEEP.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, KEEP / name)
    return path


def test_partition_explorer_redraws_in_the_browser(page, lab):
    open_notebook(page, lab, "02_data_partitioning.ipynb")
    command(page, "notebook:run-all-cells")
    wait_all_done(page, timeout=240_000)
    explorer = page.locator(".jp-OutputArea .widget-vbox").filter(has=page.locator(".widget-dropdown")).first
    explorer.scroll_into_view_if_needed()
    image = explorer.locator(".widget-output img").first
    image.wait_for()
    assert "error" not in explorer.locator(".widget-output").inner_text().lower()
    first = image_sources(explorer)
    assert len(first) == 1 and first[0].startswith("data:image/png")
    before = _save(explorer, "explorer_dirichlet.png").read_bytes()

    # another strategy: the heatmap is redrawn
    explorer.locator(".widget-dropdown select").select_option("label_k")
    page.wait_for_function("([el, old]) => { const i = el.querySelector('.widget-output img');"
                           " return i && i.src !== old; }", arg=[explorer.element_handle(), first[0]])
    label_k = image_sources(explorer)
    assert label_k[0] != first[0]
    assert _save(explorer, "explorer_label_k.png").read_bytes() != before

    # back to dirichlet, then drag the alpha slider's handle to the right: redrawn again
    explorer.locator(".widget-dropdown select").select_option("dirichlet")
    page.wait_for_function("([el, old]) => { const i = el.querySelector('.widget-output img');"
                           " return i && i.src !== old; }", arg=[explorer.element_handle(), label_k[0]])
    dirichlet = image_sources(explorer)
    alpha = explorer.locator(".widget-slider").filter(has_text="alpha").first
    readout_before = alpha.locator(".widget-readout").inner_text()
    handle = alpha.locator(".noUi-handle").first.bounding_box()
    track = alpha.locator(".noUi-target").first.bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.75, handle["y"] + handle["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function("([el, old]) => { const i = el.querySelector('.widget-output img');"
                           " return i && i.src !== old; }", arg=[explorer.element_handle(), dirichlet[0]])
    assert alpha.locator(".widget-readout").inner_text() != readout_before
    after = image_sources(explorer)
    assert after[0] not in (dirichlet[0], first[0], label_k[0])
    assert "error" not in explorer.locator(".widget-output").inner_text().lower()
    assert _save(explorer, "partition_explorer.png").read_bytes() != before


def test_launch_shows_per_node_progress_and_prefixed_output(page, lab):
    path = lab.root / "01_cluster_basics.ipynb"
    imports, hello = code_cell_index(path, "import labkit"), code_cell_index(path, HELLO_SLOW)
    open_notebook(page, lab, "01_cluster_basics.ipynb")
    for index in range(imports + 1):
        if cell(page, index).get_attribute("class").count("jp-CodeCell"):
            run_cell(page, index)
    wait_done(page, imports)
    run_cell(page, hello)
    wait_running(page, hello)
    out = cell(page, hello).locator(".jp-OutputArea").first
    # while the workers run: one progress widget per node, labelled "node k"
    for rank in (0, 1):
        out.locator(".widget-hbox", has_text=f"node {rank}").locator("[class*='progress']").first.wait_for()
    assert prompt(page, hello).startswith("[*]"), "the cell finished before its progress bars were seen"
    cell(page, hello).scroll_into_view_if_needed()
    _save(page, "launch_progress.png")
    wait_done(page, hello)
    text = output_text(page, hello)
    assert "[node 0] rank 0/2" in text and "[node 1] rank 1/2" in text, text
    bars = out.locator(".widget-hbox", has_text="node 0").first.inner_text()
    assert "40/40" in bars, bars


def test_stop_button_interrupts_training_and_the_cell_runs_again(page, lab):
    path = lab.root / "03_data_parallel_training.ipynb"
    params = code_cell_index(path, "reference_epochs = 3")
    setup, train = code_cell_index(path, "from labkit import collectives"), code_cell_index(path, "data_parallel.run(")
    open_notebook(page, lab, "03_data_parallel_training.ipynb")
    for index in (params - 1, params, setup):
        run_cell(page, index)
    wait_done(page, setup)
    run_cell(page, train)
    wait_running(page, train)
    out = cell(page, train).locator(".jp-OutputArea").first
    out.locator(".widget-hbox", has_text="node 1").first.wait_for()   # training is under way
    assert kernel_workers(lab.mark), "no worker processes while training runs"
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar [data-command='notebook:interrupt-kernel']").first.click()
    wait_done(page, train)
    text = output_text(page, train)
    assert "KeyboardInterrupt" in text and "[launch] interrupted: all 2 workers were stopped." in text, text
    left = kernel_workers(lab.mark)
    assert not left, f"worker processes survived the Stop button: {describe(left)}"
    cell(page, train).scroll_into_view_if_needed()
    _save(page, "stop_button.png")

    # a short run of the same cell now works
    set_cell_text(page, params, "quick = True\nreference_epochs = 1\n")
    for index in (params, setup, train):
        run_cell(page, index)
    wait_done(page, train, timeout=240_000)
    text = output_text(page, train)
    assert "KeyboardInterrupt" not in text and "test_acc" in text, text
    assert not kernel_workers(lab.mark)
