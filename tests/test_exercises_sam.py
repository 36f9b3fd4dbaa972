"""Tests of the exercise answers of the chapter "D-SGD is average-direction SAM".

The answers live in ``book/solutions/sam.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation: automatic differentiation of a hand-written loss,
exact Gauss–Hermite quadrature, hetlab's polynomial problem and D-SGD run on a ring, and the exact
stationary covariance of hetlab's D-SGD (its affine map probed by ``hetlab.exact`` and the discrete
Lyapunov equation). A wrong formula in the solutions module makes the corresponding test fail.
Seeds are fixed and appear in the test ids.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import sam as sol  # noqa: E402

from hetlab import closed_forms_sam as cs  # noqa: E402
from hetlab.algorithms import DSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import method_affine_map, stationary_moments  # noqa: E402
from hetlab.measures import consensus_covariance  # noqa: E402
from hetlab.problems import CubicQuarticProblem, Oracle, QuadraticProblem  # noqa: E402
from hetlab.topology import make_topology  # noqa: E402

DT = torch.float64


def _instance(seed, d=3, p=4):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q = (U * rng.uniform(0.5, 2.0, d)) @ U.T
    Q = 0.5 * (Q + Q.T)
    a = rng.standard_normal((p, d))
    c = rng.uniform(-1.5, 1.5, p)
    G = rng.standard_normal((d, d))
    Xi = 0.05 * G @ G.T
    return rng, Q, a, c, Xi


def _poly_loss_torch(Q, a, c, k):
    """The loss written by hand in torch (independent of hetlab and of the solutions)."""
    Q, a, c = (torch.as_tensor(v, dtype=DT) for v in (Q, a, c))
    fact = {3: 6.0, 4: 24.0}[k]
    return lambda w: 0.5 * w @ Q @ w + (c * (a @ w) ** k).sum() / fact


def _autograd_trace_term(loss, w, Xi):
    """(1/2 tr(H(w) Xi), its gradient) by double automatic differentiation."""
    w = torch.as_tensor(w, dtype=DT).clone().requires_grad_(True)
    H = torch.autograd.functional.hessian(loss, w, create_graph=True)
    val = 0.5 * torch.trace(H @ torch.as_tensor(Xi, dtype=DT))
    (g,) = torch.autograd.grad(val, w)
    return float(val.detach()), g.numpy()


# ------------------------------------------------------------------------- exercise (a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cubic_correction_against_autograd(seed):
    rng, Q, a, c, Xi = _instance(seed)
    ans = sol.cubic_correction(a, c, Xi)
    loss = _poly_loss_torch(Q, a, c, 3)
    for _ in range(4):  # the correction does not depend on w
        _, g = _autograd_trace_term(loss, rng.standard_normal(3), Xi)
        assert np.abs(ans - g).max() <= 1e-12 * (1 + np.abs(g).max())
    assert np.abs(ans - cs.sam_correction(a, c, np.zeros(3), Xi, 3)).max() <= 1e-15


@pytest.mark.parametrize("seed", [0, 3])
def test_cubic_correction_is_the_mean_gradient_of_the_workers(seed):
    rng, Q, a, c, Xi = _instance(seed)
    w_a = rng.standard_normal(3)
    X = sol.symmetric_workers(w_a, Xi)
    assert X.shape == (6, 3)
    Xt = torch.as_tensor(X)
    assert np.abs(Xt.mean(0).numpy() - w_a).max() <= 1e-14
    assert np.abs(consensus_covariance(Xt).numpy() - Xi).max() <= 1e-14
    prob = CubicQuarticProblem(Q, a, c, degree=3, n=X.shape[0])
    mean_grad = prob.grad(Xt).mean(0).numpy()
    g_a = prob.global_grad(torch.as_tensor(w_a)).numpy()
    corr = sol.cubic_correction(a, c, Xi)
    assert np.abs(mean_grad - g_a - corr).max() <= 1e-12 * np.abs(mean_grad).max()
    assert np.abs(corr).max() > 1e-3  # not vacuous


# ------------------------------------------------------------------------- exercise (b)


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
@pytest.mark.parametrize("common_minimiser", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_dsgd_mean_on_a_shared_quadratic_is_gd(ordering, common_minimiser, seed):
    rng, Q, _, _, _ = _instance(seed)
    n, T, eta = 8, 60, 0.1
    b = rng.standard_normal(3)[None].repeat(n, 0) if common_minimiser else rng.standard_normal((n, 3))
    prob = QuadraticProblem.from_minimizers(np.repeat(Q[None], n, 0), b)
    method = DSGD(eta, make_topology("ring", n), ordering)
    state = method.init(torch.zeros(3, dtype=DT), prob)
    X0 = rng.standard_normal((n, 3))
    state["X"] = torch.as_tensor(X0)
    comm, oracle = SimulatedComm(n), Oracle(prob)
    for _ in range(T):
        state = method.step(state, oracle, comm, None)
    ans = sol.dsgd_mean_quadratic(Q, b.mean(0), X0.mean(0), eta, T)
    assert np.abs(state["X"].numpy().mean(0) - ans).max() <= 1e-12
    assert np.abs(state["X"].numpy() - state["X"].numpy().mean(0)).max() > 1e-3 or common_minimiser


def test_quadratic_has_zero_correction():
    _, Q, a, _, Xi = _instance(5)
    prob = CubicQuarticProblem(Q, a, np.zeros(a.shape[0]), degree=3, n=4)
    assert torch.all(prob.sam_correction_grad(torch.ones(3, dtype=DT), torch.as_tensor(Xi)) == 0)
    _, g = _autograd_trace_term(_poly_loss_torch(Q, a, np.zeros(a.shape[0]), 3), np.ones(3), Xi)
    assert np.abs(g).max() == 0.0


# ------------------------------------------------------------------------- exercise (c)


def _gauss_hermite_mean_grad(prob, w, Sigma, nodes=3):
    """E grad L(w + eps), eps ~ N(0, Sigma), by tensor-product Gauss–Hermite quadrature: exact for the
    quartic's cubic gradient with 3 nodes per dimension (degree <= 5 per variable)."""
    z, wt = np.polynomial.hermite_e.hermegauss(nodes)
    wt = wt / wt.sum()
    d = w.size
    Z = np.array(np.meshgrid(*[z] * d, indexing="ij")).reshape(d, -1).T
    Wt = np.prod(np.array(np.meshgrid(*[wt] * d, indexing="ij")).reshape(d, -1), axis=0)
    Lc = np.linalg.cholesky(Sigma)
    pts = w + Z @ Lc.T
    G = prob.grad(torch.as_tensor(pts), torch.zeros(len(pts), dtype=torch.long)).numpy()
    return Wt @ G


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_expected_gradient_of_the_quartic_by_quadrature(seed):
    rng, Q, a, c, Xi = _instance(seed)
    Sigma = Xi + 0.01 * np.eye(3)
    prob = CubicQuarticProblem(Q, a, c, degree=4, n=1)
    for _ in range(3):
        w = rng.standard_normal(3)
        want = _gauss_hermite_mean_grad(prob, w, Sigma)
        ans = sol.gaussian_expected_gradient_quartic(Q, a, c, w, Sigma)
        assert np.abs(ans - want).max() <= 1e-12 * (1 + np.abs(want).max())
        # and the answer is grad L + the SAM correction, with nothing of third order
        corr = prob.sam_correction_grad(torch.as_tensor(w), torch.as_tensor(Sigma)).numpy()
        g = prob.global_grad(torch.as_tensor(w)).numpy()
        assert np.abs(ans - g - corr).max() <= 1e-12 * (1 + np.abs(ans).max())
    # quadrature with too few nodes is not exact: the test can tell a wrong expectation apart
    w = rng.standard_normal(3)
    assert np.abs(_gauss_hermite_mean_grad(prob, w, Sigma, nodes=1) - sol.gaussian_expected_gradient_quartic(
        Q, a, c, w, Sigma)).max() > 1e-6


