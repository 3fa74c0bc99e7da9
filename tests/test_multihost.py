"""Two "hosts" = two Linux network namespaces joined by a veth pair; a 2-node job under torchrun.

Each namespace has its own interface and address (10.44.0.1 and 10.44.0.2, private to the
namespaces this test creates) but shares the hostname, as containers on one machine would.
Static rendezvous must work; one host dying must make the other fail with a clear error within
the configured timeout; c10d rendezvous works once told who hosts the store and each node's address.
"""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import ROOT

ADDRESSES = ("10.44.0.1", "10.44.0.2")
PORT = 29544


class Host:
    """One namespace: run commands in it, collect their output, kill everything in it."""

    def __init__(self, tag: str, index: int):
        self.ns, self.ifname, self.addr = f"lk4{tag}{index}", f"lk4{tag}v{index}", ADDRESSES[index]
        self.proc, self.lines = None, []

    def torchrun(self, node_rank: int, *extra: str, rounds=3, interval=0.0, timeout=30) -> "Host":
        env = {**os.environ, "GLOO_SOCKET_IFNAME": self.ifname, "TP_SOCKET_IFNAME": self.ifname,
               "PYTHONPATH": str(ROOT)}
        rendezvous = list(extra) or ["--node-rank", str(node_rank), "--master-addr", ADDRESSES[0],
                                     "--master-port", str(PORT)]  # static rendezvous unless told otherwise
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "torch.distributed.run",
               "--nnodes", "2", "--nproc-per-node", "1", *rendezvous, "-m", "labkit", "run", "hello",
               "--rounds", str(rounds), "--interval", str(interval), "--timeout", str(timeout)]
        self.lines = []
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        return self

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < end and self.proc.poll() is None, f"{text!r} never came:\n{self.output}"
            time.sleep(0.1)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def hosts():
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    tag = uuid.uuid4().hex[:4]
    pair = [Host(tag, 0), Host(tag, 1)]
    try:
        for h in pair:
            _ip("netns", "add", h.ns)
        _ip("link", "add", pair[0].ifname, "type", "veth", "peer", "name", pair[1].ifname)
        for h in pair:
            _ip("link", "set", h.ifname, "netns", h.ns)
            _ip("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", h.ifname)
            _ip("-n", h.ns, "link", "set", h.ifname, "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for h in pair:
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {getattr(exc, 'stderr', exc)}")
    try:
        yield pair
    finally:
        for h in pair:
            h.kill_all()
        for h in pair:
            subprocess.run(["ip", "netns", "del", h.ns], capture_output=True)  # also removes the veth pair
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(h.ns in listed for h in pair)


def _finish(*hosts: Host, timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    codes = []
    for h in hosts:
        try:
            codes.append(h.proc.wait(timeout=max(0.1, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{h.ns} did not finish in {timeout} s:\n{h.output}")
    time.sleep(0.2)
    return codes


def test_static_rendezvous_runs_a_two_host_job(hosts):
    a, b = hosts[0].torchrun(0), hosts[1].torchrun(1)
    assert _finish(a, b, timeout=90) == [0, 0], a.output + b.output
    for h in hosts:
        assert f"world 2: rank 0 on {_host()} 10.44.0.1@{a.ifname}; rank 1 on {_host()} 10.44.0.2@{b.ifname}" in h.output
        assert "all-reduce ok" in h.output
        assert h.pids() == []


def test_killing_one_host_makes_the_other_fail_clearly_within_the_timeout(hosts):
    timeout = 20
    a = hosts[0].torchrun(0, rounds=100000, interval=0.01, timeout=timeout)
    b = hosts[1].torchrun(1, rounds=100000, interval=0.01, timeout=timeout)
    a.wait_for("[rank 0] step", timeout=90)
    start = time.monotonic()
    b.kill_all()  # host b "dies": every process in its namespace (torchrun agent and worker) at once
    (code,) = _finish(a, timeout=timeout + 15)
    assert code != 0 and time.monotonic() - start < timeout
    assert "error: rank 0 (host" in a.output and "another node stopped" in a.output, a.output
    assert a.pids() == []


def test_a_cut_link_fails_both_hosts_after_the_collective_timeout(hosts):
    timeout = 6
    a = hosts[0].torchrun(0, rounds=100000, interval=0.01, timeout=timeout)
    b = hosts[1].torchrun(1, rounds=100000, interval=0.01, timeout=timeout)
    a.wait_for("[rank 0] step", timeout=90)
    start = time.monotonic()
    _ip("-n", b.ns, "link", "set", b.ifname, "down")
    codes = _finish(a, b, timeout=timeout + 60)
    assert all(c != 0 for c in codes)
    assert time.monotonic() - start >= timeout * 0.8  # it waited for the timeout, not less
    for h in hosts:
        assert "error: rank" in h.output and "timed out" in h.output.lower(), h.output
        assert h.pids() == []


def test_c10d_rendezvous_works_with_is_host_and_local_addr(hosts):
    """c10d finds its store host by hostname, which namespaces share: say it explicitly (see README)."""
    endpoint = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{ADDRESSES[0]}:29400", "--rdzv-id", "lk4"]
    a = hosts[0].torchrun(0, *endpoint, "--rdzv-conf", "is_host=1", "--local-addr", ADDRESSES[0])
    b = hosts[1].torchrun(1, *endpoint, "--rdzv-conf", "is_host=0", "--local-addr", ADDRESSES[1])
    assert _finish(a, b, timeout=90) == [0, 0], a.output + b.output
    for h in hosts:
        assert "world 2: rank 0 on" in h.output and "10.44.0.2@" in h.output


def _host() -> str:
    import socket
    return socket.gethostname()


# ---------------------------------------------------------------- the same entry point on one machine

def test_cli_hello_runs_locally_through_launch():
    from conftest import run_cli
    proc = run_cli("run", "hello", "--nodes", "3", "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "world 3: rank 0 on" in proc.stdout and "all-reduce ok: every rank got 6" in proc.stdout
    assert "[node 2] rank 2/3 on" in proc.stdout


def test_torchrun_on_one_machine_takes_the_job_size_from_torchrun():
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "labkit", "run", "hello", "--rounds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("all-reduce ok: every rank got 3 in each of 2 round(s)") == 2  # both ranks
    assert "rank 0/2 on" in proc.stdout and "rank 1/2 on" in proc.stdout


def test_cli_rejects_bad_hello_flags_in_one_line():
    from conftest import run_cli
    proc = run_cli("run", "hello", "--nodes", "0")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: nodes, rounds and threads must be at least 1."
