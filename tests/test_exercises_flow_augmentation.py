"""Tests of the exercise answers of the chapter "On-manifold augmentation with an invertible flow".

The answers live in ``book/solutions/flow_augmentation.py`` (closed forms in NumPy/SciPy). Each test checks an
answer against an *independent* computation with hetlab: projected gradient ascent in the latent space of its
affine flows (``hetlab.flows.latent_pgd``), input-space PGD (``IdentityFlow``), its distance to the fitted
manifold, and Monte Carlo with its mixture sampler. Mutation tests show that a wrong formula written here is
caught by the same comparison.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import flow_augmentation as sol  # noqa: E402

from hetlab.flows import (AffineFlow, IdentityFlow, gaussian_mixture_2d, latent_pgd,  # noqa: E402
                          logistic_loss)

DT = torch.float64
SIGMA = np.array([[4.0, 1.0], [1.0, 1.0]])
W = np.array([1.0, -2.0])


def _points(n, d, seed):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal((n, d)))


def _pgd_decoded(flow, w, x, y, eps, steps=100):
    wt = torch.as_tensor(w)
    x_adv, _ = latent_pgd(flow, lambda xa, yy: logistic_loss(yy * (xa @ wt)), x, y, eps, steps=steps)
    return (x_adv - x).numpy()

# ------------------------------------------------------------------------------------ fa-ex-factor


@pytest.mark.parametrize("factor", [sol.cholesky_factor, sol.symmetric_factor])
def test_decoded_adversary_by_latent_pgd_for_both_factors(factor):
    L = factor(SIGMA)
    assert np.allclose(L @ L.T, SIGMA, atol=1e-12)
    flow = AffineFlow(np.zeros(2), L)
    x = _points(6, 2, 0)
    y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=DT)
    dx = _pgd_decoded(flow, W, x, y, 0.5)
    for i in range(6):
        assert np.allclose(dx[i], sol.decoded_adversary(SIGMA, W, float(y[i]), 0.5), atol=1e-12)
        assert abs(-float(y[i]) * dx[i] @ W - sol.margin_drop(SIGMA, W, 0.5)) < 1e-12


def test_factor_mutation_is_detected():
    # a wrong answer (the inverse covariance: Sigma^{-1} w instead of Sigma w) is far from latent PGD
    flow = AffineFlow(np.zeros(2), sol.cholesky_factor(SIGMA))
    x, y = _points(1, 2, 1), torch.tensor([1.0], dtype=DT)
    dx = _pgd_decoded(flow, W, x, y, 0.5)[0]
    Si = np.linalg.inv(SIGMA)
    wrong = -0.5 * (Si @ W) / np.sqrt(W @ Si @ W)
    assert np.linalg.norm(dx - wrong) > 1e-2

# ------------------------------------------------------------------------------------ fa-ex-euclid


def _random_spd(d, seed):
    A = np.random.default_rng(seed).standard_normal((d, d))
    return A @ A.T + 0.1 * np.eye(d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_euclidean_efficiency_against_latent_and_input_pgd(seed):
    S = _random_spd(4, seed)
    w = np.random.default_rng(seed + 10).standard_normal(4)
    flow = AffineFlow(np.zeros(4), sol.cholesky_factor(S))
    x, y = _points(3, 4, seed), torch.tensor([1.0, -1.0, 1.0], dtype=DT)
    eps = 0.3
    dx_lat = _pgd_decoded(flow, w, x, y, eps)
    r = np.linalg.norm(dx_lat, axis=1)                          # Euclidean size of the latent adversary
    drop_lat = -y.numpy() * (dx_lat @ w)
    dx_in = np.stack([_pgd_decoded(IdentityFlow(), w, x[i:i + 1], y[i:i + 1], float(r[i]))[0] for i in range(3)])
    drop_in = -y.numpy() * (dx_in @ w)                         # = r ||w|| for the input-space adversary
    measured = drop_lat / drop_in
    assert np.allclose(measured, sol.euclidean_efficiency(S, w), atol=1e-10)
    assert sol.euclidean_efficiency(S, w) <= 1.0
    # mutation: forgetting the square root in the latent drop is detected
    wrong = (w @ S @ w) / (np.linalg.norm(S @ w) * np.linalg.norm(w)) ** 0.5
    assert np.abs(measured - wrong).max() > 1e-3


def test_eigenvector_case_has_efficiency_one():
    S = _random_spd(3, 5)
    lam, V = np.linalg.eigh(S)
    w = V[:, 1]
    flow = AffineFlow(np.zeros(3), sol.symmetric_factor(S))
    x, y = _points(1, 3, 0), torch.tensor([1.0], dtype=DT)
    dx = _pgd_decoded(flow, w, x, y, 0.7)[0]
    assert abs(-(dx @ w) / (np.linalg.norm(dx) * np.linalg.norm(w)) - sol.efficiency_eigenvector_case()) < 1e-12
    assert abs(sol.euclidean_efficiency(S, w) - 1.0) < 1e-12

# ------------------------------------------------------------------------------------ fa-ex-offmanifold


@pytest.mark.parametrize("seed", [0, 1])
def test_offmanifold_distance_of_input_pgd(seed):
    rng = np.random.default_rng(seed)
    B, m = rng.standard_normal((3, 2)), rng.standard_normal(3)
    X = torch.as_tensor(m + rng.standard_normal((100, 2)) @ B.T)
    flow = AffineFlow.from_data(X)
    assert flow.k == 2
    w = rng.standard_normal(3)
    y = torch.ones(5, dtype=DT)
    r = 0.8
    wt = torch.as_tensor(w)
    x_adv, _ = latent_pgd(IdentityFlow(), lambda xa, yy: logistic_loss(yy * (xa @ wt)), X[:5], y, r, steps=100)
    meas = flow.distance_to_manifold(x_adv).numpy()
    assert np.allclose(meas, sol.offmanifold_distance(B, w, r), rtol=1e-10)
    # latent perturbations never leave: distance at rounding level
    x_lat, _ = latent_pgd(flow, lambda xa, yy: logistic_loss(yy * (xa @ wt)), X[:5], y, r, steps=20)
    assert flow.distance_to_manifold(x_lat).max() < 1e-12
    # mutation: the on-manifold part ||P w|| instead of ||(I - P) w||
    Q, _ = np.linalg.qr(B)
    wrong = r * np.linalg.norm(Q @ (Q.T @ w)) / np.linalg.norm(w)
    assert np.abs(meas - wrong).max() > 1e-3

# ------------------------------------------------------------------------------------ fa-ex-gap


def _mixture_1d(n, a, s, seed):
    X, _, _ = gaussian_mixture_2d(n, [[-a, 0.0], [a, 0.0]], [np.diag([s * s, 1.0])] * 2, seed=seed)
    return X[:, 0].numpy()


@pytest.mark.parametrize("a, s", [(1.0, 1.0), (2.0, 0.5), (3.0, 1.0)])
def test_latent_mode_distance_by_monte_carlo(a, s):
    n = 400_000
    x = _mixture_1d(n, a, s, seed=int(10 * a + s))
    F_hat = np.array([(x <= a).mean(), (x <= -a).mean()])
    z_hat = norm.ppf(F_hat)
    dist_hat = z_hat[0] - z_hat[1]
    # standard error of Phi^{-1}(F_hat): sqrt(F(1-F)/n)/phi(z), for each end
    F = 0.25 + 0.5 * norm.cdf(2 * a / s)
    se = 2 * np.sqrt(F * (1 - F) / n) / norm.pdf(norm.ppf(F))
    assert abs(dist_hat - sol.latent_mode_distance(a, s)) < 5 * se
    # mutation: the answer of the affine (Gaussian) flow, 2a / sqrt(a^2 + s^2), is not the exact flow's
    wrong = 2 * a / np.sqrt(a * a + s * s)
    assert abs(dist_hat - wrong) > 10 * se
    if a / s < 1.5:  # the typo Phi(a/s) for Phi(2a/s) only shows when the modes overlap
        assert abs(dist_hat - 2 * norm.ppf(0.25 + 0.5 * norm.cdf(a / s))) > 10 * se


def test_the_1d_flow_maps_the_mixture_to_a_standard_normal_and_the_limit():
    a, s = 2.0, 0.5
    z = sol.latent_position_1d(_mixture_1d(200_000, a, s, seed=3), a, s)
    assert abs(z.mean()) < 5 / np.sqrt(len(z)) and abs(z.var() - 1) < 5 * np.sqrt(2 / len(z))
    assert abs(sol.latent_mode_distance(8.0, 1.0) - sol.latent_mode_distance_limit()) < 1e-12
    assert abs(norm.cdf(sol.latent_mode_distance_limit() / 2) - 0.75) < 1e-12
    grid = np.linspace(-5, 5, 101)
    assert np.all(np.diff(sol.latent_position_1d(grid, a, s)) > 0)
