"""Data parallelism simulated in one process, for accuracy sweeps (many configs x seeds).

The N nodes keep their own samplers and, for local SGD, their own model replicas; gradients
and models are averaged with the same arithmetic as ``labkit.sync``, so the parameters match
a real multi-process run (tests/test_simulate.py checks this). It measures accuracy only:
anything that measures time must use real processes (``labkit.dataparallel.run``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import data, models
from .dataparallel import DPConfig, _train_labels, make_all_samplers
from .training import evaluate, make_optimizer


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _set_grad(model, flat: torch.Tensor) -> None:
    offset = 0
    for p in model.parameters():
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def _average_replicas(replicas) -> None:
    """In place: every replica's parameters and float buffers become the replicas' mean."""
    per_replica = [[*m.parameters(), *(b for b in m.buffers() if b.is_floating_point())] for m in replicas]
    with torch.no_grad():
        for tensors in zip(*per_replica):
            mean = torch.stack([t.data for t in tensors]).sum(0) / len(replicas)
            for t in tensors:
                t.data.copy_(mean)


def _loss_backward(model, batch) -> float:
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item()


def simulate(cfg: DPConfig, return_model: bool = False):
    """Train like ``dataparallel.run(cfg)`` but in this process; return per-epoch history rows."""
    torch.set_num_threads(max(1, cfg.threads))
    train, test = data.load(cfg.dataset), data.load(cfg.dataset, train=False)
    labels = _train_labels(cfg)
    node_samplers = make_all_samplers(cfg, labels)
    local = cfg.sync == "local"
    replicas = [models.build(cfg.model, seed=cfg.seed) for _ in range(cfg.nodes if local else 1)]
    opts = [make_optimizer(m, cfg) for m in replicas]
    every = None if cfg.local_steps == "epoch" else int(cfg.local_steps)
    history = []
    for epoch in range(cfg.epochs):
        orders = [sampler.indices(epoch) for sampler in node_samplers]
        steps = max(math.ceil(len(o) / cfg.batch_size) for o in orders)
        loss_sum, batches, since_average = 0.0, 0, 0
        for s in range(steps):
            node_batches = [train.batch(o[s * cfg.batch_size:(s + 1) * cfg.batch_size])
                            if s * cfg.batch_size < len(o) else None for o in orders]
            if local:
                for model, opt, batch in zip(replicas, opts, node_batches):
                    if batch is not None:
                        opt.zero_grad()
                        loss_sum, batches = loss_sum + _loss_backward(model, batch), batches + 1
                        opt.step()
                since_average += 1
                if every and since_average >= every:
                    _average_replicas(replicas)
                    since_average = 0
            else:
                loss_sum, batches = _synchronous_step(replicas[0], opts[0], node_batches, loss_sum, batches)
        if local and since_average:
            _average_replicas(replicas)
        _, test_acc = evaluate(replicas[0], test, limit=cfg.test_subset)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(batches, 1), "test_acc": test_acc,
                        "samples": sum(len(o) for o in orders)})
    return (history, replicas[0].state_dict()) if return_model else history


def _synchronous_step(model, opt, node_batches, loss_sum, batches):
    """Sum the active nodes' gradients, divide by their count, one step: what all-reduce does.
    BatchNorm buffers follow rank 0, as DDP broadcasts rank 0's buffers before every forward."""
    grad_sum, active, rank0_buffers = None, 0, None
    start_buffers = [b.clone() for b in model.buffers()]
    for rank, batch in enumerate(node_batches):
        for b, saved in zip(model.buffers(), start_buffers):
            b.copy_(saved)
        if batch is None:
            continue
        opt.zero_grad(set_to_none=True)
        loss_sum, batches = loss_sum + _loss_backward(model, batch), batches + 1
        flat = _flat_grad(model)
        grad_sum = flat.clone() if grad_sum is None else grad_sum + flat
        active += 1
        if rank == 0:
            rank0_buffers = [b.clone() for b in model.buffers()]
    for b, kept in zip(model.buffers(), rank0_buffers or start_buffers):
        b.copy_(kept)
    _set_grad(model, grad_sum / active)
    opt.step()
    return loss_sum, batches
