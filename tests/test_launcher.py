"""labkit.launch: values in rank order, every failure as a WorkerError, and nothing left behind.

Every failure test watches the process table and the listening ports while the launch runs and
checks afterwards that no process of the launch survives (not even as a zombie) and no port is open.
"""
import os
import signal
import sys
import threading
import time

import cloudpickle
import nbformat
import psutil
import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

import labkit
from conftest import ROOT, ProcessWatch, without_helpers
from labkit.errors import LabError
from labkit import WorkerError, rank, report, world_size


# ---------------------------------------------------------------- worker functions

# Send them by value, as for functions defined in a notebook: the workers then need not import this
# test module (and pytest, hypothesis, ...), which keeps them quick to start.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def collectives(seed: int, length: int):
    g = torch.Generator().manual_seed(seed + rank())
    mine = torch.randn(length, generator=g)
    total = mine.clone()
    dist.all_reduce(total)
    gathered = [torch.empty(length) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    return rank(), world_size(), mine, total, torch.stack(gathered)


def raise_on_rank_one():
    dist.barrier()
    time.sleep(0.3)  # long enough for the process watch to see every rank
    if rank() == 1:
        raise ValueError("rank one fails on purpose")
    dist.barrier()


def sigkill_rank_one():
    dist.barrier()
    time.sleep(0.3)
    if rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


def rank_two_sleeps_forever():
    if rank() == 2:
        while True:
            time.sleep(1)
    return rank()


def everyone_sleeps():
    print("started", flush=True)
    time.sleep(600)


def rank_zero_kills_the_supervisor():
    dist.barrier()
    time.sleep(0.3)
    if rank() == 0:
        os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(600)


def return_a_lock():
    time.sleep(0.3)
    return threading.Lock()


def talk_and_report(steps: int):
    for step in range(1, steps + 1):
        report(step=step, total=steps, loss=torch.tensor(1.0 / step))
    print(f"rank {rank()} says hi")
    print(f"rank {rank()} complains", file=sys.stderr)
    return torch.get_num_threads()


def rpc_names():
    from torch.distributed import rpc
    me = rpc.get_worker_info().name
    peer = rpc.get_worker_info("master").name
    return me, peer, rpc.rpc_sync("master", torch.add, args=(torch.ones(1), rank())).item()


# ---------------------------------------------------------------- results

@settings(max_examples=3, deadline=None)
@given(nodes=st.integers(1, 3), length=st.integers(1, 40), seed=st.integers(0, 1000))
def test_all_reduce_and_all_gather_results_are_right(nodes, length, seed):
    out = labkit.launch(collectives, nodes, seed, length)
    assert [o[0] for o in out] == list(range(nodes)) and all(o[1] == nodes for o in out)
    mine = torch.stack([o[2] for o in out])
    for _, _, _, total, gathered in out:
        assert torch.allclose(total, mine.sum(0), atol=1e-5)
        assert torch.equal(gathered, mine)


def test_output_lines_progress_and_threads(capfd):
    assert labkit.launch(talk_and_report, 2, 30, threads=2) == [2, 2]
    out, err = capfd.readouterr()
    assert "[node 0] rank 0 says hi" in out and "[node 1] rank 1 says hi" in out
    assert "[node 1] rank 1 complains" in err
    assert "node 0" in err and "30/30" in err  # the progress bars (tqdm draws on stderr)


def test_outside_a_launch_this_process_is_rank_zero_of_one(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LABKIT_RANK", "LABKIT_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert (rank(), world_size()) == (0, 1)
    report(step=1, total=2)  # a no-op here, and no error


def test_launching_twice_in_a_row_works():
    assert labkit.launch(rank, 2) == [0, 1]
    assert labkit.launch(world_size, 3) == [3, 3, 3]


def test_rpc_mode_names_master_and_workers_and_can_rerun():
    for _ in range(2):
        out = labkit.launch(rpc_names, 3, rpc=True, timeout=60)
        assert [o[0] for o in out] == ["master", "worker1", "worker2"]
        assert all(o[1] == "master" for o in out) and [o[2] for o in out] == [1.0, 2.0, 3.0]


def test_spawn_start_method_gives_the_same_results(monkeypatch):
    monkeypatch.setenv("LABKIT_START_METHOD", "spawn")
    with ProcessWatch() as watch:
        assert labkit.launch(rank, 2) == [0, 1]
    watch.assert_clean(2)


# ---------------------------------------------------------------- failures

def test_exception_in_rank_one_is_reported_and_everything_stops():
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(WorkerError) as info:
        labkit.launch(raise_on_rank_one, 4, timeout=60)
    assert time.monotonic() - start < 10
    err = info.value
    assert err.ranks[0] == 1 and err.reason == "exception" and isinstance(err, LabError)
    assert str(err).startswith("rank 1 raised ValueError: rank one fails on purpose")
    assert "raise_on_rank_one" in err.tracebacks[1] and "Traceback" in str(err)
    watch.assert_clean(4)
    assert labkit.launch(rank, 2) == [0, 1]  # the next launch works at once


def test_rank_killed_by_sigkill_is_reported_with_its_signal():
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(WorkerError) as info:
        labkit.launch(sigkill_rank_one, 4, timeout=60)
    assert time.monotonic() - start < 10
    assert info.value.ranks[0] == 1 and info.value.reason == "signal" and info.value.exitcodes[1] == -9
    assert str(info.value).startswith("rank 1 was killed by signal SIGKILL")
    watch.assert_clean(4)


def test_timeout_names_the_unfinished_ranks():
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(WorkerError) as info:
        labkit.launch(rank_two_sleeps_forever, 4, timeout=8)
    assert time.monotonic() - start < 14
    assert info.value.ranks == [2] and info.value.reason == "timeout"
    assert "timed out after 8 s: rank(s) 2 had not finished" in str(info.value)
    watch.assert_clean(4)


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler for the test: a background job (a script, a CI wrapper) starts with
    SIGINT ignored, and the interrupt would then never reach the launch."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_keyboard_interrupt_in_the_parent_stops_every_worker(capfd, sigint_raises):
    timer = threading.Timer(2.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(KeyboardInterrupt):
        timer.start()
        labkit.launch(everyone_sleeps, 3, timeout=60)
    assert time.monotonic() - start < 10
    watch.assert_clean(3)
    assert "interrupted: all 3 workers were stopped" in capfd.readouterr().err
    assert labkit.launch(rank, 2) == [0, 1]


def test_supervisor_killed_is_reported_and_nothing_survives():
    start = time.monotonic()
    with ProcessWatch() as watch, pytest.raises(WorkerError, match="the launcher process ended unexpectedly"):
        labkit.launch(rank_zero_kills_the_supervisor, 3, timeout=60)
    assert time.monotonic() - start < 10
    watch.assert_clean(3)


def test_supervisor_that_cannot_start_is_reported(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(WorkerError, match=r"the launcher process ended unexpectedly \(exit code 1\)") as info:
        labkit.launch(rank, 2, timeout=30)
    assert info.value.ranks == [] and info.value.reason == "launcher"


def test_parent_killed_takes_its_workers_along(tmp_path):
    """A parent that dies without cleaning up (kill -9 of the kernel) leaves no workers behind."""
    script = tmp_path / "parent.py"
    script.write_text("import time, labkit\n"
                      "def f():\n    print('up', flush=True)\n    time.sleep(600)\n"
                      "labkit.launch(f, 2)\n")
    import subprocess
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert "up" in parent.stdout.readline()
        family = psutil.Process(parent.pid).children(recursive=True)
        assert len(family) >= 3
    finally:
        parent.kill()
        parent.wait()
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn,nodes,kwargs,message", [
    (rank, 0, {}, "nodes must be a whole number of at least 1, got 0"),
    (rank, -2, {}, "nodes must be a whole number of at least 1"),
    (rank, 2.5, {}, "nodes must be a whole number"),
    ("rank", 2, {}, "fn must be a function to run on every node, got str"),
    (None, 2, {}, "fn must be a function"),
    (rank, 2, {"threads": 0}, "threads must be a whole number of at least 1"),
    (rank, 2, {"timeout": 0}, "timeout must be a positive number of seconds"),
    (rank, 100, {}, "more than 64 local worker processes"),
    (rank, 2, {"rpc": -1}, "rpc must be True, False or the seconds one RPC call may take"),
    (rank, 2, {"rpc": "yes"}, "rpc must be True, False or the seconds"),
])
def test_bad_requests_are_refused_clearly(fn, nodes, kwargs, message):
    with pytest.raises(LabError, match=message):
        labkit.launch(fn, nodes, **kwargs)


@pytest.mark.parametrize("rpc,timeout,expected", [(False, 600, 0.0), (True, 600, 120.0), (True, 30, 30.0), (5, 600, 5.0)])
def test_an_rpc_call_waits_at_most_the_launch_timeout_or_two_minutes(rpc, timeout, expected):
    from labkit.runtime.launcher import rpc_call_timeout
    assert rpc_call_timeout(rpc, timeout) == expected


def test_unpicklable_argument_is_refused_before_starting():
    with pytest.raises(LabError, match="cannot send print and its arguments to the workers"):
        labkit.launch(print, 2, threading.Lock())


def test_unpicklable_return_value_is_a_clear_error():
    with ProcessWatch() as watch, pytest.raises(WorkerError, match=r"return value of fn on rank \d \(lock\) "
                                                                   r"cannot be pickled"):
        labkit.launch(return_a_lock, 2)
    watch.assert_clean(2)


def test_function_defined_in_a_notebook_cell_runs_on_four_workers(tmp_path, monkeypatch):
    import papermill
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import labkit\n"
        "def whoami():\n"
        "    from labkit import rank\n"
        "    return rank()\n"
        "print('ranks', labkit.launch(whoami, 4))")])
    nbformat.write(nb, tmp_path / "cell.ipynb")
    papermill.execute_notebook(str(tmp_path / "cell.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False, execution_timeout=120)
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    assert "ranks [0, 1, 2, 3]" in "".join(o.get("text", "") for o in outputs)


def rpc_master_calls_workers_after_they_returned():
    """Model-parallel shape: workers return at once, the master keeps calling them afterwards."""
    from torch.distributed import rpc
    if rank() != 0:
        return "idle"
    time.sleep(0.5)
    return [rpc.rpc_sync(f"worker{k}", torch.mul, args=(torch.ones(2), k)).tolist() for k in (1, 2)]


def rpc_rank_two_fails():
    from torch.distributed import rpc
    if rank() == 2:
        raise RuntimeError("stage 2 broke")
    if rank() == 0:
        time.sleep(0.5)
        return rpc.rpc_sync("worker1", torch.add, args=(torch.ones(1), 1)).item()


def test_rpc_workers_keep_serving_until_the_master_is_done():
    out = labkit.launch(rpc_master_calls_workers_after_they_returned, 3, rpc=True, timeout=60)
    assert out == [[[1.0, 1.0], [2.0, 2.0]], "idle", "idle"]


def test_rpc_failure_stops_everything_and_the_next_rpc_launch_works():
    with ProcessWatch() as watch, pytest.raises(WorkerError, match="rank 2 raised RuntimeError: stage 2 broke"):
        labkit.launch(rpc_rank_two_fails, 3, rpc=True, timeout=60)
    watch.assert_clean(3)
    assert labkit.launch(rpc_master_calls_workers_after_they_returned, 3, rpc=True, timeout=60)[1] == "idle"


def test_stop_button_in_a_live_kernel_stops_workers_and_the_kernel_goes_on(monkeypatch):
    """Jupyter's Stop button = interrupt_kernel(); the running launch must stop and clean up."""
    from jupyter_client.manager import start_new_kernel
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kernel = psutil.Process(km.provisioner.process.pid)
        kc.execute_interactive("import labkit, time\n"
                               "def sleepy():\n    time.sleep(600)\n", timeout=60)
        msg_id = kc.execute("labkit.launch(sleepy, 3)")
        deadline = time.monotonic() + 60
        while len(without_helpers(kernel.children(recursive=True))) < 4:  # supervisor + 3 ranks
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.1)
        family = without_helpers(kernel.children(recursive=True))
        time.sleep(1.0)
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        gone, alive = psutil.wait_procs(family, timeout=5)
        assert alive == [] and without_helpers(kernel.children(recursive=True)) == []
        outputs = []
        reply = kc.execute_interactive("print(labkit.launch(labkit.rank, 2))", timeout=60,
                                       output_hook=lambda m: outputs.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and "[0, 1]" in "".join(outputs)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_cli_reports_a_labkit_error_raised_in_a_worker_as_one_line():
    from labkit import cli

    def bad_input():
        from labkit.errors import LabError
        raise LabError("alpha must be positive; use alpha > 0")

    with pytest.raises(LabError) as caught:
        labkit.launch(bad_input, 2, timeout=60)
    import re
    assert re.fullmatch(r"rank [01]: alpha must be positive; use alpha > 0", cli.user_message(caught.value))
