"""The pieces every training loop shares: the optimizer, one forward and backward pass, evaluation,
and the rows an evaluation inside an epoch adds to a run's history (``eval_every``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD with the config's learning rate and momentum (the lab's only optimizer)."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def forward_backward(model: torch.nn.Module, batch) -> float:
    """Cross-entropy of one ``(x, y)`` batch, backpropagated into the gradients; returns the loss."""
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item()


def evaluation_due(step: int, every: int) -> bool:
    """Whether global optimizer step ``step`` (counted from 1) ends with an evaluation (``eval_every``)."""
    return every > 0 and step % every == 0


def midway_row(epochs_done: float, step: int, wall: float, loss: float, acc: float) -> dict:
    """The history row of an evaluation inside an epoch. ``epoch`` counts epochs done, as a fraction
    (1.25: a quarter into the second); ``wall_seconds`` is the training time so far (evaluation untimed)."""
    return {"epoch": round(epochs_done, 4), "step": step, "wall_seconds": wall, "test_loss": loss,
            "test_acc": acc, "end_of_epoch": False}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int = 500, limit: int = 0) -> tuple[float, float]:
    """Mean loss and accuracy (%) on a whole split (or its first ``limit`` images), in eval mode;
    restores the model's mode."""
    was_training = model.training
    model.eval()
    n = min(limit, len(dataset)) if limit else len(dataset)
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        x, y = dataset.normalized[start:end], dataset.labels[start:end]
        out = model(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    model.train(was_training)
    return loss_sum / n, 100.0 * correct / n
