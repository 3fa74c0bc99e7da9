"""A cluster without Docker (Linux, root): one network namespace per node, joined by a bridge.

Each node namespace has an ``eth0`` at .11, .12, ... of a private subnet, like a container of the
compose cluster, and its links can be shaped the same way (``shaping``, egress of each node's eth0).
The bridge lives in a namespace of its own, so the host's network is never touched.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import uuid

from ..errors import LabError
from . import shaping
from .compose import FIRST_HOST, PORT

SUBNET = "10.45.0.0/24"


def _ip(*args: str) -> None:
    """``ip ARGS``; a LabError with its message if it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")


class NetnsCluster:
    """``nodes`` namespaces ``<tag>n0``, ``<tag>n1``, ... (a context manager: created on enter, removed on exit)."""

    def __init__(self, nodes: int, subnet: str = SUBNET, tag: str = ""):
        """Names and addresses only; a LabError unless this is Linux, as root, with ``ip``."""
        if os.name != "posix" or not sys.platform.startswith("linux") or os.geteuid() != 0:
            raise LabError("network namespaces need Linux and root; use the Docker cluster (labkit cluster up).")
        if shutil.which("ip") is None:
            raise LabError("the `ip` command is not installed (Debian/Ubuntu: apt-get install iproute2).")
        net = ipaddress.IPv4Network(subnet)
        self.tag = tag or f"lk{uuid.uuid4().hex[:4]}"
        self.switch = f"{self.tag}sw"
        self.names = [f"{self.tag}n{i}" for i in range(nodes)]
        self.addresses = [str(net.network_address + FIRST_HOST + i) for i in range(nodes)]
        self.prefix = net.prefixlen

    def __enter__(self) -> "NetnsCluster":
        """Create the namespaces (a half-built cluster is removed again)."""
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        """Remove everything, however the block ended."""
        self.destroy()

    def create(self) -> None:
        """The switch namespace with bridge br0, and every node joined to it by a veth pair."""
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.names, self.addresses)):
            _ip("netns", "add", ns)
            inner, outer = f"{self.tag}a{i}", f"{self.tag}b{i}"
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "netns", self.switch)
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{address}/{self.prefix}", "dev", "eth0")
            for dev in ("eth0", "lo"):
                _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")

    def shape(self, shape: shaping.Shape) -> None:
        """Give every node's eth0 this shape (unshaped: back to the default queue)."""
        for ns in self.names:
            if shape:
                shaping.apply("eth0", shape, netns=ns)
            else:
                shaping.clear("eth0", netns=ns)

    def command(self, index: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside node ``index``'s namespace."""
        return ["ip", "netns", "exec", self.names[index], *cmd]

    def torchrun(self, index: int, labkit_args: list[str], port: int = PORT) -> list[str]:
        """Node ``index``'s torchrun command for a labkit command line (node 0 is the master)."""
        return self.command(index, [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(self.names)),
                                    "--nproc-per-node", "1", "--node-rank", str(index), "--master-addr",
                                    self.addresses[0], "--master-port", str(port), "-m", "labkit", *labkit_args])

    def tx_bytes(self, index: int) -> int:
        """Bytes node ``index`` has sent on its eth0 so far."""
        out = subprocess.run(self.command(index, ["cat", "/sys/class/net/eth0/statistics/tx_bytes"]),
                             capture_output=True, text=True).stdout
        return int(out.strip() or 0)

    def destroy(self) -> None:
        """Kill every process in the namespaces and delete them (which removes the veth pairs and bridge)."""
        for ns in self.names + [self.switch]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
