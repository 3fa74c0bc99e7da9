"""Joining a job: this process's threads and allocator, the gloo process group, and TensorPipe RPC.

Used by every rank of ``labkit.launch`` and by a torchrun rank, so both start the same way.
"""
from __future__ import annotations

import threading
from datetime import timedelta

from . import allocator
from .context import rpc_name

_rpc_store = [None]


def _store_rendezvous(url, **kwargs):
    """Rendezvous handler for RPC: hand TensorPipe the store the process group already uses."""
    import torch.distributed as dist
    yield dist.PrefixStore("labkit/rpc", _rpc_store[0]), kwargs.get("rank", -1), kwargs.get("world_size", -1)


def prepare_process(threads: int) -> None:
    """What every training process does first: its torch threads, and glibc keeping freed memory."""
    import torch
    torch.set_num_threads(threads)
    allocator.tune()


def init_distributed(store, rank: int, world: int, timeout: float, rpc_seconds: float) -> None:
    """Join the gloo process group on ``store``; with ``rpc_seconds`` > 0 also start TensorPipe RPC on it,
    where one call that is not answered within ``rpc_seconds`` fails."""
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.PrefixStore("labkit/pg", store), rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout))
    if rpc_seconds:
        import importlib
        import warnings

        from torch.distributed import rpc
        if _rpc_store[0] is None:  # (torch.distributed.rendezvous the attribute is a function, hence importlib)
            importlib.import_module("torch.distributed.rendezvous").register_rendezvous_handler(
                "labkit-store", _store_rendezvous)
        _rpc_store[0] = store
        # TCP (libuv) only: TensorPipe's shared-memory transport busy-polls a reactor thread per
        # process, which on a 2-core laptop took ~30 % of a core from the stages that compute
        # (pipelining m=4 on the balanced mlp: 1.15x with it, 1.47x without). uv also works across machines.
        options = rpc.TensorPipeRpcBackendOptions(init_method="labkit-store://", rpc_timeout=rpc_seconds,
                                                  _transports=["uv"])
        with warnings.catch_warnings():  # torch's own RPC start-up trips its ProcessGroup deprecation warning
            warnings.filterwarnings("ignore", message="You are using a Backend .* as a ProcessGroup")
            rpc.init_rpc(rpc_name(rank), rank=rank, world_size=world, rpc_backend_options=options)


def shutdown_rpc(timeout: float, graceful: bool = True) -> None:
    """RPC shutdown (graceful: wait for the other ranks) that never blocks for longer than ``timeout`` (+1 s)."""
    from torch.distributed import rpc
    done = threading.Event()

    def stop():
        try:
            rpc.shutdown(graceful=graceful, timeout=timeout)
        except Exception:  # noqa: BLE001 - a failed goodbye must not hide the results
            pass
        done.set()
    threading.Thread(target=stop, name="labkit-rpc-shutdown", daemon=True).start()
    done.wait(timeout + 1)