@pytest.mark.parametrize("seed", [0, 4])
def test_finite_workers_miss_the_gaussian_by_their_third_moment(seed):
    rng, Q, a, c, Xi = _instance(seed)
    prob = CubicQuarticProblem(Q, a, c, degree=4, n=8)
    w_a = rng.standard_normal(3)
    D = rng.exponential(1.0, size=(8, 3))  # skewed offsets
    D = 0.3 * (D - D.mean(0))
    X = torch.as_tensor(w_a + D)
    Xi_emp = consensus_covariance(X).numpy()
    mean_grad = prob.grad(X).mean(0).numpy()
    gauss = sol.gaussian_expected_gradient_quartic(Q, a, c, w_a, Xi_emp)
    third = sol.empirical_third_order_term(a, c, D)
    assert np.abs(mean_grad - gauss - third).max() <= 1e-12 * np.abs(mean_grad).max()
    assert np.abs(third).max() > 1e-4
    # symmetric workers have no third moment: their mean gradient *is* the Gaussian expectation
    Xs = sol.symmetric_workers(w_a, Xi)
    assert np.abs(sol.empirical_third_order_term(a, c, Xs - w_a)).max() <= 1e-15
    ps = CubicQuarticProblem(Q, a, c, degree=4, n=Xs.shape[0])
    mg = ps.grad(torch.as_tensor(Xs)).mean(0).numpy()
    assert np.abs(mg - sol.gaussian_expected_gradient_quartic(Q, a, c, w_a, Xi)).max() <= 1e-12 * np.abs(mg).max()


