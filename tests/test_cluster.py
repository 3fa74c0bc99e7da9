"""The cluster on one machine (labkit.cluster): the compose file, link shaping, and measured against the model.

* unit tests: the compose file for 2 and 4 nodes, bandwidth and latency parsing, the tc commands;
* no Docker (root + network namespaces): a 4 MB all-reduce between two namespaces, unshaped and at
  100 Mbit/s, against the alpha-beta prediction; and how many bytes gloo actually sends;
* Docker (skipped with a reason when docker or its daemon is missing): build the image, a data-parallel
  job on 2 containers, the same all-reduce check between containers, a killed node, and nothing left behind.
"""
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from conftest import ROOT
from labkit.cluster import compose, shaping
from labkit.cluster.compose import ClusterSpec
from labkit.errors import LabError

SIZE = 4 * 2**20  # the 4 MB all-reduce
COMM = ["run", "comm", "--sizes", "4k,4M", "--ops", "all_reduce", "--repeats", "5", "--no-progress"]


# ---------------------------------------------------------------- unit tests (no Docker, no root)

@pytest.mark.parametrize("nodes", [2, 4])
def test_compose_file_has_one_service_per_node_on_the_private_subnet(nodes):
    spec = ClusterSpec(nodes, ("run", "dp", "--epochs", "1"), bandwidth="100mbit", results="/r", code="/c")
    data = yaml.safe_load(compose.dump(spec))
    assert data["version"] == "2.4" and list(data["services"]) == [f"node{i:02d}" for i in range(1, nodes + 1)]
    assert data["networks"]["cluster"]["ipam"]["config"] == [{"subnet": "172.28.57.0/24"}]
    for i, (name, service) in enumerate(data["services"].items()):
        assert service["networks"]["cluster"]["ipv4_address"] == f"172.28.57.{11 + i}"
        assert service["hostname"] == name and service["cap_add"] == ["NET_ADMIN"]
        assert service["volumes"] == ["/r:/lab/results", "/c:/lab/labkit:ro"]
        assert service["environment"]["GLOO_SOCKET_IFNAME"] == "eth0"
        cmd = service["command"]
        assert cmd[:5] == ["python", "-m", "labkit.cluster.node", "--name", name] and "--bandwidth" in cmd
        torchrun = cmd[cmd.index("--") + 1:]
        assert torchrun == ["torchrun", "--nnodes", str(nodes), "--nproc-per-node", "1", "--node-rank", str(i),
                            "--master-addr", "node01", "--master-port", "29500", "-m", "labkit", "run", "dp",
                            "--epochs", "1"]


def test_cluster_spec_refuses_bad_settings_in_one_line():
    for kwargs, words in (({"nodes": 0}, "nodes must be 1 to 99"), ({"nodes": 2, "subnet": "8.8.8.0/24"}, "not private"),
                          ({"nodes": 2, "subnet": "10.1.2.0/29"}, "too small"), ({"nodes": 2, "project": "A b"}, "project")):
        with pytest.raises(LabError, match=words) as info:
            ClusterSpec(**kwargs)
        assert "\n" not in str(info.value)


