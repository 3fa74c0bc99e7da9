"""The warm interpreter (labkit.runtime.warm): launches fork their supervisor from one interpreter per
parent that has imported torch, yet each launch still starts clean, and the interpreter's own death,
or its parent's, leaves nothing behind and breaks no later launch."""
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest

import labkit
from conftest import ROOT, ProcessWatch
from labkit import WorkerError
from labkit.runtime import warm

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the warm interpreter is Linux only")


def warm_interpreters() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if warm.is_warm_interpreter(p)]


def where_am_i():
    import torch
    me = psutil.Process()
    return {"parent": me.parent().pid, "grandparent": me.parent().parent().pid, "cwd": os.getcwd(),
            "env": os.environ.get("WARM_TEST_VALUE"), "threads": torch.get_num_threads(),
            "parent_module": "warm_test_sentinel" in sys.modules, "session": os.getsid(0)}


def test_launches_fork_from_one_warm_interpreter_and_still_start_clean(tmp_path, monkeypatch):
    labkit.launch(labkit.rank, 1)
    first = warm_interpreters()
    assert len(first) == 1
    sys.modules["warm_test_sentinel"] = sys  # imported here after the interpreter started
    monkeypatch.setenv("WARM_TEST_VALUE", "set after the warm start")
    monkeypatch.chdir(tmp_path)
    try:
        out = labkit.launch(where_am_i, 2, threads=2)
    finally:
        del sys.modules["warm_test_sentinel"]
    assert warm_interpreters() == first, "a second launch started another warm interpreter"
    for rank_view in out:
        assert rank_view["grandparent"] == first[0].pid          # rank <- supervisor <- warm interpreter
        assert rank_view["cwd"] == str(tmp_path)                 # this launch's folder
        assert rank_view["env"] == "set after the warm start"    # this launch's environment
        assert rank_view["threads"] == 2                         # this launch's threads
        assert not rank_view["parent_module"]                    # nothing of the parent's modules
        assert rank_view["session"] not in (os.getsid(0), first[0].pid)  # a session of its own


def test_killing_the_warm_interpreter_is_survived_by_the_next_launch():
    labkit.launch(labkit.rank, 1)
    (server,) = warm_interpreters()
    server.kill()
    server.wait(5)
    with ProcessWatch() as watch:
        assert labkit.launch(slow_rank, 3) == [0, 1, 2]
    watch.assert_clean(3)
    assert labkit.launch(labkit.rank, 2) == [0, 1]
    (again,) = warm_interpreters()
    assert again.pid != server.pid


def slow_rank():
    time.sleep(0.3)  # long enough for the process watch to see every rank
    return labkit.rank()


def kill_the_warm_interpreter():
    dist_barrier()
    if labkit.rank() == 0:
        os.kill(psutil.Process().parent().parent().pid, signal.SIGKILL)
    time.sleep(600)


def dist_barrier():
    import torch.distributed as dist
    dist.barrier()
    time.sleep(0.3)  # long enough for the process watch to see every rank


def test_warm_interpreter_killed_during_a_launch_stops_it_cleanly():
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(WorkerError):
        labkit.launch(kill_the_warm_interpreter, 3, timeout=60)
    assert time.monotonic() - start < 15
    watch.assert_clean(3)
    assert labkit.launch(labkit.rank, 2) == [0, 1]


def test_switched_off_every_launch_starts_a_fresh_supervisor(monkeypatch):
    monkeypatch.setenv("LABKIT_WARM", "0")
    assert [v["grandparent"] for v in labkit.launch(where_am_i, 2)] == [os.getpid()] * 2


def test_parent_killed_takes_its_warm_interpreter_along(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text("import labkit, sys\nlabkit.launch(labkit.rank, 1)\nprint('up', flush=True)\nsys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert "up" in parent.stdout.readline()
        servers = [p for p in psutil.Process(parent.pid).children() if warm.is_warm_interpreter(p)]
        assert len(servers) == 1
    finally:
        parent.kill()
        parent.wait()
    assert psutil.wait_procs(servers, timeout=5)[1] == []
