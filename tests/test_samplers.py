"""The distributed samplers, their factory, and the audit (including the two broken teaching samplers)."""
import itertools
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from labkit.data import audit, datasets, samplers
from labkit.data import partition as P
from labkit.data.batches import epoch_order
from labkit.errors import LabError

FAST = settings(max_examples=60, deadline=None)


def mnist_labels():
    return datasets.load("mnist").labels.numpy()


def epoch_draws(sampler_list, epoch):
    for s in sampler_list:
        s.set_epoch(epoch)
    return [np.fromiter(iter(s), dtype=np.int64) for s in sampler_list]


@FAST
@given(st.integers(1, 500), st.integers(1, 9), st.integers(0, 2**31), st.integers(0, 50))
def test_random_partitioning_is_disjoint_and_drops_only_the_stated_remainder(n, nodes, seed, epoch):
    nodes = min(nodes, n)
    labels = np.zeros(n, dtype=np.int64)
    draws = epoch_draws(samplers.make_all("iid", nodes, labels, seed), epoch)
    union = np.concatenate(draws)
    assert len(np.unique(union)) == len(union)  # no index twice
    assert {len(d) for d in draws} == {n // nodes}  # equal lengths, no padding
    order = epoch_order(n, seed, epoch).numpy()
    dropped = order[nodes * (n // nodes):]  # the last n % nodes of this epoch's permutation
    assert np.array_equal(np.sort(np.concatenate([union, dropped])), np.arange(n))


@FAST
@given(st.integers(1, 500), st.integers(1, 9), st.integers(0, 2**31), st.integers(0, 50))
def test_random_partitioning_without_drop_last_covers_everything(n, nodes, seed, epoch):
    nodes = min(nodes, n)
    draws = epoch_draws(samplers.make_all("iid", nodes, np.zeros(n, dtype=np.int64), seed, drop_last=False), epoch)
    assert np.array_equal(np.sort(np.concatenate(draws)), np.arange(n))
    assert max(map(len, draws)) - min(map(len, draws)) <= 1


def test_the_dropped_remainder_changes_between_epochs():
    n, nodes = 1003, 4
    group = samplers.make_all("iid", nodes, np.zeros(n, dtype=np.int64), seed=7)
    missing = [set(range(n)) - set(np.concatenate(epoch_draws(group, e)).tolist()) for e in range(20)]
    assert all(len(m) == n % nodes for m in missing)
    assert len({frozenset(m) for m in missing}) > 1
    seen = set().union(*(set(range(n)) - m for m in missing))
    assert seen == set(range(n))  # over the epochs every sample is used


def test_one_node_random_partitioning_is_the_single_machine_order():
    sampler = samplers.make("iid", 0, 1, mnist_labels(), seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        assert torch.equal(sampler.indices(), epoch_order(60_000, 3, epoch))
        assert list(sampler)[:5] == epoch_order(60_000, 3, epoch)[:5].tolist()


@pytest.mark.parametrize("kind", ["iid", "sampling", "contiguous", "stratified", "dirichlet", "label_k"])
def test_order_changes_between_epochs_and_repeats_for_the_same_epoch(kind):
    labels = mnist_labels()[:5000]
    for sampler in samplers.make_all(kind, 3, labels, seed=1):
        a, b = sampler.indices(0), sampler.indices(1)
        assert len(a) == len(b) == len(sampler)
        assert not torch.equal(a, b)
        sampler.set_epoch(1)
        assert torch.equal(torch.tensor(list(sampler)), b)


@FAST
@given(st.sampled_from([s for s in P.DISJOINT if s != "iid"]), st.integers(1, 6), st.integers(0, 1000))
def test_fixed_shards_are_the_partition_reshuffled_each_epoch(strategy, nodes, seed):
    labels = np.random.default_rng(seed).integers(0, 10, 400)
    params = {"dirichlet": {"min_size": 0}, "quantity": {"min_size": 0}}.get(strategy, {})
    parts = P.partition(labels, nodes, strategy, seed=seed, **params)
    group = samplers.make_all(strategy, nodes, labels, seed, **params)
    for epoch in (0, 5):
        for part, draw in zip(parts, epoch_draws(group, epoch)):
            assert np.array_equal(np.sort(draw), part)
    assert samplers.epoch_lengths(strategy, nodes, labels, seed, **params) == [len(p) for p in parts]


@pytest.mark.parametrize("nodes", [1, 2, 3])
def test_sampling_with_replacement_covers_one_minus_one_over_e(nodes):
    labels = mnist_labels()
    group = samplers.make_all("sampling", nodes, labels, seed=11)
    assert sum(samplers.epoch_lengths("sampling", nodes, labels)) == 60_000
    first, second = epoch_draws(group, 0), epoch_draws(group, 1)
    for draws in (first, second):
        coverage = len(np.unique(np.concatenate(draws))) / 60_000
        assert abs(coverage - (1 - np.exp(-1))) < 0.01
    assert not any(np.array_equal(a, b) for a, b in zip(first, second))  # fresh draws each epoch


def test_sampling_draws_parameter_sets_the_epoch_length():
    sampler = samplers.make("sampling", 1, 2, mnist_labels(), draws=640)
    assert len(sampler) == 640 == len(list(sampler))
    assert samplers.epoch_lengths("sampling", 3, mnist_labels(), draws=7) == [7, 7, 7]


@pytest.mark.parametrize("call,message", [
    (lambda y: samplers.make("shuffle", 0, 2, y), "unknown sampler kind 'shuffle'; choose one of: iid, sampling"),
    (lambda y: samplers.make("iid", 2, 2, y), "rank must be an integer in 0..1, got 2"),
    (lambda y: samplers.make("iid", 0, 0, y), "nodes must be an integer >= 1"),
    (lambda y: samplers.make_all("iid", 0, y), "nodes must be an integer >= 1, got 0"),
    (lambda y: samplers.make("iid", 0, 2, y, seed=-3), "seed must be a non-negative integer"),
    (lambda y: samplers.make("iid", 0, 2, y, alpha=1), "sampler 'iid' does not take alpha; it accepts drop_last"),
    (lambda y: samplers.make("sampling", 0, 2, y, draws=0), "draws must be at least 1"),
    (lambda y: samplers.make("dirichlet", 0, 2, y, alpha=-1), "alpha must be a positive number"),
    (lambda y: samplers.make("iid", 0, 5, y[:3]), "cannot split 3 samples over 5 nodes"),
])
def test_factory_rejects_bad_input_clearly(call, message):
    with pytest.raises(LabError, match=message):
        call(mnist_labels())


# ---------------------------------------------------------------- the audit


def factory(kind, labels, **params):
    return lambda rank, nodes: samplers.make(kind, rank, nodes, labels, seed=0, **params)


@pytest.mark.parametrize("kind", ["iid", "contiguous", "stratified", "sorted", "shards", "dirichlet", "quantity",
                                  "label_mod"])
def test_audit_passes_the_lab_partition_samplers(kind):
    labels = mnist_labels()
    report = audit.audit(factory(kind, labels), nodes=3, size=60_000, epochs=3)
    assert report.ok, report.problems
    assert (report.table["overlap"] == 0).all() and (report.table["duplicates"] == 0).all()
    assert report.table["coverage"].min() >= 1 - 2 / 60_000
    assert report.table["order_changed"].iloc[1:].all()


def test_audit_passes_sampling_with_replacement_as_sampling_but_not_as_partition():
    labels = mnist_labels()
    report = audit.audit(factory("sampling", labels), nodes=2, size=60_000, expect="sampling")
    assert report.ok, report.problems
    as_partition = audit.audit(factory("sampling", labels), nodes=2, size=60_000)
    assert any("repeats inside a rank" in p for p in as_partition.problems)


def test_audit_exposes_the_seed_per_rank_mistake():
    report = audit.audit(factory("seed_per_rank", mnist_labels()), nodes=2, size=60_000, epochs=3)
    table = report.table
    assert (abs(table["coverage"] - 0.75) < 0.01).all()
    assert (abs(table["overlap"] - 0.5) < 0.01).all()
    assert not table["order_changed"].iloc[1:].any()
    text = " ".join(report.problems)
    assert re.search(r"cover 7[45]\.\d%", text) and re.search(r"overlap (49|50)\.\d%", text)
    assert "set_epoch missing or ignored" in text


@pytest.mark.parametrize("nodes", [2, 3, 4])
def test_audit_exposes_the_first_slice_mistake(nodes):
    report = audit.audit(factory("first_slice", mnist_labels()), nodes=nodes, size=60_000, epochs=2)
    assert report.table["coverage"].iloc[0] == pytest.approx(1 / nodes, abs=1e-4)
    assert report.table["overlap"].iloc[0] == 1.0
    assert report.table["cross_duplicates"].iloc[0] == 60_000 // nodes
    assert not report.ok and any("overlap 100%" in p for p in report.problems)


def test_audit_takes_a_sampler_written_in_a_notebook():
    class EveryOther(torch.utils.data.Sampler):  # a student's sampler: no set_epoch, strided slices
        def __init__(self, rank, nodes, size):
            self.rank, self.nodes, self.size = rank, nodes, size

        def __iter__(self):
            return iter(range(self.rank, self.size, self.nodes))

    report = audit.audit(lambda rank, nodes: EveryOther(rank, nodes, 101), nodes=3, size=101, epochs=2)
    assert report.table["coverage"].iloc[0] == 1.0 and report.table["overlap"].iloc[0] == 0.0
    assert report.problems == ["epoch 1: some rank repeats the previous epoch's order (set_epoch missing or ignored)."]
    assert "set_epoch" in repr(report) and "<li>" in report._repr_html_()


@pytest.mark.parametrize("make,message", [
    (lambda rank, nodes: 42, "returned int for rank 0, which is not iterable"),
    (lambda rank, nodes: [0, 1, 100], "epoch 0: rank 0 drew index 100, outside 0..99"),
    (lambda rank, nodes: itertools.count(), "does its iterator ever end"),
    (lambda rank, nodes: [[0, 1], [2, 3]], "must yield single integer indices"),
])
def test_audit_names_a_broken_factory_clearly(make, message):
    with pytest.raises(LabError, match=message):
        audit.audit(make, nodes=2, size=100)


def test_audit_rejects_bad_settings():
    with pytest.raises(LabError, match="unknown expectation 'disjoint'"):
        audit.audit(factory("iid", mnist_labels()), 2, 60_000, expect="disjoint")
    with pytest.raises(LabError, match="epochs must be an integer >= 1"):
        audit.audit(factory("iid", mnist_labels()), 2, 60_000, epochs=0)
