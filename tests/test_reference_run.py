"""The committed reference run in results/ reads cleanly and belongs to the notebooks on main."""
import json
import subprocess

import nbformat
import pytest

from conftest import ROOT

RESULTS = ROOT / "results"
EXECUTED = sorted((RESULTS / "notebooks").glob("*.ipynb"))
NOISE = ("DeprecationWarning", "Traceback (most recent call last)", "0it [00:00")


def _texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        texts.append(out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"]))
        texts += [str(value) for value in out.get("data", {}).values()]
        texts += out.get("traceback", [])
    return texts


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.stem)
def test_executed_notebooks_read_cleanly(path):
    """No warning blocks, no tracebacks (failures are shown as one line) and no empty progress bars."""
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {k}: {needle!r}" for k, cell in enumerate(nb.cells, 1) for text in _texts(cell)
             for needle in NOISE if needle in text]
    assert not found, f"{path.name}: " + "; ".join(found[:10])
    assert not nb.metadata.get("papermill", {}).get("parameters", {}).get("quick"), "the reference run is not quick"


def test_the_check_above_can_fail(tmp_path):
    cell = nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/plain": "node 0: 0it [00:00, ?it/s]"})])
    assert any("0it [00:00" in text for text in _texts(cell))


def test_the_run_names_a_commit_of_main_made_after_the_notebooks_last_change():
    commit = json.loads((RESULTS / "run.json").read_text())["environment"]["git_commit"]
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "rev-parse", "--git-dir"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    if subprocess.run([*git, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True).returncode:
        shallow = subprocess.run([*git, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True)
        if shallow.stdout.strip() == "true":
            pytest.skip(f"commit {commit} is not in this shallow clone")
        pytest.fail(f"results/run.json names commit {commit}, which is not in this repository's history")
    assert subprocess.run([*git, "merge-base", "--is-ancestor", commit, "HEAD"]).returncode == 0
    changed = subprocess.run([*git, "diff", "--name-only", commit, "HEAD", "--", "notebooks"],
                             capture_output=True, text=True).stdout.split()
    assert not changed, f"notebooks changed after the reference run ({commit}): {changed}; run make results"
