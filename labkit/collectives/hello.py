"""``labkit run hello``: check a cluster. Every rank says where it runs; all-reduce and all-gather are verified.

Run it locally (``labkit run hello --nodes 4``) or on several machines under torchrun; with
``--rounds``/``--interval`` it keeps the nodes talking, which is how the failure tests stop a node mid-job.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from ..errors import LabError
from ..runtime.context import rank, report, world_size
from ..runtime.launcher import launch


@dataclass(frozen=True)
class HelloConfig:
    """Check the cluster: every node prints its host and rank; all-reduce and all-gather are verified."""

    nodes: int = 2
    rounds: int = field(default=1, metadata={"help": "all-reduce rounds (many rounds = a long-running job)"})
    interval: float = field(default=0.0, metadata={"help": "seconds to wait between rounds"})
    threads: int = 1
    timeout: float = field(default=60.0, metadata={"help": "seconds before a silent peer counts as failed"})

    def __post_init__(self):
        if self.nodes < 1 or self.rounds < 1 or self.threads < 1:
            raise LabError("nodes, rounds and threads must be at least 1.")
        if self.interval < 0 or self.timeout <= 0:
            raise LabError("interval must be 0 or more and timeout positive (seconds).")


def where_am_i() -> str:
    """Host name plus the address gloo uses (GLOO_SOCKET_IFNAME), e.g. ``vm 10.44.0.1@veth0``."""
    import psutil
    interface = os.environ.get("GLOO_SOCKET_IFNAME", "")
    addresses = [a.address for a in psutil.net_if_addrs().get(interface, []) if a.family == socket.AF_INET]
    return socket.gethostname() + (f" {addresses[0]}@{interface}" if addresses else "")


def hello_worker(rounds: int, interval: float) -> dict:
    """One rank: introduce itself, then ``rounds`` verified all-reduces, then gather everyone's address."""
    import torch
    import torch.distributed as dist
    me, n = rank(), world_size()
    print(f"rank {me}/{n} on {where_am_i()} (pid {os.getpid()})", flush=True)
    expected = n * (n + 1) / 2
    for step in range(1, rounds + 1):
        total = torch.full((4,), float(me + 1))
        dist.all_reduce(total)
        if not torch.all(total == expected):
            raise RuntimeError(f"all-reduce gave {total.tolist()}, expected {expected} everywhere")
        report(step=step, total=rounds)
        time.sleep(interval)
    places = [None] * n
    dist.all_gather_object(places, where_am_i())
    return {"rank": me, "world": n, "place": places[me], "peers": places, "sum": expected}


def run(cfg: HelloConfig, progress: bool = True, save: bool = True, log=print) -> list[dict]:
    """Launch the check (or, under torchrun, be one rank of it) and print a summary."""
    out = launch(hello_worker, cfg.nodes, cfg.rounds, cfg.interval, threads=cfg.threads, timeout=cfg.timeout)
    log(f"world {len(out)}: " + "; ".join(f"rank {r} on {place}" for r, place in enumerate(out[0]["peers"])))
    log(f"all-reduce ok: every rank got {out[0]['sum']:g} in each of {cfg.rounds} round(s); all-gather ok")
    return out
