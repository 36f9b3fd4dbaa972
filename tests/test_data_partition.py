"""Partitioners of hetlab.data: seeded disjoint covers, label/quantity skew, errors, diagnostics."""
from __future__ import annotations

import numpy as np
import pytest

from hetlab import data as D

SEED = 0


def _labels(n_classes=10, per_class=60, seed=SEED):
    """Balanced labels in shuffled order (``per_class`` samples of each of ``n_classes`` classes)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))


def _unbalanced_labels(seed=SEED):
    rng = np.random.default_rng(seed)
    return rng.choice(7, size=900, p=np.array([5, 1, 3, 8, 2, 6, 4]) / 29)


PARTITIONERS = {
    "iid": lambda y, seed: D.iid(y.size, 9, seed),
    "dirichlet": lambda y, seed: D.dirichlet(y, 9, 0.5, seed, min_size=5),
    "shards": lambda y, seed: D.shards(y, 9, 3, seed),
    "shards_random": lambda y, seed: D.shards(y, 9, 3, seed, distinct_classes=False),
    "quantity_alpha": lambda y, seed: D.quantity_skew(y.size, 9, seed, alpha=0.7, min_size=3),
    "quantity_power": lambda y, seed: D.quantity_skew(y.size, 9, seed, power=1.3),
}


def _assert_disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert allidx.size == n
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1


# -- every partitioner: cover, determinism -------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_disjoint_cover(name):
    for y in (_labels(), _unbalanced_labels()):
        parts = PARTITIONERS[name](y, SEED)
        assert len(parts) == 9
        _assert_disjoint_cover(parts, y.size)
        D.check_partition(parts, y.size)  # the library's own validator agrees


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_same_seed_same_parts_different_seed_different(name):
    y = _unbalanced_labels()
    a, b, c = (PARTITIONERS[name](y, s) for s in (SEED, SEED, SEED + 1))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    # a Generator seeded like the int gives the same draw
    g = PARTITIONERS[name](y, np.random.default_rng(SEED))
    assert all(np.array_equal(p, q) for p, q in zip(a, g))


def test_seed_must_be_int_or_generator():
    with pytest.raises(TypeError, match="seed must be an int or a numpy.random.Generator"):
        D.iid(10, 2, None)
    with pytest.raises(TypeError, match="seed"):
        D.dirichlet(_labels(), 3, 1.0, 1.5)


def test_check_partition_detects_overlap_and_gaps():
    with pytest.raises(ValueError, match="several clients"):
        D.check_partition([np.array([0, 1]), np.array([1, 2])], 3)
    with pytest.raises(ValueError, match="belong to no client"):
        D.check_partition([np.array([0]), np.array([2])], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        D.check_partition([np.array([0, 1, 2, 3])], 3)


def test_client_ids_round_trip():
    y = _unbalanced_labels()
    parts = D.dirichlet(y, 6, 0.3, SEED)
    ids = D.client_ids_from_parts(parts, y.size)
    back = D.parts_from_client_ids(ids, 6)
    assert all(np.array_equal(p, q) for p, q in zip(parts, back))


# -- iid -------------------------------------------------------------------------------------------
def test_iid_sizes_differ_by_at_most_one():
    sizes = [p.size for p in D.iid(1003, 10, SEED)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003


def test_iid_rejects_more_clients_than_samples():
    with pytest.raises(ValueError, match="n_clients=11 > n_samples=10"):
        D.iid(10, 11, SEED)


# -- dirichlet -------------------------------------------------------------------------------------
def test_dirichlet_histogram_consistent():
    y = _unbalanced_labels()
    parts = D.dirichlet(y, 8, 0.3, SEED)
    H = D.label_histogram(y, parts)
    np.testing.assert_array_equal(H.sum(1), [p.size for p in parts])
    np.testing.assert_array_equal(H.sum(0), np.bincount(y))
    for k, p in enumerate(parts):
        np.testing.assert_array_equal(H[k], np.bincount(y[p], minlength=H.shape[1]))


def test_dirichlet_large_alpha_is_close_to_iid():
    """Each class is cut at rounded cumulative Dir(alpha) fractions, so |H_kc - N_c p_kc| <= 1 with
    Var p_kc = (n-1)/(n^2(n alpha+1)); a 5-sigma band around N_c/n plus the rounding must hold."""
    y = _unbalanced_labels()
    n, alpha = 10, 1000.0
    H = D.label_histogram(y, D.dirichlet(y, n, alpha, SEED))
    Nc = np.bincount(y).astype(float)
    sd = Nc * np.sqrt((n - 1) / (n**2 * (n * alpha + 1)))
    assert np.all(np.abs(H - Nc / n) <= 1.0 + 5.0 * sd)
    s = D.heterogeneity_summary(H)
    s_skew = D.heterogeneity_summary(D.label_histogram(y, D.dirichlet(y, n, 0.1, SEED)))
    assert s["max_tv"] < 0.1 < s_skew["mean_tv"]
    assert s["mean_effective_classes"] > s_skew["mean_effective_classes"]


def test_dirichlet_tiny_alpha_gives_each_class_to_one_client_without_nan():
    y = _labels()
    H = D.label_histogram(y, D.dirichlet(y, 5, 1e-4, SEED, min_size=0))
    assert np.all(H.max(0) / H.sum(0) > 0.99)


def test_dirichlet_respects_min_size():
    y = _unbalanced_labels()
    for seed in range(3):
        parts = D.dirichlet(y, 20, 0.5, seed, min_size=15)
        assert min(p.size for p in parts) >= 15


def test_dirichlet_infeasible_upfront_message():
    with pytest.raises(ValueError, match=r"n_clients \* min_size = 10 \* 61 = 610 > n_samples = 600"):
        D.dirichlet(_labels(), 10, 1.0, SEED, min_size=61)


def test_dirichlet_gives_up_with_informative_message():
    y = _labels()
    with pytest.raises(ValueError) as info:
        D.dirichlet(y, 50, 0.01, SEED, min_size=10, max_tries=5)
    msg = str(info.value)
    for part in ("max_tries=5", "alpha=0.01", "n_clients=50", "min_size=10", "smallest client had",
                 "larger alpha", "fewer clients", "smaller min_size"):
        assert part in msg


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        D.dirichlet(_labels(), 3, alpha, SEED)


# -- shards ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_clients,cpc", [(10, 2), (5, 4), (20, 1), (10, 5)])
def test_shards_exact_classes_per_client_when_balanced(n_clients, cpc):
    y = _labels(n_classes=10, per_class=60)
    for seed in range(3):
        parts = D.shards(y, n_clients, cpc, seed)
        H = D.label_histogram(y, parts)
        np.testing.assert_array_equal((H > 0).sum(1), cpc)
        assert {p.size for p in parts} == {y.size // n_clients}


def test_shards_one_class_per_client_summary():
    """One class per client: every client's label distribution is a vertex, at TV 1 - 1/C from uniform."""
    C = 10
    y = _labels(n_classes=C)
    s = D.heterogeneity_summary(D.label_histogram(y, D.shards(y, C, 1, SEED)))
    assert s["mean_effective_classes"] == pytest.approx(1.0)
    assert s["mean_tv"] == pytest.approx(1 - 1 / C)
    assert s["global_effective_classes"] == pytest.approx(C)


