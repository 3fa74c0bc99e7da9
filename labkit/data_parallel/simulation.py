"""Data parallelism simulated in one process, for accuracy sweeps (many configs x seeds).

The N nodes keep their own samplers and, for local SGD, their own model replicas; gradients and
models are averaged with the real workers' arithmetic (``labkit.data_parallel.averaging``), so the
parameters match a real multi-process run (tests/test_simulate.py checks this). It measures
accuracy only: anything that measures time must use real processes (``labkit.data_parallel.run``).
"""
from __future__ import annotations

import copy

import torch

from ..data import datasets
from ..data.batches import batches, step_count
from ..train import models
from ..train.loop import evaluate, evaluation_due, forward_backward, make_optimizer, midway_row
from .averaging import GradientBuffer, average_models
from .config import DPConfig, make_all_samplers, steps_in_epoch, train_labels


def simulate(cfg: DPConfig, return_model: bool = False, samplers=None):
    """Train like ``labkit.data_parallel.run(cfg)`` but in this process; return per-epoch history rows.

    ``samplers``: one sampler per node with ``indices(epoch)`` (e.g. ``labkit.data.samplers.record`` of a
    class written in a notebook) instead of the ones ``cfg.partition`` names."""
    torch.set_num_threads(cfg.torch_threads)
    train, test = datasets.load(cfg.dataset), datasets.load(cfg.dataset, train=False)
    node_samplers = make_all_samplers(cfg, train_labels(cfg)) if samplers is None else list(samplers)
    local = cfg.sync == "local"
    replicas = [models.build(cfg.model, seed=cfg.seed) for _ in range(cfg.nodes if local else 1)]
    opts = [make_optimizer(m, cfg) for m in replicas]
    grads = None if local else GradientBuffer(replicas[0])
    history, group_steps = [], 0
    for epoch in range(cfg.epochs):
        orders = [sampler.indices(epoch) for sampler in node_samplers]
        counts = [step_count(len(o), cfg.batch_size) for o in orders]
        fewest, steps = min(counts), steps_in_epoch(cfg, min(counts), max(counts))
        losses, since_average = [], 0
        for s, node_batches in enumerate(zip(*(batches(train, o, cfg.batch_size, steps) for o in orders))):
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
            if evaluation_due(group_steps + s + 1, cfg.eval_every) and s + 1 < min(steps, fewest):
                history.append(midway_row(epoch + (s + 1) / steps, group_steps + s + 1, float("nan"),
                                          *_evaluate_average(replicas, test, cfg.test_subset)))
        group_steps += steps
        if local and since_average:
            average_models(replicas, len(replicas))
        _, test_acc = evaluate(replicas[0], test, limit=cfg.test_subset)
        history.append({"epoch": epoch + 1, "step": group_steps, "train_loss": sum(losses) / max(len(losses), 1),
                        "test_acc": test_acc, "samples": sum(min(len(o), steps * cfg.batch_size) for o in orders),
                        "end_of_epoch": True})
    return (history, replicas[0].state_dict()) if return_model else history


def _evaluate_average(replicas, test, limit: int) -> tuple[float, float]:
    """Loss and accuracy of the replicas' average (local SGD between averages), or of the one model."""
    if len(replicas) == 1:
        return evaluate(replicas[0], test, limit=limit)
    copies = [copy.deepcopy(m) for m in replicas]
    average_models(copies, len(copies))
    return evaluate(copies[0], test, limit=limit)


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
