"""Tests of the exercise answers of the chapter "Spectral regularization and plasticity".

The answers live in ``book/solutions/spectral_regularization.py`` (closed forms in plain NumPy). Each test checks
an answer against an independent computation with hetlab: the kernel of ``hetlab.plasticity`` assembled from
Kronecker products of partial products (not from the closed forms), gradient descent run by
``continual_deep_linear`` / ``deep_linear_grads``, the library's regularizers and bounds. Mutation tests show
that a wrong formula (a missing square root, a wrong exponent, a threshold of beta instead of 2 beta, an
off-by-one power) is caught by the same comparison.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import spectral_regularization as sol  # noqa: E402

from hetlab import plasticity as pl  # noqa: E402

SPECTRA = [np.linspace(0.9, 0.3, 4), np.array([1.0, 0.5]), np.array([2.0, 1.5, 0.2]), np.array([0.7])]


def _scalar_layers(ws):
    return [np.array([[w]], dtype=np.float64) for w in ws]


# ------------------------------------------------------------------------------------------- sr-ex-balanced
@pytest.mark.parametrize("svals", SPECTRA)
@pytest.mark.parametrize("L", [1, 2, 3, 6])
def test_balanced_extremes_against_library_kernel(svals, L):
    rng = np.random.default_rng(L)
    d = len(svals)
    M = pl.random_rotation(d, rng) @ np.diag(svals) @ pl.random_rotation(d, rng).T if d > 1 else np.diag(svals)
    lam = pl.ntk_eigenvalues(pl.balanced_factorization(M, L, rng))
    lo, hi = sol.balanced_kernel_extremes(svals, L)
    assert abs(lam[0] - lo) < 1e-11 * hi and abs(lam[-1] - hi) < 1e-11 * hi
    assert abs(sol.balanced_condition_number(svals, L) - lam[-1] / lam[0]) < 1e-10 * lam[-1] / lam[0]
    for lr in (0.04, 0.3):
        assert abs(sol.balanced_local_rate(svals, L, lr) - pl.gd_local_rate(lam, lr)) < 1e-12


def test_balanced_rate_is_what_gd_shows():
    """GD from a point near a balanced solution decays at the predicted rate (residual ratio at the tail)."""
    svals, L, lr = np.linspace(0.9, 0.3, 4), 3, 0.04
    rng = np.random.default_rng(0)
    M = np.diag(svals)
    Ws = [W + 1e-3 * rng.standard_normal(W.shape) for W in pl.balanced_factorization(M, L)]
    res = [np.linalg.norm(pl.end_to_end(Ws) - M)]
    while res[-1] > 1e-10:
        Ws = [W - lr * g for W, g in zip(Ws, pl.deep_linear_grads(Ws, M))]
        res.append(np.linalg.norm(pl.end_to_end(Ws) - M))
    tail = (res[-1] / res[-101]) ** (1 / 100)
    assert abs(tail - sol.balanced_local_rate(svals, L, lr)) < 1e-4


def test_mutation_wrong_exponent_is_detected():
    svals, L = np.linspace(0.9, 0.3, 4), 3
    lam = pl.ntk_eigenvalues(pl.balanced_factorization(np.diag(svals), L))
    wrong = L * svals.min() ** (2.0 * L / (L + 1))            # exponent 2L/(L+1) instead of 2(L-1)/L
    assert abs(lam[0] - wrong) > 1e-3


# ------------------------------------------------------------------------------------------- sr-ex-valley
@pytest.mark.parametrize("m, delta", [(0.5, 0.0), (0.5, 3.0), (-0.8, -2.0), (1.3, 0.7)])
def test_valley_kernel_against_library(m, delta):
    # the point of the valley w2 w1 = m with w2^2 - w1^2 = delta
    w1sq = (-delta + np.sqrt(delta ** 2 + 4 * m ** 2)) / 2
    w1 = np.sqrt(w1sq)
    w2 = m / w1
    assert abs(w2 ** 2 - w1 ** 2 - delta) < 1e-12
    Ws = _scalar_layers([w1, w2])
    assert abs(pl.imbalance(Ws)[0][0, 0] - delta) < 1e-12
    lam = pl.ntk_eigenvalues(Ws)
    assert abs(lam[0] - sol.valley_kernel(m, delta)) < 1e-12
    assert abs(sol.valley_local_rate(m, delta, 0.3) - pl.gd_local_rate(lam, 0.3)) < 1e-12


def test_critical_imbalance_separates_stable_from_unstable_gd():
    """A tiny step off the valley shrinks under GD below the critical imbalance and grows above it, by the factor
    |1 - lr K| per step (measured over 10 steps of the library's GD)."""
    m, lr = 0.5, 0.4
    dc = sol.critical_imbalance(m, lr)
    M = np.array([[m]])
    for factor in (0.9, 0.95, 1.05, 1.1):
        delta = factor * dc
        w1 = np.sqrt((-delta + np.sqrt(delta ** 2 + 4 * m ** 2)) / 2)
        Ws = _scalar_layers([w1 * (1 + 1e-7), m / w1])
        r0 = abs(pl.end_to_end(Ws)[0, 0] - m)
        for _ in range(10):
            Ws = [W - lr * g for W, g in zip(Ws, pl.deep_linear_grads(Ws, M))]
        growth = (abs(pl.end_to_end(Ws)[0, 0] - m) / r0) ** 0.1
        assert abs(growth - sol.valley_local_rate(m, delta, lr)) < 1e-4
        assert (growth < 1) == (factor < 1)


def test_capped_imbalance_against_sampled_points():
    rng = np.random.default_rng(1)
    m = 0.6
    dmax, kmax = sol.capped_imbalance(m)
    seen_d, seen_k = 0.0, 0.0
    for w1 in rng.uniform(m, 1.0, 2000):                    # |w1| <= 1 and |w2| = m/|w1| <= 1
        Ws = _scalar_layers([w1, m / w1])
        seen_d = max(seen_d, abs(pl.imbalance(Ws)[0][0, 0]))
        seen_k = max(seen_k, pl.ntk_eigenvalues(Ws)[0])
    assert seen_d <= dmax + 1e-12 and dmax - seen_d < 1e-3
    assert seen_k <= kmax + 1e-12 and kmax - seen_k < 1e-3
    with pytest.raises(ValueError):
        sol.capped_imbalance(1.2)


def test_mutation_valley_without_square_root_is_detected():
    Ws = _scalar_layers([0.25, 2.0])                       # m = 0.5, delta = 3.9375
    assert abs(pl.ntk_eigenvalues(Ws)[0] - (3.9375 ** 2 + 4 * 0.25)) > 1.0


# ------------------------------------------------------------------------------------------- sr-ex-decay
@pytest.mark.parametrize("m, beta", [(0.8, 0.05), (0.8, 0.3), (0.3, 0.2), (1.5, 0.1)])
def test_weight_decay_minimiser_against_library_gd(m, beta):
    out = pl.continual_deep_linear([np.array([[m]])], _scalar_layers([0.9, 1.1]), ("l2",), strength=beta, lr=0.05,
                                   tol=1e-14, max_iter=4000)
    W = out["weights"][0, 0]
    p = float(W[1, 0, 0] * W[0, 0, 0])
    assert abs(p - sol.weight_decay_product(m, beta)) < 1e-6
    assert abs(0.5 * (p - m) ** 2 - sol.weight_decay_excess(m, beta)) < 1e-6
    if m > 2 * beta:
        assert abs(abs(W[0, 0, 0]) - abs(W[1, 0, 0])) < 1e-6   # balanced at the minimiser


def test_mutation_threshold_beta_instead_of_two_beta_is_detected():
    out = pl.continual_deep_linear([np.array([[0.8]])], _scalar_layers([0.9, 1.1]), ("l2",), strength=0.1, lr=0.05,
                                   tol=1e-14, max_iter=4000)
    p = float(out["weights"][0, 0, 1, 0, 0] * out["weights"][0, 0, 0, 0, 0])
    assert abs(p - (0.8 - 0.1)) > 0.05


@pytest.mark.parametrize("svals", [np.array([0.9, 0.7, 0.5, 0.3]), np.array([1.0, 0.2]), np.array([0.5, 0.5, 0.1])])
def test_spectral_exact_factors_have_zero_penalty_and_fit(svals):
    W1, W2 = sol.spectral_exact_factors(svals)
    assert np.abs(pl.end_to_end([W1, W2]) - np.diag(svals)).max() < 1e-15
    assert float(pl.spectral_regularizer([torch.tensor(W1), torch.tensor(W2)])) < 1e-28
    # the library's regularized GD started there does not move: the gradient of loss + penalty is zero
    g = [a + 0.5 * b for a, b in zip(pl.deep_linear_grads([W1, W2], np.diag(svals)),
                                     (pl.regularizer_grad("spectral", W) for W in (W1, W2)))]
    assert max(np.abs(x).max() for x in g) < 1e-14
    with pytest.raises(ValueError):
        sol.spectral_exact_factors([0.5])


# ------------------------------------------------------------------------------------------- sr-ex-floor
@pytest.mark.parametrize("L", [2, 3, 5])
def test_tight_layers_attain_the_library_floor(L):
    svals, s_bar = np.linspace(0.9, 0.3, 4), 1.01
    for i in range(L):
        Ws = sol.tight_layers(svals, s_bar, L, i)
        assert np.abs(pl.end_to_end(Ws) - np.diag(svals)).max() < 1e-14
        b = pl.plasticity_bounds(Ws)
        assert np.all(b["sigma_max"] <= s_bar + 1e-12)
        assert abs(b["sigma_min"][i] - sol.sigma_min_floor(0.3, s_bar, L)) < 1e-14
        assert abs(b["sigma_min_floor"][i] - b["sigma_min"][i]) < 1e-14     # the library's bound is attained


def test_floor_holds_for_random_capped_solutions():
    """Random factorisations of M with every layer scaled to sigma_max <= s_bar never go below the floor."""
    rng = np.random.default_rng(2)
    svals, L = np.linspace(0.9, 0.3, 4), 3
    M = np.diag(svals)
    for _ in range(200):
        W1, W2 = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
        W3 = M @ np.linalg.inv(W2 @ W1)
        Ws = [W1, W2, W3]
        s_bar = max(np.linalg.svd(W, compute_uv=False)[0] for W in Ws)
        smin = min(np.linalg.svd(W, compute_uv=False)[-1] for W in Ws)
        assert smin >= sol.sigma_min_floor(0.3, s_bar, L) - 1e-12


def test_rescaling_leaves_the_function_and_collapses_the_floor():
    svals = np.linspace(0.9, 0.3, 4)
    M = np.diag(svals)
    for c in (1.0, 10.0, 1e3):
        Ws = sol.rescaled_layers(svals, 3, c)
        assert np.abs(pl.end_to_end(Ws) - M).max() < 1e-12 * c
        assert pl.deep_linear_loss(Ws, M) < 1e-20 * c ** 2
    Ws = sol.rescaled_layers(svals, 3, 1e3)
    assert pl.plasticity_bounds(Ws)["sigma_min"][0] < 1e-3
    assert pl.ntk_eigenvalues(Ws)[-1] > 1e5                 # ... and the kernel's top eigenvalue explodes


def test_mutation_floor_with_power_L_is_detected():
    Ws = sol.tight_layers(np.linspace(0.9, 0.3, 4), 1.1, 3)
    assert abs(pl.plasticity_bounds(Ws)["sigma_min"][0] - 0.3 / 1.1 ** 3) > 1e-3
