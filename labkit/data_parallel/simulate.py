"""Data parallelism simulated in one process, for accuracy sweeps (many configs x seeds).

The N nodes keep their own samplers and, for local SGD, their own model replicas; gradients and
models are averaged with the real workers' arithmetic (``labkit.data_parallel.averaging``), so the
parameters match a real multi-process run (tests/test_simulate.py checks this). It measures
accuracy only: anything that measures time must use real processes (``labkit.data_parallel.run``).
"""
from __future__ import annotations

import torch

from ..data import datasets
from ..data.batches import batches, step_count
from ..train import models
from ..train.loop import evaluate, forward_backward, make_optimizer
from .averaging import GradientBuffer, average_models
from .config import DPConfig, make_all_samplers, train_labels


def simulate(cfg: DPConfig, return_model: bool = False):
    """Train like ``labkit.data_parallel.run(cfg)`` but in this process; return per-epoch history rows."""
    torch.set_num_threads(cfg.torch_threads)
    train, test = datasets.load(cfg.dataset), datasets.load(cfg.dataset, train=False)
    node_samplers = make_all_samplers(cfg, train_labels(cfg))
    local = cfg.sync == "local"
    replicas = [models.build(cfg.model, seed=cfg.seed) for _ in range(cfg.nodes if local else 1)]
    opts = [make_optimizer(m, cfg) for m in replicas]
    grads = None if local else GradientBuffer(replicas[0])
    history = []
    for epoch in range(cfg.epochs):
        orders = [sampler.indices(epoch) for sampler in node_samplers]
        steps = max(step_count(len(o), cfg.batch_size) for o in orders)
        losses, since_average = [], 0
        for node_batches in zip(*(batches(train, o, cfg.batch_size, steps) for o in orders)):
            if local:
                for model, opt, batch in zip(replicas, opts, node_batches):
                    if batch is not None:
                        opt.zero_grad()
                        losses.append(forward_backward(model, batch))
                        opt.step()
                since_average += 1
                if cfg.average_every and since_average >= cfg.average_every:
                    average_models(replicas, len(replicas))
                    since_average = 0
            else:
                losses += _synchronous_step(replicas[0], opts[0], grads, node_batches)
        if local and since_average:
            average_models(replicas, len(replicas))
        _, test_acc = evaluate(replicas[0], test, limit=cfg.test_subset)
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / max(len(losses), 1), "test_acc": test_acc,
                        "samples": sum(len(o) for o in orders)})
    return (history, replicas[0].state_dict()) if return_model else history


def _synchronous_step(model, opt, grads: GradientBuffer, node_batches) -> list[float]:
    """Each node's gradient into the buffer, summed over the nodes, averaged, one step: what the
    all-reduce does. BatchNorm buffers follow rank 0, as DDP broadcasts rank 0's buffers before every
    forward. Returns the losses of the nodes that had a batch."""
    total, losses, rank0_buffers = torch.zeros_like(grads.flat), [], None
    start_buffers = [b.clone() for b in model.buffers()]
    for rank, batch in enumerate(node_batches):
        for b, saved in zip(model.buffers(), start_buffers):
            b.copy_(saved)
        if batch is None:
            continue
        grads.clear()
        losses.append(forward_backward(model, batch))
        grads.contributed()
        total += grads.flat
        if rank == 0:
            rank0_buffers = [b.clone() for b in model.buffers()]
    for b, kept in zip(model.buffers(), rank0_buffers or start_buffers):
        b.copy_(kept)
    grads.flat.copy_(total)
    grads.average()
    opt.step()
    return losses
