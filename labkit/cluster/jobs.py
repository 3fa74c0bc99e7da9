"""Run a ``labkit run ...`` job on N emulated nodes behind a shaped link, and get its result table back.

Two backends emulate the nodes, with the same ``tc`` shaping (``shaping``: tbf on each node's eth0):

* ``netns``: one network namespace per node (``NetnsCluster``; Linux and root). Preferred when it works:
  nothing to build and nothing to start but the rank processes. Measured here, notebook 06's quick run
  takes 27 s on namespaces and 47 s on Docker with its image already built; Docker's first use builds a
  1.6 GB image (minutes), and each job starts containers and a torchrun agent per node. Each rank is
  ``python -m labkit run ...`` with the env:// variables torchrun would set (RANK, WORLD_SIZE,
  MASTER_ADDR, MASTER_PORT): the same worker code, without torchrun's agent (a second torch import per
  node on a 2-core machine, and a slower teardown).
* ``docker``: ``labkit cluster run`` (one container per node under torchrun, docker compose), for
  Docker Desktop (macOS, Windows) and Linux without root.

``$LABKIT_CLUSTER_BACKEND`` (auto, netns, docker or none) chooses; ``none`` simulates a machine with neither.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pandas as pd

from .. import results
from ..errors import LabError
from ..paths import REPO_ROOT
from . import shaping

ENV = "LABKIT_CLUSTER_BACKEND"
BACKENDS = ("netns", "docker")       # the order ``auto`` tries them in (see the module doc)
SUBNET = "172.28.59.0/24"            # the Docker backend's own network, apart from `labkit cluster`'s default
TIMEOUT = 900.0                      # seconds one job may take


def _check_netns() -> None:
    """Raise a LabError unless namespaces can be made and shaped here (tried on one throw-away node)."""
    from .netns import NetnsCluster
    with NetnsCluster(1) as probe:
        shaping.apply("eth0", shaping.Shape.parse("100mbit"), netns=probe.names[0])


def _check_docker() -> None:
    """Raise a LabError unless the Docker daemon answers and compose is installed."""
    from . import docker
    docker.check_daemon()
    docker.compose_command()


def available(backend: str | None = None) -> tuple[str | None, str]:
    """(backend, "") for the first of ``backend`` that works here, or (None, a one-line reason) when none does.
    ``backend`` None or "auto" defers to $LABKIT_CLUSTER_BACKEND (so tests can switch a notebook's off)."""
    asked = (backend or "auto").strip().lower()
    choice = (os.environ.get(ENV) or "auto").strip().lower() if asked == "auto" else asked
    if choice == "none":
        return None, f"{ENV}=none: measuring on emulated nodes is switched off"
    if choice not in ("auto", *BACKENDS):
        raise LabError(f"unknown cluster backend {choice!r}; choose auto, {', '.join(BACKENDS)} or none.")
    reasons = []
    for name in BACKENDS if choice == "auto" else (choice,):
        try:
            {"netns": _check_netns, "docker": _check_docker}[name]()
            return name, ""
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            reasons.append(f"{name}: {str(exc).rstrip('.')}")
    return None, "no emulated cluster here (" + "; ".join(reasons) + ")"


def _tail(text: str, lines: int = 6) -> str:
    """The last few non-empty lines of a job's output, for an error message."""
    kept = [line for line in text.splitlines() if line.strip() and "hostname of the client socket" not in line]
    return "\n".join(kept[-lines:])


class Nodes:
    """Up to ``nodes`` emulated nodes for a series of jobs (a context manager: nothing is left after it)."""

    def __init__(self, backend: str, nodes: int):
        """Nothing starts yet; ``backend`` is "netns" or "docker" (see ``available``)."""
        if backend not in BACKENDS:
            raise LabError(f"unknown cluster backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.backend, self.nodes, self.cluster, self.jobs = backend, nodes, None, 0
        self.project = f"lkmeasure{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> "Nodes":
        """Create the namespaces (netns); Docker's containers come and go with each job."""
        if self.backend == "netns":
            from .netns import NetnsCluster
            self.cluster = NetnsCluster(self.nodes).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        """Remove the namespaces and every process in them (Docker: each job removed its own)."""
        if self.cluster is not None:
            self.cluster.destroy()

    def run(self, nodes: int, rate: str, args: list[str], table: str) -> pd.DataFrame:
        """``labkit <args>`` on ``nodes`` nodes whose links are shaped to ``rate`` ("" = unshaped); the
        rows rank 0 wrote to ``<table>.csv``. A LabError with the end of the output if the job fails."""
        if not 1 <= nodes <= self.nodes:
            raise LabError(f"this cluster has {self.nodes} node(s); a job asked for {nodes}.")
        self.jobs += 1
        with tempfile.TemporaryDirectory(prefix="labkit-job-") as folder:
            ok, output = (self._netns if self.backend == "netns" else self._docker)(nodes, rate, args, folder)
            if not ok:
                raise LabError(f"the job `labkit {' '.join(args)}` on {nodes} {self.backend} node(s) at "
                               f"{rate or 'unshaped'} failed:\n{_tail(output)}")
            rows = results.load(table, Path(folder))
        if rows.empty:
            raise LabError(f"the job `labkit {' '.join(args)}` wrote no {table}.csv (rank 0 writes the results).")
        return rows

    def _netns(self, nodes: int, rate: str, args: list[str], folder: str) -> tuple[bool, str]:
        """One rank process per namespace, env:// rendezvous at node 0; (all exited 0, rank 0's output)."""
        self.cluster.shape(shaping.Shape.parse(rate))
        port = str(29500 + self.jobs % 500)   # a fresh port per job: no wait for the last one's TIME_WAIT
        base = {**os.environ, "GLOO_SOCKET_IFNAME": "eth0", "LABKIT_RESULTS": folder, "WORLD_SIZE": str(nodes),
                "MASTER_ADDR": self.cluster.addresses[0], "MASTER_PORT": port, "LOCAL_RANK": "0",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        procs = [subprocess.Popen(self.cluster.command(i, [sys.executable, "-m", "labkit", *args]), cwd=REPO_ROOT,
                                  env={**base, "RANK": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for i in range(nodes)]
        try:
            outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
        except subprocess.TimeoutExpired:
            outputs = [f"timed out after {TIMEOUT:.0f} s"]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        failed = [i for i, p in enumerate(procs) if p.wait() != 0]
        return not failed, outputs[failed[0] if failed and failed[0] < len(outputs) else 0]

    def _docker(self, nodes: int, rate: str, args: list[str], folder: str) -> tuple[bool, str]:
        """``labkit cluster run`` (torchrun in one container per node; removed however the job ends)."""
        cmd = [sys.executable, "-m", "labkit.cluster.cli", "run", "--nodes", str(nodes), "--project", self.project,
               "--subnet", SUBNET, "--results", folder, *(["--bandwidth", rate] if rate else []), "--", *args]
        try:
            proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            subprocess.run([sys.executable, "-m", "labkit.cluster.cli", "down", "--project", self.project],
                           cwd=REPO_ROOT, capture_output=True, timeout=300)
            return False, f"timed out after {TIMEOUT:.0f} s"
        return proc.returncode == 0, proc.stdout + proc.stderr