def test_shards_errors_name_the_constraint():
    y = _labels(n_classes=4, per_class=3)
    with pytest.raises(ValueError, match=r"classes_per_client=5 exceeds the number of classes in labels \(4\)"):
        D.shards(y, 2, 5, SEED)
    with pytest.raises(ValueError, match=r"7 \* 2 = 14 shards cannot be formed from 12 samples"):
        D.shards(y, 7, 2, SEED)


# -- quantity skew ----------------------------------------------------------------------------------
def test_quantity_skew_sizes():
    sizes = [p.size for p in D.quantity_skew(1000, 12, SEED, alpha=0.2, min_size=20)]
    assert min(sizes) >= 20 and sum(sizes) == 1000
    # power law: ranks get N' r^-s / sum r^-s (+ min_size), each within one of its target
    s, n, N, m0 = 1.5, 8, 1000, 10
    sizes = np.sort([p.size for p in D.quantity_skew(N, n, SEED, power=s, min_size=m0)])[::-1]
    w = np.arange(1, n + 1) ** -s
    assert np.all(np.abs(sizes - (m0 + (N - n * m0) * w / w.sum())) <= 1.0)
    # power 0 = equal sizes
    sizes = [p.size for p in D.quantity_skew(103, 10, SEED, power=0.0)]
    assert max(sizes) - min(sizes) <= 1


def test_quantity_skew_large_alpha_equal_sizes_and_errors():
    sizes = np.array([p.size for p in D.quantity_skew(10_000, 10, SEED, alpha=1e6)])
    assert np.all(np.abs(sizes - 1000) <= 5)
    with pytest.raises(ValueError, match=r"10 \* 11 = 110 > n_samples = 100"):
        D.quantity_skew(100, 10, SEED, alpha=1.0, min_size=11)
    with pytest.raises(ValueError, match="exactly one of alpha"):
        D.quantity_skew(100, 10, SEED, alpha=1.0, power=1.0)
    with pytest.raises(ValueError, match="exactly one of alpha"):
        D.quantity_skew(100, 10, SEED)


# -- diagnostics ------------------------------------------------------------------------------------
def test_label_histogram_validation():
    y = _labels(n_classes=3, per_class=4)
    parts = D.iid(y.size, 3, SEED)
    assert D.label_histogram(y, parts, n_classes=5).shape == (3, 5)
    with pytest.raises(ValueError, match="out of range for n_classes=2"):
        D.label_histogram(y, parts, n_classes=2)
    with pytest.raises(ValueError, match="integer class ids"):
        D.label_histogram(np.array(["a", "b", "c"]), [np.arange(3)])


def test_effective_classes_and_tv_exact_on_small_histogram():
    H = np.array([[5, 5, 0, 0], [0, 0, 10, 0], [2, 2, 2, 2]])
    eff = D.effective_num_classes(H)
    np.testing.assert_allclose(eff, [2.0, 1.0, 4.0])
    glob = H.sum(0) / H.sum()  # [7, 7, 12, 2] / 28
    tv = D.label_tv_to_global(H)
    np.testing.assert_allclose(tv, 0.5 * np.abs(H / H.sum(1, keepdims=True) - glob).sum(1))
    s = D.heterogeneity_summary(H)
    assert s["mean_classes_present"] == pytest.approx((2 + 1 + 4) / 3)
    assert s["min_size"] == 8 and s["max_size"] == 10


def test_summary_handles_empty_clients():
    H = np.array([[3, 1], [0, 0], [1, 3]])
    s = D.heterogeneity_summary(H)
    assert s["empty_clients"] == 1 and np.isfinite(s["mean_tv"])
    assert np.isnan(D.label_tv_to_global(H)[1])


@pytest.mark.parametrize("kind", ["bar", "heatmap"])
def test_plot_label_histogram_returns_axes(kind):
    y = _labels()
    H = D.label_histogram(y, D.dirichlet(y, 6, 0.5, SEED))
    ax = D.plot_label_histogram(H, kind=kind, normalize=True)
    assert ax.get_xlabel() == "client"
    if kind == "bar":
        assert len(ax.patches) == H.size
    with pytest.raises(ValueError, match="kind must be"):
        D.plot_label_histogram(H, kind="pie")
