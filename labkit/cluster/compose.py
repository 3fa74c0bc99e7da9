"""The cluster as a docker-compose file: services node01..nodeNN on a private network of their own.

Every node runs the same labkit command under torchrun (static rendezvous, node01 the master), after
shaping its link; rank 0 writes the results into the host's results folder, mounted at /lab/results.
The file uses compose format 2.4, which both ``docker compose`` and Debian's ``docker-compose`` 1.29 read.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import LabError
from .shaping import Shape

SUBNET = "172.28.57.0/24"  # private (RFC 1918) and unusual, so it rarely clashes with a network already there
FIRST_HOST = 11            # node01 is .11, node02 .12, ...
PORT = 29500
IMAGE = "labkit-node:latest"
MAX_NODES = 99


def node_name(index: int) -> str:
    """0 -> 'node01' (the course's names)."""
    return f"node{index + 1:02d}"


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster of ``nodes`` containers running ``args`` (a labkit command line, e.g. run dp --epochs 1)."""

    nodes: int
    args: tuple = ("run", "hello")
    bandwidth: str = ""
    latency: str = ""
    subnet: str = SUBNET
    project: str = "labkit-cluster"
    image: str = IMAGE
    results: str = "results"          # host folder, mounted at /lab/results
    code: str = ""                    # host labkit/ folder mounted over the image's (the checkout's code), or ""
    user: str = ""                    # "UID:GID" the job runs as after shaping (so results/ stays yours); "" = root
    shape: Shape = field(init=False, repr=False)

    def __post_init__(self):
        """Check every setting now, before Docker is asked for anything."""
        if not 1 <= self.nodes <= MAX_NODES:
            raise LabError(f"nodes must be 1 to {MAX_NODES}, got {self.nodes}.")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.project):
            raise LabError(f"project name {self.project!r} must be lower-case letters, digits, - and _.")
        object.__setattr__(self, "args", tuple(self.args) or ("run", "hello"))
        object.__setattr__(self, "shape", Shape.parse(self.bandwidth, self.latency))
        self.addresses()  # checks the subnet

    def network(self) -> ipaddress.IPv4Network:
        """The cluster's subnet; a LabError unless it is private and holds every node."""
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError:
            raise LabError(f"subnet {self.subnet!r} is not an IPv4 network like {SUBNET}.") from None
        if not net.is_private:
            raise LabError(f"subnet {self.subnet} is not private; use one of 10/8, 172.16/12, 192.168/16.")
        if net.num_addresses < FIRST_HOST + self.nodes + 1:
            raise LabError(f"subnet {self.subnet} is too small for {self.nodes} nodes from .{FIRST_HOST} on.")
        return net

    def addresses(self) -> dict[str, str]:
        """{'node01': '172.28.57.11', ...}"""
        net = self.network()
        return {node_name(i): str(net.network_address + FIRST_HOST + i) for i in range(self.nodes)}

    def container(self, node: str) -> str:
        """The container's name, e.g. 'labkit-cluster-node01' (the same under compose v1 and v2)."""
        return f"{self.project}-{node}"


def node_command(spec: ClusterSpec, index: int) -> list[str]:
    """What node ``index`` runs: shape its link, then torchrun (node01 the master) with the labkit command."""
    shaping = ["--bandwidth", spec.bandwidth] * bool(spec.bandwidth) + ["--latency", spec.latency] * bool(spec.latency)
    user = ["--user", spec.user] if spec.user else []
    torchrun = ["torchrun", "--nnodes", str(spec.nodes), "--nproc-per-node", "1", "--node-rank", str(index),
                "--master-addr", node_name(0), "--master-port", str(PORT), "-m", "labkit", *spec.args]
    return ["python", "-m", "labkit.cluster.node", "--name", node_name(index), *shaping, *user, "--", *torchrun]


def render(spec: ClusterSpec) -> dict:
    """The compose file as a dict (see ``dump``)."""
    volumes = [f"{spec.results}:/lab/results"] + ([f"{spec.code}:/lab/labkit:ro"] if spec.code else [])
    services = {}
    for i, (name, address) in enumerate(spec.addresses().items()):
        services[name] = {
            "image": spec.image, "container_name": spec.container(name), "hostname": name,
            "cap_add": ["NET_ADMIN"], "networks": {"cluster": {"ipv4_address": address}},
            "volumes": list(volumes), "command": node_command(spec, i),
            "environment": {"GLOO_SOCKET_IFNAME": "eth0", "TP_SOCKET_IFNAME": "eth0",
                            "LABKIT_RESULTS": "/lab/results", "PYTHONDONTWRITEBYTECODE": "1"}}
    network = {"name": f"{spec.project}-net", "driver": "bridge", "ipam": {"config": [{"subnet": spec.subnet}]}}
    return {"version": "2.4", "services": services, "networks": {"cluster": network}}


def dump(spec: ClusterSpec) -> str:
    """The compose file's text (YAML), with a header saying what made it."""
    import yaml
    head = (f"# Written by `labkit cluster` for {spec.nodes} node(s) on {spec.subnet}, links {spec.shape}.\n"
            f"# Job: labkit {' '.join(spec.args)}\n")
    return head + yaml.safe_dump(render(spec), sort_keys=False, default_flow_style=False, width=120)
