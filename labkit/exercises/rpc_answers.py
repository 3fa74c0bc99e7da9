"""labkit's reference answer to notebook 05's exercise: a model split over RPC, as in PyTorch's RPC tutorials.

Stage 1 lives on worker1 and stage 2 on worker2 (``rpc.remote``); the forward pass hands stage 1's output
RRef to stage 2; a training step runs inside ``dist_autograd.context()``.
"""
from __future__ import annotations

import torch.distributed.autograd as dist_autograd
import torch.nn.functional as F
from torch.distributed import rpc

from .rpc_split import RpcSplit, Stage


def make_stages(model: str, seed: int = 0) -> tuple:
    """Create the model's two stages on worker1 and worker2; return their RRefs."""
    stage1 = rpc.remote("worker1", Stage, args=(model, 1, seed))
    stage2 = rpc.remote("worker2", Stage, args=(model, 2, seed))
    return stage1, stage2


def forward(stages: tuple, x):
    """The model's output for ``x``: stage 1's output stays on worker1 as an RRef, and stage 2 fetches it."""
    stage1, stage2 = stages
    hidden = stage1.remote().forward(x)          # an RRef to the activations, on worker1
    return stage2.rpc_sync().forward(hidden)     # worker2 fetches them from worker1; its output comes back


def train_step(stages: tuple, optimizer, x, y) -> float:
    """One training step: forward, distributed backward and the DistributedOptimizer's update, in one context."""
    with dist_autograd.context() as context_id:
        loss = F.cross_entropy(forward(stages, x), y)
        dist_autograd.backward(context_id, [loss])
        optimizer.step(context_id)
    return loss.item()


SPLIT = RpcSplit(make_stages, forward, train_step)
