import pytest
import torch

from labkit.train import models
from labkit.errors import LabError


def test_lenet5_has_reference_parameter_count():
    assert models.count_parameters(models.build("lenet5")) == 51902


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_maps_mnist_batch_to_logits_and_splits(name):
    model = models.build(name, seed=0).eval()
    x = torch.randn(3, 1, 28, 28)
    out = model(x)
    assert out.shape == (3, 10)
    first, second = models.stages(model)
    assert torch.allclose(second(first(x)), out)
    assert torch.allclose(model.classifier(model.features(x)), out)
    # stages share the model's parameters rather than copying them
    assert {id(p) for p in first.parameters()} | {id(p) for p in second.parameters()} == \
        {id(p) for p in model.parameters()}


@pytest.mark.parametrize("at", [1, 3, 6, 9])
def test_any_split_point_composes_to_the_whole_model(at):
    model = models.build("lenet5", seed=1)
    x = torch.randn(2, 1, 28, 28)
    a, b = models.stages(model, at)
    assert torch.allclose(b(a(x)), model(x))


def test_seeded_build_is_reproducible_and_seeds_differ():
    a, b, c = (models.build("lenet5", seed=s) for s in (3, 3, 4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_norm_variants_contain_their_layers():
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in models.build("lenet5_bn").modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in models.build("lenet5_gn").modules())


def test_bad_names_and_split_points():
    with pytest.raises(LabError, match="unknown model 'resnet'.*lenet5"):
        models.build("resnet")
    with pytest.raises(LabError, match="split point 0 is invalid"):
        models.stages(models.build("lenet5"), 0)


@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 16, 10, 10), (2, 3, 6, 8)])
def test_fast_maxpool_matches_torch_exactly_including_ties(shape):
    g = torch.Generator().manual_seed(0)
    # relu makes ties at zero, rounding makes ties among positives
    x = torch.relu(torch.randn(*shape, generator=g)).mul(4).round().requires_grad_()
    ours = models.MaxPool2x2()(x)
    ref = torch.nn.functional.max_pool2d(x, 2)
    assert torch.equal(ours, ref)
    upstream = torch.randn(ref.shape, generator=g)
    (g_ours,) = torch.autograd.grad(ours, x, upstream)
    (g_ref,) = torch.autograd.grad(ref, x, upstream)
    assert torch.equal(g_ours, g_ref)
