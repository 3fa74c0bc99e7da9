"""Cutting a model for model parallelism: the split point a config means, the parts each process
builds (stages, or the halves of one Linear layer), and putting per-part tensors back together
under the whole model's names (to compare with the unsplit model, or to evaluate it).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import LabError
from ..train import models


def split_linear(layer: nn.Linear, parts: int = 2) -> list[nn.Linear]:
    """Divide a Linear layer's output neurons into ``parts`` layers (copies); concatenating
    their outputs along the last dimension gives the original layer's output."""
    if not isinstance(layer, nn.Linear):
        raise LabError(f"a horizontal split divides a Linear layer, got {type(layer).__name__}.")
    if not 1 <= parts <= layer.out_features:
        raise LabError(f"cannot divide {layer.out_features} output neurons into {parts} parts.")
    pieces = []
    for rows in torch.arange(layer.out_features).tensor_split(parts):
        piece = nn.Linear(layer.in_features, len(rows), bias=layer.bias is not None)
        with torch.no_grad():
            piece.weight.copy_(layer.weight[rows])
            if layer.bias is not None:
                piece.bias.copy_(layer.bias[rows])
        pieces.append(piece)
    return pieces


def layout(model: models.StagedModel) -> tuple[int, int, dict[int, int]]:
    """A built model's layer count, natural split and {Linear layer: output neurons}: what
    ``config.LAYOUTS`` lists for each model without building it (a test compares the two)."""
    return len(model), model.split, {i: l.out_features for i, l in enumerate(model) if isinstance(l, nn.Linear)}


def build_part(model_name: str, seed: int, at: int, horizontal: bool, part: str) -> nn.Module:
    """One part of the seeded model: "stage1"/"stage2" (vertical), "head"/"half1"/"half2"/"tail" (horizontal).
    Every process builds the same seeded model, so the parts start with the local model's weights."""
    model = models.build(model_name, seed=seed)
    layers = list(model)
    if not horizontal:
        first, second = models.stages(model, at)
        return {"stage1": first, "stage2": second}[part]
    halves = split_linear(layers[at], 2)
    return {"head": nn.Sequential(*layers[:at]), "half1": halves[0], "half2": halves[1],
            "tail": nn.Sequential(*layers[at + 1:])}[part]


def part_names(model_name: str, at: int, horizontal: bool, part: str) -> dict[str, str]:
    """Map a part's state names to the whole model's (e.g. stage2 "0.weight" -> "9.weight")."""
    names = list(models.build(model_name).state_dict())   # parameters and buffers (e.g. BatchNorm's)
    if horizontal and part in ("half1", "half2"):
        return {"weight": f"{at}.weight", "bias": f"{at}.bias"}
    offset = {"stage1": 0, "head": 0, "stage2": at, "tail": at + 1}[part]
    mapping = {}
    for name in names:
        index, rest = name.split(".", 1)
        local = int(index) - offset
        if local >= 0 and (part not in ("stage1", "head") or int(index) < at):
            mapping[f"{local}.{rest}"] = name
    return mapping


def merge_parts(model_name: str, at: int, horizontal: bool, per_part: dict[str, dict]) -> dict[str, torch.Tensor]:
    """Tensors given per part under the parts' own names (parameters, gradients) -> by the whole
    model's names; the two halves of a horizontally split layer are joined again."""
    whole: dict[str, list] = {}
    for part, tensors in per_part.items():
        for local, name in part_names(model_name, at, horizontal, part).items():
            if local in tensors:
                whole.setdefault(name, []).append(tensors[local])
    return {name: torch.cat(ts) if len(ts) > 1 else ts[0] for name, ts in whole.items()}


def assemble(model_name: str, seed: int, at: int, horizontal: bool, states: dict[str, dict]) -> models.StagedModel:
    """A local copy of the whole model from the parts' parameters (``states[part]`` by part names)."""
    model = models.build(model_name, seed=seed)
    model.load_state_dict(merge_parts(model_name, at, horizontal, states))
    return model
