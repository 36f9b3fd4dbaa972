import numpy as np
import pytest

from hetlab import batch as hb
from proofs_check import e1_gradient_diversity_minibatch_and_divebatch as e1


def test_hand_computed_diversity_and_bound():
    G = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert hb.diversity(G) == pytest.approx(1.0)  # 2 / ||(1,1)||^2
    assert hb.batch_size_bound(G) == pytest.approx(2.0)
    G = np.ones((3, 2))
    assert hb.diversity(G) == pytest.approx(1 / 3)  # all equal: 1/N
    assert hb.diversity(np.array([[1.0], [-1.0]])) == np.inf


@pytest.mark.parametrize("N,B", [(5, 1), (5, 2), (6, 3), (7, 7), (8, 5)])
def test_identities_vs_brute_force(N, B):
    G = np.random.default_rng(N * 10 + B).normal(0.2, 1.0, (N, 3))
    assert hb.minibatch_sum_second_moment(G, B) == pytest.approx(hb.enumerate_sum_second_moment(G, B), rel=1e-12)
    assert hb.minibatch_mean_variance(G, B) == pytest.approx(hb.enumerate_mean_variance(G, B), rel=1e-12, abs=1e-15)


def test_reductions():
    G = np.random.default_rng(1).standard_normal((6, 3))
    assert hb.minibatch_sum_second_moment(G, 1) == pytest.approx((G * G).sum() / 6)
    assert hb.minibatch_sum_second_moment(G, 6) == pytest.approx(G.sum(0) @ G.sum(0))
    assert hb.minibatch_mean_variance(G, 6) == 0.0


def test_with_replacement_vs_monte_carlo_exact_enumeration():
    import itertools
    G = np.random.default_rng(2).standard_normal((4, 2))
    tuples = np.array(list(itertools.product(range(4), repeat=3)))
    s = G[tuples].sum(1)
    assert hb.minibatch_sum_second_moment(G, 3, replace=True) == pytest.approx((s * s).sum(1).mean(), rel=1e-12)
    m = G[tuples].mean(1) - G.mean(0)
    assert hb.minibatch_mean_variance(G, 3, replace=True) == pytest.approx((m * m).sum(1).mean(), rel=1e-12)


def test_divebatch_rule():
    db = hb.DiveBatch(B0=16, B_max=512, delta=0.1)
    assert db.next_batch_size(16, 1024, 0.05) == 16  # never decreases
    assert db.next_batch_size(16, 1024, 1.0) == 102
    assert db.next_batch_size(16, 1024, 100.0) == 512
    assert db.next_batch_size(16, 1024, np.inf) == 512
    assert db.lr(16) == 0.01 and db.lr(10_000) == 0.5


def test_e1_passes_and_controls_fail():
    r = e1.run(0)
    assert r.passed and all(not c.holds for c in r.negative_controls) and r.runtime_s < 10


def test_e1_mutation_wrong_pair_factor(monkeypatch):
    orig = hb.minibatch_sum_second_moment

    def wrong(G, B, replace=False):  # with-replacement factor used for without-replacement sampling
        return orig(G, B, replace=True)
    monkeypatch.setattr(hb, "minibatch_sum_second_moment", wrong)
    assert not e1.run(0).passed


def test_e1_mutation_inverted_orientation(monkeypatch):
    orig = hb.DiveBatch.run_least_squares

    def inverted(self, *a, **k):
        out = orig(self, *a, **k)
        out["div"] = 1.0 / out["div"]
        return out
    monkeypatch.setattr(hb.DiveBatch, "run_least_squares", inverted)
    assert not e1.run(0).passed
