"""``labkit cluster build|up|run|status|down``: the course's docker-compose cluster, one container per node.

    labkit cluster up --nodes 2 --bandwidth 100mbit -- run dp --epochs 1
    labkit cluster down

``up`` builds the image if needed, writes .cluster/<project>/docker-compose.yml, starts the nodes, prints
where each is and their output, and waits for the job: on success the stopped nodes stay for ``status``
until ``down``; on a failed node or Ctrl-C everything is removed. ``run`` is ``up`` and then ``down``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from ..errors import LabError
from ..paths import REPO_ROOT, results_dir
from . import docker, follow, image
from .compose import IMAGE, SUBNET, ClusterSpec

CLUSTERS = REPO_ROOT / ".cluster"  # one folder per project, git-ignored


def build_parser() -> argparse.ArgumentParser:
    """The cluster subcommands and their flags (nothing heavy imported)."""
    parser = argparse.ArgumentParser(prog="labkit cluster", description=__doc__.split("\n")[0].replace("``", ""))
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build the node image (docker/Dockerfile)")
    b.add_argument("--base", default="", help="base image (default: python:3.11-slim, else labkit-base:bookworm)")
    b.add_argument("--wheels", default="", help="folder with the torch CPU wheel (default: $PIP_FIND_LINKS)")
    b.add_argument("--cert", default="", help="CA bundle pip must trust (default: $PIP_CERT)")
    for name, what in (("up", "start N nodes and follow the job; keep them after success until `down`"),
                       ("run", "`up`, then `down` however the job ends")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--nodes", type=int, default=2, help="number of node containers (default: 2)")
        p.add_argument("--bandwidth", default="", help="each node's link rate, e.g. 100mbit, 1gbit, 10gbit")
        p.add_argument("--latency", default="", help="added one-way delay per node, e.g. 5ms (needs netem)")
        p.add_argument("--subnet", default=SUBNET, help=f"the cluster's private network (default: {SUBNET})")
        p.add_argument("--results", default="", help="host folder for results (default: the lab's results/)")
        p.add_argument("--grace", type=float, default=10.0, help="seconds the others get after a node fails")
    for p in [sub.choices[n] for n in ("up", "run")] + [sub.add_parser("status", help="the nodes and their state"),
                                                        sub.add_parser("down", help="remove every container, "
                                                                       "network and volume of the cluster")]:
        p.add_argument("--project", default="labkit-cluster", help="cluster name (default: labkit-cluster)")
    sub.choices["build"].add_argument("--image", default=IMAGE, help=f"tag to build (default: {IMAGE})")
    for name in ("up", "run"):
        sub.choices[name].add_argument("--image", default=IMAGE, help=f"node image (default: {IMAGE})")
    return parser


def _file(project: str) -> Path:
    """Where the project's compose file lives (.cluster/<project>/docker-compose.yml)."""
    return CLUSTERS / project / "docker-compose.yml"


def _host_user() -> str:
    """'UID:GID' of the calling user on Linux, so files in results/ are theirs; '' as root or elsewhere."""
    return f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") and os.getuid() != 0 else ""


def _down(project: str, log=print) -> None:
    """Tear the cluster down and say so."""
    docker.down(str(_file(project)), project)
    shutil.rmtree(_file(project).parent, ignore_errors=True)
    if CLUSTERS.is_dir() and not any(CLUSTERS.iterdir()):
        CLUSTERS.rmdir()
    log(f"cluster {project} removed: no container, network or volume left")


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a closing terminal, a CI timeout) cleans up like Ctrl-C."""
    def handler(signum, frame):
        """Turn SIGTERM into the KeyboardInterrupt that ``up`` cleans up after."""
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def up(args: argparse.Namespace, job: list[str], log=print) -> int:
    """Start the cluster, follow the job; tear down on failure or Ctrl-C (and always for ``run``)."""
    spec = ClusterSpec(nodes=args.nodes, args=tuple(job), bandwidth=args.bandwidth, latency=args.latency,
                       subnet=args.subnet, project=args.project, image=args.image,
                       results=str(Path(args.results or results_dir()).resolve()),
                       code=str(REPO_ROOT / "labkit"), user=_host_user())
    docker.check_daemon()
    docker.compose_command()
    if docker.states(spec.project):
        raise LabError(f"cluster {spec.project} exists already: `labkit cluster down` first "
                       "(or --project NAME for a second one).")
    if not image.up_to_date(spec.image):
        log(f"{spec.image} is missing or older than requirements.lock / pyproject.toml / docker/Dockerfile")
        image.build(spec.image, log=log)
    file = follow.write(spec, CLUSTERS / spec.project)
    log(f"cluster {spec.project}: {spec.nodes} node(s) on {spec.subnet}, links {spec.shape}; "
        f"job: labkit {' '.join(spec.args)}; compose file {file}")
    _interrupt_on_sigterm()
    try:
        follow.start(spec, file, log)
        states = follow.follow(spec, file, grace=args.grace, log=log)
        log(f"job finished on {len(states)} node(s); results in {spec.results}")
    except (LabError, KeyboardInterrupt) as exc:
        log("interrupted: removing the cluster" if isinstance(exc, KeyboardInterrupt) else f"error: {exc}")
        _down(spec.project, log)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    if args.action == "run":
        _down(spec.project, log)
    else:
        log("the stopped nodes stay for `labkit cluster status`; `labkit cluster down` removes them")
    return 0


def status(project: str, log=print) -> int:
    """One line per node: state and its last line of output."""
    states = docker.states(project)
    if not states:
        log(f"no cluster {project} (nothing to show)")
        return 0
    for name, s in states.items():
        last = docker.docker("logs", "--tail", "1", f"{project}-{name}", check=False).strip()
        log(f"{name}  {s.words():<24} {last[:100]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``labkit cluster ...``; a LabError is one line (``error: ...``) and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(job) - ("--" in argv)])
    try:
        if args.action == "build":
            docker.check_daemon()
            image.build(args.image, base=args.base, wheels=args.wheels, cert=args.cert)
            return 0
        if args.action in ("up", "run"):
            return up(args, job)
        docker.check_daemon()
        if args.action == "status":
            return status(args.project)
        _down(args.project)
        return 0
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
