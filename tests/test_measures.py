"""Heterogeneity measures (THEORY §1) against brute-force loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetlab import measures as M
from hetlab.problems import random_quadratics

DT = torch.float64


def _G(n=6, d=4, seed=0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT) + shift


def _q(n=6, seed=1):
    return torch.as_tensor(np.random.default_rng(seed).uniform(0.1, 2.0, n))


def _bf_weighted(G, q):
    """Brute-force weighted quantities with plain loops (q normalised here)."""
    G = G.numpy()
    q = np.asarray(q, dtype=float)
    q = q / q.sum()
    n = len(q)
    gbar = sum(q[i] * G[i] for i in range(n))
    msq = sum(q[i] * G[i] @ G[i] for i in range(n))
    V = sum(q[i] * (G[i] - gbar) @ (G[i] - gbar) for i in range(n))
    cov = sum(q[i] * np.outer(G[i] - gbar, G[i] - gbar) for i in range(n))
    align = sum(q[i] * np.linalg.norm(gbar - G[i]) for i in range(n))
    return gbar, msq, V, cov, align


@pytest.mark.parametrize("weighted", [False, True])
def test_core_identity_and_brute_force(weighted):
    G = _G()
    q = _q() if weighted else None
    qq = q.numpy() if weighted else np.full(6, 1 / 6)
    gbar, msq, V, cov, align = _bf_weighted(G, qq)
    np.testing.assert_allclose(M.weighted_mean(G, q).numpy(), gbar, rtol=1e-13)
    assert M.mean_sq_norm(G, q) == pytest.approx(msq, rel=1e-13)
    assert M.gradient_variance(G, q) == pytest.approx(V, rel=1e-13)
    # core identity sum q ||g_i||^2 = ||gbar||^2 + V
    assert M.mean_sq_norm(G, q) == pytest.approx(gbar @ gbar + M.gradient_variance(G, q), rel=1e-13)
    assert M.b_dissimilarity_sq(G, q) == pytest.approx(msq / (gbar @ gbar), rel=1e-13)
    assert M.b_dissimilarity(G, q) == pytest.approx(math.sqrt(msq / (gbar @ gbar)), rel=1e-13)
    assert M.b_dissimilarity_sq(G, q) == pytest.approx(1 + V / (gbar @ gbar), rel=1e-13)
    assert M.weighted_gradient_diversity(G, q) == pytest.approx(msq / (gbar @ gbar), rel=1e-13)
    assert M.gradient_coherence(G, q) == pytest.approx(1 / M.b_dissimilarity_sq(G, q), rel=1e-13)
    assert M.fedaware_diversity(G, q) == pytest.approx(M.b_dissimilarity(G, q), rel=1e-15)
    assert 0 < M.gradient_coherence(G, q) <= 1
    assert M.b_dissimilarity(G, q) >= 1
    assert M.consensus_distance_sq(G, q) == pytest.approx(V, rel=1e-13)
    assert M.consensus_distance(G, q) == pytest.approx(math.sqrt(V), rel=1e-13)
    C = M.consensus_covariance(G, q)
    np.testing.assert_allclose(C.numpy(), cov, rtol=1e-12, atol=1e-14)
    assert float(torch.trace(C)) == pytest.approx(M.consensus_distance_sq(G, q), rel=1e-13)
    assert M.gradalign_variance(G, q) == pytest.approx(align, rel=1e-13)
    assert M.gradalign_variance(G, q, normalized=True) == pytest.approx(align / np.linalg.norm(gbar), rel=1e-13)


def test_weights_are_used_consistently():
    """Weighted measures differ from the unweighted ones and match a weighted brute force; the
    weights are normalised (scaling q changes nothing)."""
    G, q = _G(), _q()
    for f in (M.mean_sq_norm, M.gradient_variance, M.b_dissimilarity_sq, M.gradient_coherence,
              M.gradalign_variance, M.consensus_distance_sq):
        assert f(G, q) == pytest.approx(f(G, 3.7 * q), rel=1e-13)
        assert abs(f(G, q) - f(G)) > 1e-6 * abs(f(G))
    # uniform weights given explicitly are the default
    u = torch.full((6,), 1 / 6, dtype=DT)
    assert M.gradient_variance(G, u) == pytest.approx(M.gradient_variance(G), rel=1e-14)
    # q = one-hot: everything concentrates on that row
    e = torch.zeros(6, dtype=DT)
    e[2] = 1.0
    torch.testing.assert_close(M.weighted_mean(G, e), G[2])
    assert M.gradient_variance(G, e) == 0.0
    assert M.b_dissimilarity_sq(G, e) == pytest.approx(1.0, rel=1e-14)


def test_gradalign_uses_norms_not_squares():
    G = torch.tensor([[3.0, 0.0], [-1.0, 0.0]], dtype=DT)  # gbar = [1, 0]; deviations 2 and 2
    assert M.gradalign_variance(G) == pytest.approx(2.0, rel=1e-15)  # not 4 (squared)
    assert M.gradalign_variance(G, normalized=True) == pytest.approx(2.0, rel=1e-15)
    G = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]], dtype=DT)
    gbar = G.mean(0)
    assert M.gradalign_variance(G) == pytest.approx(float((G - gbar).norm(dim=1).mean()), rel=1e-15)
    assert M.gradalign_variance(G) != pytest.approx(float(((G - gbar) ** 2).sum(1).mean()), rel=1e-3)


@pytest.mark.parametrize("n", [2, 5, 9])
def test_yin_diversity_relations(n):
    G = _G(n=n, d=3, seed=n)
    Delta = M.gradient_diversity(G)
    Gn = G.numpy()
    assert Delta == pytest.approx(sum(g @ g for g in Gn) / (Gn.sum(0) @ Gn.sum(0)), rel=1e-13)
    assert Delta == pytest.approx(M.b_dissimilarity_sq(G) / n, rel=1e-13)  # uniform weights
    assert M.gradient_coherence(G) == pytest.approx(1 / (n * Delta), rel=1e-13)
    assert Delta >= 1 / n
    # equality for identical rows
    same = G[:1].expand(n, 3).clone()
    assert M.gradient_diversity(same) == pytest.approx(1 / n, rel=1e-14)
    assert M.b_dissimilarity(same) == pytest.approx(1.0, rel=1e-14)
    assert M.gradient_coherence(same) == pytest.approx(1.0, rel=1e-14)
    assert M.gradient_variance(same) == pytest.approx(0.0, abs=1e-28)


def test_mean_pairwise_inner_product_brute_force_and_sign():
    rng = np.random.default_rng(0)
    n_pos = n_neg = 0
    for trial in range(40):
        n = int(rng.integers(2, 7))
        G = torch.as_tensor(rng.standard_normal((n, 3)) + rng.uniform(-1, 1, 3))
        Gn = G.numpy()
        bf = sum(Gn[i] @ Gn[j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        mpi = M.mean_pairwise_inner_product(G)
        assert mpi == pytest.approx(bf, rel=1e-12, abs=1e-14)
        s = Gn.sum(0)
        # the formula of THEORY §1: (n^2 ||gbar||^2 - sum ||g_i||^2) / (n(n-1))
        assert mpi == pytest.approx((s @ s - (Gn * Gn).sum()) / (n * (n - 1)), rel=1e-12, abs=1e-14)
        # positive iff Delta < 1
        assert (mpi > 0) == (M.gradient_diversity(G) < 1)
        n_pos += mpi > 0
        n_neg += mpi < 0
    assert n_pos > 0 and n_neg > 0  # both cases were exercised
    with pytest.raises(ValueError, match="at least two"):
        M.mean_pairwise_inner_product(torch.ones(1, 3, dtype=DT))


def test_pairwise_cosine():
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]], dtype=DT)
    C = M.pairwise_cosine(G)
    ref = np.array([[G[i] @ G[j] / (G[i].norm() * G[j].norm()) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(C.numpy(), ref, rtol=1e-14, atol=1e-15)
    assert C[0, 2] == pytest.approx(-1.0) and C[0, 1] == pytest.approx(0.0)
    assert torch.isnan(M.pairwise_cosine(torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=DT))[0, 1])


def test_guards_return_inf_when_mean_vanishes():
    G = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0], [-0.5, 0.0]], dtype=DT)
    assert M.b_dissimilarity(G) == math.inf
    assert M.b_dissimilarity_sq(G) == math.inf
    assert M.weighted_gradient_diversity(G) == math.inf
    assert M.gradient_diversity(G) == math.inf
    assert M.fedaware_diversity(G) == math.inf
    assert M.gradient_coherence(G) == 0.0
    assert M.gradalign_variance(G, normalized=True) == math.inf
    Z = torch.zeros(3, 2, dtype=DT)  # 0/0: nan, not an exception
    assert math.isnan(M.b_dissimilarity_sq(Z)) and math.isnan(M.gradient_coherence(Z))
    assert math.isnan(M.gradient_diversity(Z))


def test_gb_dissimilarity_holds():
    G, q = _G(), _q()
    gbar, msq, V, _, _ = _bf_weighted(G, q.numpy())
    assert M.gb_dissimilarity_holds(G, V, 1.0, q)  # equality case (core identity)
    assert not M.gb_dissimilarity_holds(G, 0.99 * V, 1.0, q)
    assert M.gb_dissimilarity_holds(G, 0.0, msq / (gbar @ gbar) + 1e-9, q)


def test_shape_checks():
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        M.gradient_variance(torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match=r"weights must have shape \[3\]"):
        M.gradient_variance(torch.zeros(3, 2, dtype=DT), torch.ones(4, dtype=DT))


def test_problem_level_measures():
    P = random_quadratics(5, 3, seed=4, weights=[1, 2, 3, 1, 1])
    assert M.zeta_star_sq(P) == pytest.approx(P.zeta_star_sq, rel=1e-12)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    h = M.heterogeneity_at(P, x)
    G = P.local_grads(x)
    q = P.weights
    gbar = (q @ G).numpy()
    assert h["grad_norm_sq"] == pytest.approx(gbar @ gbar, rel=1e-13)
    assert h["gradient_variance"] == pytest.approx(_bf_weighted(G, q.numpy())[2], rel=1e-13)
    assert h["b_dissimilarity"] ** 2 == pytest.approx(1 + h["gradient_variance"] / h["grad_norm_sq"], rel=1e-12)
    assert h["gradient_coherence"] == pytest.approx(1 / h["weighted_gradient_diversity"], rel=1e-13)
    assert h["gradient_diversity"] == pytest.approx(M.gradient_diversity(G), rel=1e-15)
    # near a heterogeneous optimum B blows up (pitfall ii)
    assert M.heterogeneity_at(P, P.x_star)["b_dissimilarity"] > 1e6
