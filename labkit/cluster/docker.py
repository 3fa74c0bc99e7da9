"""Talking to Docker: is it there, which compose command, the cluster's containers, and a verified teardown.

Works with ``docker compose`` (v2) and Debian's ``docker-compose`` 1.29, whichever is installed. Every
container, network and volume of a cluster carries the label ``com.docker.compose.project=<project>``,
which is how ``leftovers`` finds what a teardown missed.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from ..errors import LabError

LABEL = "com.docker.compose.project"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run ``docker ARGS`` and return its output; a LabError with docker's last line if it fails."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise LabError(f"`docker {' '.join(args[:3])}` failed: {last}")
    return proc.stdout


def check_daemon() -> str:
    """The daemon's version; a one-line LabError if docker is missing or its daemon is not running."""
    if shutil.which("docker") is None:
        raise LabError("docker is not installed: install Docker Desktop (macOS, Windows) or docker.io and "
                       "docker-compose (Debian/Ubuntu), or run the cluster without Docker (README).")
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode or not proc.stdout.strip():
        raise LabError("the Docker daemon is not running or not reachable (start Docker Desktop, or "
                       "`sudo systemctl start docker`; without root, join the docker group).")
    return proc.stdout.strip()


@lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...]:
    """('docker', 'compose') when Compose v2 is installed, else ('docker-compose',); LabError if neither."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise LabError("neither `docker compose` nor `docker-compose` is installed (Debian: apt-get install "
                   "docker-compose; Docker Desktop has both).")


def compose(file: str, project: str, *args: str, capture: bool = True, timeout: float = 300):
    """Run a compose command on the cluster's file; the CompletedProcess (output captured unless told)."""
    cmd = [*compose_command(), "-p", project, "-f", file, *args]
    return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)


@dataclass(frozen=True)
class State:
    """One container: its compose service, whether it runs, and its exit code once it stopped."""

    service: str
    status: str
    exit_code: int
    finished: float = 0.0  # when it stopped (Unix seconds), 0 while it runs

    @property
    def failed(self) -> bool:
        """Stopped with a non-zero exit code."""
        return self.status in ("exited", "dead") and self.exit_code != 0

    def words(self) -> str:
        """'running', 'finished', or 'exit code 137 (killed)'."""
        if self.status not in ("exited", "dead"):
            return self.status
        if self.exit_code == 0:
            return "finished"
        return f"exit code {self.exit_code}" + (" (killed)" if self.exit_code == 137 else "")


def states(project: str) -> dict[str, State]:
    """{service: State} of every container of the project, running or not."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={project}").split()
    if not ids:
        return {}
    fmt = ('{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} '
           '{{.State.FinishedAt}}')
    found = {}
    for line in docker("inspect", "--format", fmt, *ids, check=False).splitlines():
        service, status, code, finished = line.split()
        found[service] = State(service, status, int(code), _seconds(finished) if status in ("exited", "dead") else 0.0)
    return dict(sorted(found.items()))


def _seconds(stamp: str) -> float:
    """Docker's '2026-12-03T04:42:38.123456789Z' -> Unix seconds."""
    from datetime import datetime
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))


def leftovers(project: str) -> list[str]:
    """What is left of the project: 'container NAME', 'network NAME', 'volume NAME' (empty when clean)."""
    found = []
    for kind, fmt in (("container", "{{.Names}}"), ("network", "{{.Name}}"), ("volume", "{{.Name}}")):
        listing = ("ps", "-a") if kind == "container" else (kind, "ls")
        out = docker(*listing, "--filter", f"label={LABEL}={project}", "--format", fmt, check=False)
        if kind == "network":  # compose v1 does not label the networks it creates: go by name too
            out += docker("network", "ls", "--filter", f"name=^{project}-net$", "--format", fmt, check=False)
        found += sorted({f"{kind} {name}" for name in out.split()})
    return found


def down(file: str, project: str) -> None:
    """Remove every container, network and volume of the project, and check that nothing is left."""
    compose(file, project, "down", "-v", "--remove-orphans", "-t", "3", timeout=180)
    for item in leftovers(project):  # what compose missed (or the file was gone): remove it directly
        kind, name = item.split(" ", 1)
        docker(*(("rm", "-f", "-v") if kind == "container" else (kind, "rm")), name, check=False)
    still = leftovers(project)
    if still:
        raise LabError(f"could not remove {', '.join(still)}; remove them with docker rm / network rm / volume rm.")
