"""Bring a cluster up and follow its job: every node's output as it comes, and how each node ends.

The job ends when every node has finished (success) or when one node stops with an error: that node
is named (with its address and exit code), the others get ``grace`` seconds to report their side of
it, and the caller tears the cluster down.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from ..errors import LabError
from . import docker
from .compose import ClusterSpec, dump


def write(spec: ClusterSpec, folder: Path) -> Path:
    """Write the compose file into ``folder`` (created); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker-compose.yml"
    path.write_text(dump(spec))
    return path


def start(spec: ClusterSpec, file: Path, log=print) -> None:
    """Create the network and start every node (detached); LabError with compose's reason if it cannot."""
    Path(spec.results).mkdir(parents=True, exist_ok=True)
    proc = docker.compose(str(file), spec.project, "up", "-d", "--no-build", "--force-recreate")
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise LabError(f"could not start the cluster: {lines[-1] if lines else 'compose failed'}")
    for name, address in spec.addresses().items():
        role = f"rank {int(name[4:]) - 1}" + (", master (rendezvous :29500)" if name == "node01" else "")
        log(f"{name}  {address}  {role}  container {spec.container(name)}")


def _stream(spec: ClusterSpec, file: Path, log) -> subprocess.Popen:
    """Print the nodes' output as ``node01 | ...`` lines while the job runs (a background thread)."""
    cmd = [*docker.compose_command(), "-p", spec.project, "-f", str(file), "logs", "-f", "--no-color"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prefix = f"{spec.project}-"

    def pump():
        """Copy compose's log lines to ``log`` with the node's short name in front."""
        for line in proc.stdout:
            name, sep, rest = line.partition("|")
            name = name.strip().removeprefix(prefix).split("_")[0].split("-")[-1]  # v1 and v2 prefixes
            if sep:
                log(f"{name} | {rest[1:].rstrip()}")
            elif not line.startswith("Attaching to"):
                log(line.rstrip())
    threading.Thread(target=pump, daemon=True).start()
    return proc


def _reason(spec: ClusterSpec, node: str) -> str:
    """': <the node's own error line>' when its last output has one (e.g. no netem), else ''."""
    tail = subprocess.run(["docker", "logs", "--tail", "20", spec.container(node)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30).stdout
    errors = [line for line in tail.splitlines() if line.startswith("error: ")]
    return f": {errors[-1][len('error: '):]}" if errors else ""


def follow(spec: ClusterSpec, file: Path, grace: float = 10.0, poll: float = 0.5, log=print) -> dict:
    """Follow the job to its end; {node: State}. LabError naming the first node that failed."""
    logs, first, began = _stream(spec, file, log), None, time.monotonic()
    try:
        while True:
            states = docker.states(spec.project)
            if not states:
                raise LabError(f"the containers of cluster {spec.project} are gone (removed from outside?)")
            failed = sorted((s for s in states.values() if s.failed), key=lambda s: s.finished)
            if first is None and failed:
                first, lost_at = failed[0], time.monotonic()
            if first is not None and (time.monotonic() - lost_at > grace or
                                      all(s.status in ("exited", "dead") for s in states.values())):
                break
            if states and all(s.status in ("exited", "dead") for s in states.values()):
                break
            time.sleep(poll)
    finally:
        time.sleep(0.3)  # the last lines
        logs.terminate()
        logs.wait()
    if first is not None:
        address = spec.addresses().get(first.service, "?")
        others = ", ".join(f"{s.service} {s.words()}" for s in states.values() if s.service != first.service)
        raise LabError(f"{first.service} ({address}) stopped with {first.words()} {lost_at - began:.1f} s into "
                       f"the job" + (f"; then {others}" if others else "") + _reason(spec, first.service))
    return states
