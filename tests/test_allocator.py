"""labkit.allocator: training workers reuse freed activation memory instead of page-faulting it in."""
import resource
import sys

import pytest
import torch
import torch.nn.functional as F

import labkit
from labkit import data, models


def faults_per_step(steps: int = 8) -> float:
    """Minor page faults per cnn training step (batch 64) on this rank, after two warm-up steps."""
    model = models.build("cnn", seed=0)
    x, y = data.load("mnist").batch(torch.arange(64))
    for k in range(steps + 2):
        if k == 2:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_workers_stop_page_faulting_their_activations_in(monkeypatch):
    tuned = max(labkit.launch(faults_per_step, 2))
    monkeypatch.setenv("LABKIT_KEEP_FREED_MEMORY", "0")
    untuned = max(labkit.launch(faults_per_step, 2))
    assert untuned > 500                # every step maps its ~10 MB of activations afresh
    assert tuned < untuned / 20, (tuned, untuned)

