"""Under torchrun (or any env:// launcher) this process is one rank: ``launch`` runs ``fn`` here, once.

The worker functions written for ``labkit.launch`` then run unchanged on several machines:
``torchrun --nnodes=2 --node-rank=R --nproc-per-node=1 --master-addr=HOST --master-port=PORT -m labkit run KIND``.
"""
from __future__ import annotations

import os
from datetime import timedelta

from ..errors import LabError, WorkerError
from . import group
from .channel import ENV_CONFIG
from .context import TORCHRUN_VARS
from .protocol import Crash

_rpc_started_here = [False]


def under_torchrun() -> bool:
    """True when this process was started by torchrun (or any env:// launcher) as one rank of a job."""
    return all(v in os.environ for v in TORCHRUN_VARS) and ENV_CONFIG not in os.environ


def run_as_rank(fn, nodes, args, kwargs, threads, timeout, use_rpc: float) -> list:
    """Join the env:// job as RANK, run ``fn`` once, return every rank's value (gathered); WorkerError if it fails."""
    import torch.distributed as dist
    r, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if nodes != world:
        raise LabError(f"this job was started by torchrun with WORLD_SIZE={world} processes but asks for "
                       f"nodes={nodes}; make them agree (torchrun --nnodes x --nproc-per-node = nodes).")
    if use_rpc and _rpc_started_here[0]:
        raise LabError("RPC can be initialised only once per process; under torchrun run one rpc job per process.")
    group.prepare_process(threads)
    owns_group, ok = not dist.is_initialized(), False
    try:
        if owns_group:
            store, _, _ = next(dist.rendezvous("env://", r, world, timeout=timedelta(seconds=timeout)))
            group.init_distributed(store, r, world, timeout, use_rpc)
            _rpc_started_here[0] |= bool(use_rpc)
        value = fn(*args, **kwargs)
        gathered = [None] * world
        dist.all_gather_object(gathered, value)
        ok = True
        return gathered
    except Exception as exc:  # noqa: BLE001 - re-raised as a WorkerError naming this rank
        crash = Crash.of(exc)
        raise WorkerError(
            f"rank {r} (host {crash.host}) failed: {crash.type}: {crash.message.strip()}\nIf it mentions a "
            "closed connection or a timeout, another node stopped or the network between the nodes failed "
            "(check that node's output, MASTER_ADDR and GLOO_SOCKET_IFNAME).", [r], "exception",
            {r: crash.traceback}) from exc
    finally:
        if owns_group and dist.is_initialized():
            if use_rpc:
                group.shutdown_rpc(min(10.0, timeout), graceful=ok)
            dist.destroy_process_group()