def test_bandwidth_and_latency_parse_and_bad_input_is_one_clear_line():
    assert [shaping.parse_rate(t) for t in ("100mbit", "1gbit", "10gbit", "1.5Gbit", "", None)] == [1e8, 1e9, 1e10,
                                                                                                  1.5e9, 0, 0]
    assert shaping.parse_delay("5ms") == pytest.approx(0.005) and shaping.parse_delay("200us") == pytest.approx(2e-4)
    for bad, words in (("fast", "cannot read bandwidth 'fast'"), ("0", "cannot read"), (0, "cannot read"),
                       ("0mbit", "must be positive"), ("-5mbit", "must be positive"), ("100", "unit"),
                       ("100mbps", "unit")):
        with pytest.raises(LabError, match=words) as info:
            shaping.parse_rate(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(LabError, match="latency"):
        shaping.parse_delay("soon")


def test_tc_commands_use_tbf_for_rate_and_netem_for_delay():
    assert shaping.tc_commands("eth0", shaping.Shape()) == []
    (rate,) = shaping.tc_commands("eth0", shaping.Shape.parse("100mbit"))
    assert rate[:8] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:"] and rate[8:11] == ["tbf", "rate", "100000000bit"]
    netem, tbf = shaping.tc_commands("veth0", shaping.Shape.parse("1gbit", "5ms"))
    assert "netem" in netem and "5000us" in netem and tbf[5:8] == ["parent", "1:", "handle"]
    assert str(shaping.Shape.parse("1gbit", "5ms")) == "1 Gbit/s, +5 ms" and str(shaping.Shape()) == "unshaped"


def test_cluster_command_says_in_one_line_when_docker_is_missing(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no docker on this PATH
    proc = subprocess.run([sys.executable, "-m", "labkit.cluster.cli", "up", "--nodes", "2", "--", "run", "hello"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "docker is not installed" in proc.stderr


# ---------------------------------------------------------------- measured against the alpha-beta model

def check_against_model(unshaped, shaped, gbit=0.1) -> str:
    """The shaped 4 MB all-reduce against alpha-beta at ``gbit`` (alpha fitted unshaped); a line to print."""
    from labkit.collectives.costmodel import CostModel, fit
    alpha = fit(unshaped).alpha
    predicted = float(CostModel.link(gbit, alpha).seconds("all_reduce", SIZE, 2))
    big = lambda t: float(t[t["bytes"] == SIZE]["seconds"].iloc[0])  # noqa: E731
    line = (f"4 MB all-reduce, 2 ranks: unshaped {big(unshaped) * 1e3:.1f} ms, at {gbit * 1e3:g} Mbit/s "
            f"{big(shaped) * 1e3:.1f} ms, predicted {predicted * 1e3:.1f} ms (alpha {alpha * 1e6:.0f} us): "
            f"{big(shaped) / predicted:.2f}x the prediction, {big(shaped) / big(unshaped):.0f}x unshaped")
    print(line)
    assert 0.75 <= big(shaped) / predicted <= 1.5, line
    assert big(shaped) >= 5 * big(unshaped), line
    return line


def _comm_table(folder):
    from labkit import results
    return results.load("comm", folder)


def test_shaped_all_reduce_between_namespaces_matches_the_model(tmp_path):
    """No Docker: two namespaces; gloo's 2-rank all-reduce sends n bytes per rank (2(N-1)/N * n), measured."""
    from labkit.cluster.netns import NetnsCluster
    try:
        cluster = NetnsCluster(2, tag=f"lk{uuid.uuid4().hex[:4]}")
    except LabError as exc:
        pytest.skip(str(exc))
    tables, sent = {}, {}
    with cluster:
        for bandwidth in ("", "100mbit"):
            folder = tmp_path / (bandwidth or "unshaped")
            env = {**os.environ, "GLOO_SOCKET_IFNAME": "eth0", "PYTHONPATH": str(ROOT), "LABKIT_RESULTS": str(folder)}
            cluster.shape(shaping.Shape.parse(bandwidth))
            before = cluster.tx_bytes(0)
            procs = [subprocess.Popen(cluster.torchrun(i, COMM, port=29545), cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
            outs = [p.communicate(timeout=180)[0] for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:]
            sent[bandwidth] = (cluster.tx_bytes(0) - before) / (3 + 5)  # warm-up + timed 4 MB all-reduces
            tables[bandwidth] = _comm_table(folder)
    for bandwidth, nbytes in sent.items():  # 2 ranks: n/2 reduce-scatter + n/2 all-gather (+ TCP/IP headers)
        assert SIZE <= nbytes <= 1.15 * SIZE, f"rank 0 sent {nbytes / SIZE:.2f} n per all-reduce"
    check_against_model(tables[""], tables["100mbit"])


def test_latency_uses_netem_or_says_in_one_line_that_this_kernel_has_none():
    from labkit.cluster.netns import NetnsCluster
    try:
        cluster = NetnsCluster(1, tag=f"lk{uuid.uuid4().hex[:4]}")
    except LabError as exc:
        pytest.skip(str(exc))
    with cluster:
        try:
            shown = shaping.apply("eth0", shaping.Shape.parse("100mbit", "5ms"), netns=cluster.names[0])
        except LabError as exc:  # this development machine's kernel: tbf and htb, no netem
            assert str(exc).startswith(shaping.NO_NETEM) and "\n" not in str(exc)
            assert "netem" not in shaping.show("eth0", cluster.names[0])  # nothing half-applied is left
        else:
            assert "netem" in shown and "tbf" in shown


# ---------------------------------------------------------------- Docker

@pytest.fixture(scope="module")
def node_image():
    """The node image, built (or found up to date) once; skips with a reason where Docker cannot run."""
    from labkit.cluster import docker, image
    try:
        docker.check_daemon()
        docker.compose_command()
    except LabError as exc:
        pytest.skip(str(exc))
    start = time.monotonic()
    if not image.up_to_date():
        image.build()
    print(f"node image ready in {time.monotonic() - start:.0f} s")
    return compose.IMAGE


class Cluster:
    """``python -m labkit.cluster.cli`` in the background with its own project, subnet and results folder."""

    def __init__(self, tmp_path):
        self.project, self.results = f"lktest{uuid.uuid4().hex[:6]}", tmp_path / "results"
        self.lines, self.proc = [], None

    def up(self, *args: str, action="run") -> "Cluster":
        cmd = [sys.executable, "-m", "labkit.cluster.cli", action, "--project", self.project, "--subnet",
               "172.28.58.0/24", "--results", str(self.results), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        return self

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def cli(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "labkit.cluster.cli", action, "--project", self.project],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)

    def clean(self) -> None:
        from labkit.cluster import docker
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        self.cli("down")
        assert docker.leftovers(self.project) == []


@pytest.fixture
def cluster(node_image, tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.clean()


def test_two_containers_run_a_data_parallel_job_and_down_leaves_nothing(cluster):
    from labkit import results
    from labkit.cluster import docker
    cluster.up("--nodes", "2", "--", "run", "dp", "--epochs", "1", "--train-subset", "2000", "--test-subset", "500",
               action="up")
    assert cluster.finish(timeout=240) == 0, cluster.output
    assert "node01  172.28.58.11  rank 0" in cluster.output and "node02 | " in cluster.output
    assert "job finished on 2 node(s)" in cluster.output
    table = results.load("dp", cluster.results)
    assert len(table) >= 1 and set(table["nodes"]) == {2}
    status = cluster.cli("status").stdout
    assert "node01  finished" in status and "node02  finished" in status
    down = cluster.cli("down")
    assert down.returncode == 0 and "no container, network or volume left" in down.stdout, down.stderr
    assert docker.leftovers(cluster.project) == []


def test_shaped_all_reduce_between_containers_matches_the_model(cluster, tmp_path):
    tables = {}
    for bandwidth in ("", "100mbit"):
        cluster.results = tmp_path / (bandwidth or "unshaped")
        cluster.up("--nodes", "2", *(["--bandwidth", bandwidth] if bandwidth else []), "--", *COMM)
        assert cluster.finish(timeout=240) == 0, cluster.output
        tables[bandwidth] = _comm_table(cluster.results)
    assert "link 100 Mbit/s" in cluster.output
    check_against_model(tables[""], tables["100mbit"])


def test_killing_a_node_fails_the_job_naming_it_within_60_s_and_leaves_nothing(cluster):
    from labkit.cluster import docker
    cluster.up("--nodes", "2", "--grace", "10", "--", "run", "dp", "--epochs", "3", action="up")
    end = time.monotonic() + 180
    while "[rank 0] epoch 1" not in cluster.output:
        assert time.monotonic() < end and cluster.proc.poll() is None, cluster.output
        time.sleep(0.2)
    docker.docker("kill", f"{cluster.project}-node02")
    killed = time.monotonic()
    assert cluster.finish(timeout=90) != 0
    assert time.monotonic() - killed < 60, cluster.output
    assert "error: node02 (172.28.58.12) stopped with exit code 137 (killed)" in cluster.output, cluster.output
    assert "[172.28.58.12]" in cluster.output  # node01's own error names the peer it lost
    assert "removed: no container, network or volume left" in cluster.output
    assert docker.leftovers(cluster.project) == []


# ---------------------------------------------------------------- notebook 06's measurements (labkit.cluster.measure)

def test_lenet5_on_2_nodes_is_slower_at_100_mbit_than_unshaped_in_the_same_run():
    """The issue's must-show: one run, 1 node then 2 nodes unshaped and at 100 Mbit/s, every epoch apart."""
    from labkit.cluster import jobs, measure
    backend, why = jobs.available()
    if backend is None:
        pytest.skip(why)
    speed = measure.dp_speedup(["lenet5"], [1, 2], ["", "100mbit"], epochs=3, steps=40, backend=backend, progress=False)
    at = speed[speed["nodes"] == 2].groupby("rate")["speedup"]
    line = (f"lenet5, 2 {backend} nodes, speed-up per epoch: unshaped {at.get_group('unshaped').round(2).tolist()}, "
            f"100 Mbit/s {at.get_group('100 Mbit/s').round(2).tolist()}")
    print(line)
    assert at.max()["100 Mbit/s"] < at.min()["unshaped"], line


def test_the_docker_backend_measures_collectives_under_shaping_and_leaves_nothing(node_image):
    from labkit.cluster import docker, jobs, measure
    from labkit.collectives.costmodel import fit
    tables = {}
    with jobs.Nodes("docker", 2) as nodes:
        for rate in ("", "100mbit"):
            tables[rate] = nodes.run(2, rate, COMM, "comm").assign(rate=measure.label(rate))
    assert docker.leftovers(nodes.project) == []
    shaped = fit(tables["100mbit"])
    assert 70 <= shaped.gbit * 1e3 <= 110, f"fitted {shaped.gbit * 1e3:.0f} Mbit/s under 100 Mbit/s shaping"
    check_against_model(tables[""], tables["100mbit"])
