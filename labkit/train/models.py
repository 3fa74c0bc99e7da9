"""The lab's models, each a flat ``nn.Sequential`` that knows where to cut it into two stages.

A flat layer list makes the model-parallel split point a plain index: ``stages(model, at)``
returns two Sequentials that share the model's parameters. ``at=None`` uses the model's
natural cut between its feature extractor and its classifier.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import LabError


class _MaxPool2x2Fn(torch.autograd.Function):
    """Forward: max of the four strided 2x2 views. Backward: the gradient goes to the first
    maximum in row-major window order, exactly as ``max_pool2d``'s indices would send it."""

    @staticmethod
    def forward(ctx, x):
        v = [x[..., i::2, j::2] for i, j in _WINDOW]
        y = torch.maximum(torch.maximum(v[0], v[1]), torch.maximum(v[2], v[3]))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        free = torch.ones_like(y, dtype=torch.bool)
        for i, j in _WINDOW:
            hit = (x[..., i::2, j::2] == y) & free
            grad_x[..., i::2, j::2] = grad * hit
            free &= ~hit
        return grad_x


_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` with identical outputs and gradients, about 2x faster forward+backward
    on MNIST-sized maps (torch 2.13's NCHW CPU max-pool kernel is slow for them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            return nn.functional.max_pool2d(x, 2)
        return _MaxPool2x2Fn.apply(x)


class StagedModel(nn.Sequential):
    """A Sequential with a default split point (index of the first classifier layer)."""

    def __init__(self, *layers: nn.Module, split: int):
        super().__init__(*layers)
        self.split = split

    @property
    def features(self) -> nn.Sequential:
        return nn.Sequential(*list(self)[: self.split])

    @property
    def classifier(self) -> nn.Sequential:
        return nn.Sequential(*list(self)[self.split:])


def _lenet5(norm: str | None = None) -> StagedModel:
    def normed(channels: int, groups: int) -> list[nn.Module]:
        if norm == "bn":
            return [nn.BatchNorm2d(channels)]
        if norm == "gn":
            return [nn.GroupNorm(groups, channels)]
        return []

    features = [nn.Conv2d(1, 6, 5, padding=2), *normed(6, 2), nn.ReLU(), MaxPool2x2(),
                nn.Conv2d(6, 16, 5), *normed(16, 4), nn.ReLU(), MaxPool2x2(), nn.Flatten()]
    classifier = [nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 10)]
    return StagedModel(*features, *classifier, split=len(features))


def _cnn() -> StagedModel:
    """The PyTorch MNIST example's network, without dropout so runs are deterministic."""
    features = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                MaxPool2x2(), nn.Flatten()]
    classifier = [nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10)]
    return StagedModel(*features, *classifier, split=len(features))


def _mlp(width: int = 784, hidden: int = 4) -> StagedModel:
    """Equal hidden layers (784 = 28x28 wide, so the input layer costs the same as the others),
    split in the middle: the balanced model on which pipelining can be seen working."""
    layers: list[nn.Module] = [nn.Flatten()]
    for k in range(hidden):
        layers += [nn.Linear(784 if k == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return StagedModel(*layers, split=1 + hidden)


MODELS: dict[str, Callable[[], StagedModel]] = {
    "lenet5": _lenet5,
    "lenet5_bn": lambda: _lenet5("bn"),
    "lenet5_gn": lambda: _lenet5("gn"),
    "cnn": _cnn,
    "mlp": _mlp,
}


def build(name: str, seed: int | None = None) -> StagedModel:
    """Build a model by name; with ``seed`` its initial weights are reproducible."""
    if name not in MODELS:
        raise LabError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    if seed is None:
        return MODELS[name]()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODELS[name]()


def stages(model: StagedModel, at: int | None = None) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut ``model`` before layer ``at`` (default: its natural split) into two stages."""
    at = model.split if at is None else at
    if not 0 < at < len(model):
        raise LabError(f"split point {at} is invalid for a model of {len(model)} layers; "
                       f"use 1..{len(model) - 1}.")
    layers = list(model)
    return nn.Sequential(*layers[:at]), nn.Sequential(*layers[at:])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample(model: nn.Module, shape=(1, 28, 28)) -> int:
    """Multiply-adds of one forward pass of one sample through the convolutions and linear layers
    (the work that dominates; backward costs about twice as much again)."""
    total = [0]

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            total[0] += output[0].numel() * per_output
        elif isinstance(layer, nn.Linear):
            total[0] += layer.in_features * layer.out_features
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]
