"""Partition strategies, the report's measures, the partition plots and the explorer widget."""
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from labkit.data import datasets  # noqa: E402
from labkit.data import measures as M  # noqa: E402
from labkit.data import partition as P  # noqa: E402
from labkit.notebook import plots, widgets  # noqa: E402
from labkit.errors import LabError  # noqa: E402

FAST = settings(max_examples=60, deadline=None)


@st.composite
def cases(draw, min_per_class=None):
    """(labels, nodes, seed): random class ids, every class with at least `nodes` samples."""
    nodes = draw(st.integers(1, 12))
    classes = draw(st.integers(1, 10))
    extra = draw(st.integers(0, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.sort(rng.choice(50, classes, replace=False))
    base = np.repeat(np.arange(classes), min_per_class or nodes)
    labels = ids[rng.permutation(np.concatenate([base, rng.integers(0, classes, extra)]))]
    return labels, nodes, draw(st.integers(0, 2**32 - 1))


def feasible(strategy, labels, nodes):
    """Parameters that every generated case can satisfy (min sizes of 0, one shard per node)."""
    return {"shards": {"k": 1}, "dirichlet": {"min_size": 0}, "quantity": {"min_size": 0},
            "label_k": {"k": 1}, "label_k_random": {"k": 1}}.get(strategy, {})


@FAST
@given(cases(), st.sampled_from(P.STRATEGIES))
def test_every_strategy_returns_nodes_arrays_in_range_and_is_deterministic(case, strategy):
    labels, nodes, seed = case
    params = feasible(strategy, labels, nodes)
    parts = P.partition(labels, nodes, strategy, seed=seed, **params)
    assert len(parts) == nodes
    for part in parts:
        assert part.dtype == np.int64 and part.ndim == 1
        assert part.size == 0 or (part.min() >= 0 and part.max() < len(labels))
        assert np.all(np.diff(part) >= 0)  # ascending within a node
    again = P.partition(labels, nodes, strategy, seed=seed, **params)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@FAST
@given(cases(), st.sampled_from([s for s in P.DISJOINT if not s.startswith("label_k")]))
def test_partitioning_strategies_cover_every_index_exactly_once(case, strategy):
    labels, nodes, seed = case
    parts = P.partition(labels, nodes, strategy, seed=seed, **feasible(strategy, labels, nodes))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@FAST
@given(cases(), st.integers(1, 10), st.sampled_from(["label_k", "label_k_random"]))
def test_label_k_nodes_hold_exactly_k_classes_disjointly(case, k, strategy):
    labels, nodes, seed = case
    classes = np.unique(labels)
    if k > len(classes):
        with pytest.raises(LabError, match=f"k={k} is more than the {len(classes)} classes"):
            P.partition(labels, nodes, strategy, k=k, seed=seed)
        return
    try:
        parts = P.partition(labels, nodes, strategy, k=k, seed=seed)
    except LabError as exc:  # legitimate only if some class has fewer samples than nodes sharing it
        assert "nodes must share it" in str(exc)
        assert nodes * k > len(classes) * Counter(labels.tolist()).most_common()[-1][1]
        return
    assert all(len(np.unique(labels[part])) == k for part in parts)
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)  # disjoint
    held = np.unique(labels[everything])
    assert np.array_equal(np.sort(everything), np.flatnonzero(np.isin(labels, held)))  # whole classes
    if nodes * k >= len(classes):
        assert len(everything) == len(labels)


def test_label_k_random_draws_classes_like_niid_bench_and_label_k_pairs_nodes():
    """#C=2 on 10 nodes: label_k gives five pairs of identical nodes; the random assignment (node p holds
    class p plus one drawn at random, as NIID-Bench does) gives every class to some node and varies."""
    labels = mnist_labels()
    def class_sets(strategy, seed):
        return [frozenset(np.unique(labels[p]).tolist()) for p in P.partition(labels, 10, strategy, k=2, seed=seed)]
    paired = class_sets("label_k", 0)
    assert len(set(paired)) == 5 and all(paired.count(s) == 2 for s in paired)
    drawn = [class_sets("label_k_random", seed) for seed in range(5)]
    for sets in drawn:
        assert all(p in held for p, held in enumerate(sets)) and set().union(*sets) == set(range(10))
    assert len({tuple(sets) for sets in drawn}) == 5 and max(len(set(sets)) for sets in drawn) > 5



@FAST
@given(cases(min_per_class=12), st.floats(0.05, 100), st.integers(0, 12))
def test_dirichlet_respects_its_minimum_size(case, alpha, min_size):
    labels, nodes, seed = case
    if nodes * min_size > len(labels):
        with pytest.raises(LabError, match="lower min_size or use fewer nodes"):
            P.partition(labels, nodes, "dirichlet", alpha=alpha, min_size=min_size, seed=seed)
        return
    try:
        parts = P.partition(labels, nodes, "dirichlet", alpha=alpha, min_size=min_size, seed=seed)
    except LabError as exc:
        assert "after 100 tries" in str(exc) and "raise alpha" in str(exc)
        return
    assert min(len(p) for p in parts) >= min_size
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = mnist_labels()
    skew = [M.label_skew(labels, P.partition(labels, 10, "dirichlet", alpha=a, seed=1)) for a in (100, 1, 0.1)]
    assert skew[0] < skew[1] < skew[2]


@FAST
@given(cases(), st.floats(0.05, 50), st.integers(0, 5))
def test_quantity_sizes_respect_min_size_and_labels_stay_iid(case, beta, min_size):
    labels, nodes, seed = case
    if nodes * min_size > len(labels):
        with pytest.raises(LabError, match="lower min_size"):
            P.partition(labels, nodes, "quantity", beta=beta, min_size=min_size, seed=seed)
        return
    parts = P.partition(labels, nodes, "quantity", beta=beta, min_size=min_size, seed=seed)
    assert min(len(p) for p in parts) >= min_size
    assert sum(len(p) for p in parts) == len(labels)


@FAST
@given(cases())
def test_balanced_strategies_have_sizes_within_one(case):
    labels, nodes, seed = case
    for strategy in ("iid", "contiguous", "stratified", "sorted"):
        sizes = [len(p) for p in P.partition(labels, nodes, strategy, seed=seed)]
        assert max(sizes) - min(sizes) <= 1


@FAST
@given(cases())
def test_stratified_gives_every_node_the_global_mix_within_one_sample(case):
    labels, nodes, seed = case
    counts = M.measure(labels, P.partition(labels, nodes, "stratified", seed=seed)).counts.to_numpy()
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()


@FAST
@given(cases(), st.integers(1, 4))
def test_shards_deal_k_shards_per_node(case, k):
    labels, nodes, seed = case
    if nodes * k > len(labels):
        with pytest.raises(LabError, match="lower k"):
            P.partition(labels, nodes, "shards", k=k, seed=seed)
        return
    sizes = [len(p) for p in P.partition(labels, nodes, "shards", k=k, seed=seed)]
    assert max(sizes) - min(sizes) <= k  # shards differ by at most one sample each


@FAST
@given(cases())
def test_label_mod_gives_node_p_the_labels_congruent_to_p(case):
    labels, nodes, seed = case
    for p, part in enumerate(P.partition(labels, nodes, "label_mod", seed=seed)):
        assert (labels[part] % nodes == p).all()


@FAST
@given(cases(), st.integers(1, 50))
def test_sampling_draws_with_replacement_its_share(case, draws):
    labels, nodes, seed = case
    parts = P.partition(labels, nodes, "sampling", seed=seed)
    assert sum(len(p) for p in parts) == len(labels)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert all(len(p) == draws for p in P.partition(labels, nodes, "sampling", seed=seed, draws=draws))


def mnist_labels():
    return datasets.load("mnist").labels.numpy()


def test_sampling_covers_one_minus_one_over_e_of_mnist():
    labels = mnist_labels()
    for nodes in (1, 2, 10):
        report = M.measure(labels, P.partition(labels, nodes, "sampling", seed=nodes))
        assert report.summary["samples"] == 60_000
        assert abs(report.summary["coverage"] - (1 - np.exp(-1))) < 0.01


def test_different_seeds_give_different_random_partitions():
    labels = mnist_labels()
    for strategy in ("iid", "sampling", "stratified", "shards", "dirichlet", "label_k", "quantity"):
        a, b = P.partition(labels, 4, strategy, seed=0), P.partition(labels, 4, strategy, seed=1)
        assert not all(np.array_equal(x, y) for x, y in zip(a, b)), strategy


@pytest.mark.parametrize("call,message", [
    (lambda y: P.partition(y, 2, "random"), "unknown partition strategy 'random'; choose one of: iid, sampling"),
    (lambda y: P.partition(y, 2, "dirichlet", alpha=0), "alpha must be a positive number, got 0"),
    (lambda y: P.partition(y, 2, "dirichlet", alpha=-1.0), "alpha must be a positive number"),
    (lambda y: P.partition(y, 2, "dirichlet", alpha=float("nan")), "alpha must be a positive number"),
    (lambda y: P.partition(y, 2, "quantity", beta=0.0), "beta must be a positive number, got 0.0"),
    (lambda y: P.partition(y, 0, "iid"), "nodes must be at least 1, got 0"),
    (lambda y: P.partition(y, 60_001, "iid"), "cannot split 60000 samples over 60001 nodes"),
    (lambda y: P.partition(y, 2.5, "iid"), "nodes must be an integer"),
    (lambda y: P.partition(y, 4, "label_k", k=11), "k=11 is more than the 10 classes"),
    (lambda y: P.partition(y, 100, "dirichlet", min_size=601), "lower min_size or use fewer nodes"),
    (lambda y: P.partition(y, 100, "dirichlet", alpha=0.01), "after 100 tries some node still had fewer than 10"),
    (lambda y: P.partition(y, 100, "dirichlet", alpha=0.01, tries=5), "after 5 tries"),
    (lambda y: P.partition(y, 100, "quantity", min_size=601), "lower min_size"),
    (lambda y: P.partition(y, 2, "iid", alpha=0.5), "strategy 'iid' does not take alpha; it accepts no parameters"),
    (lambda y: P.partition(y, 2, "label_k", kk=2), "does not take kk; it accepts k"),
    (lambda y: P.partition(y, 2, "iid", seed=-1), "seed must be a non-negative integer"),
    (lambda y: P.partition(y.reshape(2, -1), 2, "iid"), "labels must be a non-empty 1-D array"),
    (lambda y: P.partition(y.astype(float), 2, "iid"), "labels must be integers"),
    (lambda y: P.compare(y, 2, alpah=0.1), "no chosen strategy takes alpah"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(mnist_labels())


# ---------------------------------------------------------------- the report


@st.composite
def any_parts(draw):
    """Arbitrary (also broken) per-node index lists: repeats, overlaps, empty nodes."""
    n = draw(st.integers(1, 40))
    labels = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    parts = draw(st.lists(st.lists(st.integers(0, n - 1), max_size=30), min_size=1, max_size=6))
    return labels, [np.array(p, dtype=np.int64) for p in parts]


def naive_tv_emd(labels, part):
    classes = sorted(set(labels.tolist()))
    q = [np.mean(labels == c) for c in classes]
    counts = Counter(labels[part].tolist())
    p = [counts[c] / len(part) for c in classes]
    tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q))
    emd = sum(abs(sum(p[:i + 1]) - sum(q[:i + 1])) * (classes[i + 1] - classes[i]) for i in range(len(classes) - 1))
    return tv, emd


@settings(max_examples=100, deadline=None)
@given(any_parts())
def test_report_measures_match_a_plain_python_count(case):
    labels, parts = case
    report = M.measure(labels, parts)
    sets = [set(p.tolist()) for p in parts]
    union = set().union(*sets)
    assert report.summary["coverage"] == pytest.approx(len(union) / len(labels))
    assert report.summary["samples"] == sum(len(p) for p in parts)
    for node, (part, s) in enumerate(zip(parts, sets)):
        row = report.per_node.loc[node]
        others = set().union(*(t for j, t in enumerate(sets) if j != node))
        assert row["size"] == len(part) and row["distinct"] == len(s)
        assert row["duplicates"] == len(part) - len(s)
        assert row["shared"] == len(s & others)
        assert report.counts.loc[node].sum() == len(part)
        if len(part):
            tv, emd = naive_tv_emd(labels, part)
            assert row["tv"] == pytest.approx(tv) and row["emd"] == pytest.approx(emd)
        else:
            assert np.isnan(row["tv"])
    distinct = sum(len(s) for s in sets)
    shared = sum(len(s & set().union(*(t for j, t in enumerate(sets) if j != i))) for i, s in enumerate(sets))
    assert report.summary["overlap"] == pytest.approx(shared / distinct if distinct else 0.0)
    assert report.summary["empty_nodes"] == sum(len(p) == 0 for p in parts)
    if distinct:
        assert M.label_skew(labels, parts) == pytest.approx(np.nanmean(report.per_node["tv"]))
    else:
        assert np.isnan(M.label_skew(labels, parts))


def test_label_skew_of_one_class_nodes_is_one_minus_that_class_share():
    labels = mnist_labels()
    parts = P.partition(labels, 10, "label_k", k=1, seed=0)
    share = np.bincount(labels) / len(labels)
    for part, tv in zip(parts, M.label_distances(labels, parts)):
        assert tv == pytest.approx(1 - share[labels[part[0]]])


@pytest.mark.parametrize("parts,message", [
    ([np.array([0, 60_000])], "node 0 holds index 60000, outside 0..59999"),
    ([np.array([1]), np.array([-1])], "node 1 holds index -1"),
    ([], "the partition is empty"),
    (np.arange(10), "not a single array"),
    ([np.array([0.5])], "integer indices"),
])
def test_report_rejects_parts_that_are_not_index_arrays(parts, message):
    with pytest.raises(LabError, match=message):
        M.measure(mnist_labels(), parts)


def test_report_and_compare_render_every_strategy():
    labels = mnist_labels()
    reports = P.compare(labels, 5, alpha=0.3, k=3, beta=1.0)
    assert list(reports) == list(P.STRATEGIES)
    assert reports["label_k"].counts.gt(0).sum(axis=1).eq(3).all()
    html = reports["dirichlet"]._repr_html_()
    assert "coverage" in html and "label_skew_tv" in html
    assert "size_imbalance" in repr(reports["quantity"])


# ---------------------------------------------------------------- plots and the explorer


def test_partition_plots_draw_the_report():
    labels = mnist_labels()
    report = M.measure(labels, P.partition(labels, 6, "dirichlet", alpha=0.2, seed=3))
    heat = plots.label_heatmap(report)
    assert np.array_equal(heat.axes[0].images[0].get_array(), report.counts.to_numpy())
    bars = plots.label_bars(report)
    heights = np.array([p.get_height() for p in bars.axes[0].patches]).reshape(10, 6)
    assert np.array_equal(heights.T, report.counts.to_numpy())
    sizes = plots.node_sizes(report)
    assert [p.get_height() for p in sizes.axes[0].patches] == report.per_node["size"].tolist()
    overview = plots.partition_overview(report, "dirichlet")
    assert len(overview.axes) >= 3 and "dirichlet" in overview._suptitle.get_text()
    grid = plots.strategy_grid(P.compare(labels, 4))
    assert sum(len(ax.images) for ax in grid.axes) == len(P.STRATEGIES)


def heatmap_of(explorer):
    return explorer.figure.axes[0].images[0].get_array().copy()


def test_explorer_redraws_when_strategy_or_alpha_changes():
    explorer = widgets.PartitionExplorer(mnist_labels(), strategy="dirichlet", nodes=8)
    first, image = heatmap_of(explorer), explorer.output.outputs[0]["data"]["image/png"]
    assert np.array_equal(first, explorer.report.counts.to_numpy())
    explorer.alpha.value = 10.0
    assert not np.array_equal(heatmap_of(explorer), first)
    explorer.strategy.value = "label_mod"
    assert explorer.alpha.disabled and not explorer.nodes.disabled
    assert explorer.output.outputs[0]["data"]["image/png"] != image
    counts = heatmap_of(explorer)
    assert ((counts > 0).sum(axis=1) >= 1).all() and (counts > 0).sum() == 10  # each class on one node
    explorer.strategy.value = "label_k"
    explorer.k.value = 3
    assert ((heatmap_of(explorer) > 0).sum(axis=1) == 3).all()


def test_explorer_shows_an_error_instead_of_a_traceback():
    explorer = widgets.PartitionExplorer(mnist_labels(), strategy="dirichlet", nodes=10)
    explorer.nodes.value = 100
    explorer.alpha.value = explorer.alpha.min
    assert explorer.figure is None and "raise alpha" in explorer.message
    assert explorer.output.outputs[0]["text"].startswith("error: dirichlet: after 100 tries")
    explorer.alpha.value = 1.0
    assert explorer.message is None and explorer.output.outputs[0]["data"]["image/png"]
