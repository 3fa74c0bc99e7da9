"""The pins, the conda environment and the package metadata must agree."""
import re
import tomllib

from conftest import ROOT


def _lock():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_environment_yml_pins_exactly_the_lock():
    text = (ROOT / "environment.yml").read_text()
    yml = dict(re.findall(r"^\s+- ([A-Za-z0-9_.\-]+)==(\S+)$", text, flags=re.M))
    yml = {k.lower().replace("_", "-"): v for k, v in yml.items()}
    assert yml == _lock()
    assert "python=3.11" in text


def test_torch_is_pinned_to_the_cpu_build_version():
    assert _lock()["torch"] == "2.13.0"


def test_every_declared_dependency_is_pinned():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = meta["dependencies"] + meta["optional-dependencies"]["dev"]
    lock = _lock()
    for dep in declared:
        name = re.split(r"[<>=\[ ]", dep)[0].lower().replace("_", "-")
        assert name in lock, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make results" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