# ------------------------------------------------------------------------- exercise (d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagonal_quartic_trace_term(seed):
    rng = np.random.default_rng(seed)
    d = 4
    q, c, w = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 1.5, d), rng.standard_normal(d)
    G = rng.standard_normal((d, d))
    Xi = 0.1 * G @ G.T
    val, grad = sol.diagonal_quartic_trace_term(q, c, w, Xi)
    loss = _poly_loss_torch(np.diag(q), np.eye(d), c, 4)  # a_i = e_i: the separable quartic
    v_ad, g_ad = _autograd_trace_term(loss, w, Xi)
    assert abs(val - v_ad) <= 1e-12 * abs(v_ad) and np.abs(grad - g_ad).max() <= 1e-12 * (1 + np.abs(g_ad).max())
    prob = CubicQuarticProblem(np.diag(q), np.eye(d), c, degree=4, n=1)
    assert np.abs(grad - prob.sam_correction_grad(torch.as_tensor(w), torch.as_tensor(Xi)).numpy()).max() <= 1e-14
    # only the diagonal of Xi matters
    Xi_diag = np.diag(np.diag(Xi))
    v2, g2 = _autograd_trace_term(loss, w, Xi_diag)
    assert abs(v2 - val) <= 1e-12 * abs(val) and np.abs(g2 - grad).max() <= 1e-12 * (1 + np.abs(grad).max())


# ------------------------------------------------------------------------- exercise (e)


def _lyapunov_xi2(n, eta, s2, lam=1.0, d=1):
    """E Xi^2 of hetlab's parallel D-SGD at stationarity, from its probed affine map and the Lyapunov equation."""
    prob = QuadraticProblem.from_minimizers(np.repeat(lam * np.eye(d)[None], n, 0), np.zeros((n, d)))
    M, c, _ = method_affine_map(DSGD(eta, make_topology("ring", n), "parallel"), prob)
    N = -eta * np.eye(n * d)  # the noise enters as X+ = WX - eta (grad + xi)
    _, C = stationary_moments(M, c, N, s2 * np.eye(n * d))
    P = np.kron(np.eye(n) - np.full((n, n), 1.0 / n), np.eye(d))  # state is X flattened row by row
    return float(np.trace(P @ C @ P) / n)


@pytest.mark.parametrize("n, d, eta0, s2", [(16, 1, 0.01, 1.0), (8, 2, 0.02, 0.5), (12, 1, 0.005, 2.0)])
def test_consensus_distance_linear_scaling_against_lyapunov(n, d, eta0, s2):
    W = make_topology("ring", n).W_numpy()
    batches = [1, 2, 4, 8]
    etas, xi2 = sol.consensus_distance_linear_scaling(W, eta0, batches, s2, lam=1.0, d=d)
    assert np.allclose(etas, eta0 * np.array(batches))
    for B, e, x in zip(batches, etas, xi2):
        want = _lyapunov_xi2(n, e, s2 / B, 1.0, d)
        assert abs(x - want) <= 1e-10 * want
    assert np.allclose(xi2, cs.linear_scaling_consensus(W, eta0, batches, s2, lam=1.0, d=d)[1], rtol=1e-12)
    assert np.all(np.diff(xi2) > 0)  # grows with the batch


def test_consensus_distance_is_linear_in_the_batch_for_small_steps():
    W = make_topology("ring", 16).W_numpy()
    batches = np.array([1, 2, 4, 8])
    _, xi2 = sol.consensus_distance_linear_scaling(W, 1e-4, batches, 1.0)
    assert np.allclose(xi2 / xi2[0], batches, rtol=0.01)
