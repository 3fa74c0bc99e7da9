"""A cluster node's first step inside its container: shape eth0, drop root, then become the job.

``python -m labkit.cluster.node --name node01 [--bandwidth B] [--latency L] [--user UID:GID] -- torchrun ...``
prints one line saying where the node is and how its link is shaped, then replaces itself with the
command after ``--`` (so the container's exit status is the job's). A shaping failure exits with status 3.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys

from ..errors import LabError
from . import shaping

DEV = "eth0"


def _address(dev: str) -> str:
    """This node's IPv4 address on ``dev`` (from ``ip``), for the start-up line."""
    import subprocess
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev], capture_output=True, text=True).stdout
    return out.split()[3].split("/")[0] if out.split()[3:] else "?"


def _drop_root(user: str) -> None:
    """Run the job as UID:GID (the host user who owns results/), after tc needed root."""
    uid, gid = (int(v) for v in user.split(":"))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def main(argv: list[str] | None = None) -> int:
    """Shape, drop privileges, exec the job; a LabError is one line and exit status 3."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="labkit.cluster.node")
    parser.add_argument("--name", default=socket.gethostname())
    parser.add_argument("--bandwidth", default="")
    parser.add_argument("--latency", default="")
    parser.add_argument("--user", default="")
    args = parser.parse_args(argv[:len(argv) - len(job) - ("--" in argv)])
    try:
        shape = shaping.Shape.parse(args.bandwidth, args.latency)
        shaping.apply(DEV, shape)
        if not job:
            raise LabError("no command after --; expected torchrun ... -m labkit run KIND ...")
        print(f"{args.name}: {DEV} {_address(DEV)}, link {shape}; starting: {' '.join(job)}", flush=True)
        if args.user and os.getuid() == 0:
            _drop_root(args.user)
    except LabError as exc:
        print(f"error: {args.name}: {exc}", file=sys.stderr, flush=True)
        return 3
    os.execvp(job[0], job)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
