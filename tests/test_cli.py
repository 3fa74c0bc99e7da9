"""The command line is instant: flags are parsed and checked before torch (or nbformat) is imported,
and a rejected flag is one line. The light name lists that make this possible agree with the modules
that implement them."""
import pkgutil
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("torch", "nbformat", "pandas")


def imports_of(*args) -> tuple[subprocess.CompletedProcess, set]:
    """Run the command line in a fresh interpreter; return its result and which heavy modules it imported."""
    code = ("import sys, runpy\nsys.argv = ['labkit', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('labkit', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            f"print('IMPORTED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("IMPORTED"))
    return proc, set(eval(line.split(" ", 1)[1]))  # noqa: S307 - our own printed list


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["run", "dp", "--help"], ["report", "--help"],
                                  ["autograde", "--help"]])
def test_help_imports_nothing_heavy(args):
    proc, heavy = imports_of(*args)
    assert proc.returncode == 0 and "usage: labkit" in proc.stdout
    assert heavy == set(), f"labkit {' '.join(args)} imported {heavy}"


@pytest.mark.parametrize("args,message", [
    (["run", "dp", "--sync", "nope"], "error: unknown sync mode 'nope'; choose one of: ddp, allreduce, allgather, local."),
    (["run", "single", "--model", "resnet"], "error: unknown model 'resnet'; choose one of: lenet5"),
    (["run", "dp", "--epochs", "0"], "error: epochs must be at least 1, got 0."),
    (["run", "mp", "--micro-batches", "5"], "error: batch_size 32 cannot be cut into 5 equal micro-batches"),
    (["run", "dp", "--alpha", "x"], "error: argument --alpha: invalid float value: 'x'"),
    (["run", "mp", "--split", "0"], "error: split point 0 is invalid for a model of 10 layers; use 1..9"),
    (["run", "mp", "--horizontal", "true", "--split", "3"], "error: horizontal=True divides a Linear layer's"),
])
def test_a_rejected_flag_is_one_line_and_imports_nothing_heavy(args, message):
    proc, heavy = imports_of(*args)
    errors = [x for x in proc.stderr.splitlines() if not x.startswith("IMPORTED")]
    assert proc.returncode == 2
    assert len(errors) == 1 and errors[0].startswith(message.split(" choose")[0].split(" got")[0]), proc.stderr
    assert message in proc.stderr
    assert heavy == set(), f"labkit {' '.join(args)} imported {heavy} before refusing it"


def test_the_light_name_lists_match_the_implementations():
    from labkit.data_parallel.config import SYNC_MODES
    from labkit.data_parallel.sync import SYNCHRONIZERS
    from labkit.train.config import MODEL_NAMES
    from labkit.train.models import MODELS
    assert tuple(SYNCHRONIZERS) == SYNC_MODES
    assert tuple(MODELS) == MODEL_NAMES


def test_lazy_packages_still_offer_every_name():
    import labkit.data_parallel as dp
    import labkit.exercises as ex
    import labkit.model_parallel as mp
    for package in (dp, mp, ex):
        submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        lazy = set(vars(package)["_WHERE"])
        assert not lazy & submodules, f"{package.__name__}: importing the submodule would hide the name"
        for name in package.__all__:
            assert getattr(package, name) is not None and name in dir(package)
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            package.nope  # noqa: B018
