"""labkit.runtime.allocator: training workers reuse freed activation memory instead of page-faulting it in."""
import resource
import sys

import pytest
import torch
import torch.nn.functional as F

import labkit
from labkit.data import datasets
from labkit.train import models


def faults_per_step(steps: int = 8) -> float:
    """Minor page faults per cnn training step (batch 64) on this rank, after two warm-up steps."""
    model = models.build("cnn", seed=0)
    x, y = datasets.load("mnist").batch(torch.arange(64))
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
    assert tuned < 16, (tuned, untuned)  # freed activations are reused: (almost) no new pages
    # Without the tuning each step maps its ~10 MB of activations afresh: 3,400-7,300 faults here,
    # ~290 on a CI machine (whose kernel maps some of them as huge pages).
    assert untuned > 100 and tuned < untuned / 10, (tuned, untuned)

