"""Tests of the exercise answers of the chapter "Implicit regularization of (stochastic) gradient descent".

The answers live in ``book/solutions/implicit_regularization.py`` (closed forms in plain NumPy). Each test
checks an answer against an *independent* computation: symbolic series (sympy), ``scipy.linalg.logm`` and
``expm``, hetlab's ``GD`` and ``RandomReshuffling`` run or probed (``hetlab.exact``), the exact enumeration of
reshuffled epochs, automatic differentiation of the modified loss written out by hand, and brute-force sums
over pairs. A wrong formula in the solutions module makes the corresponding test fail. Seeds are fixed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import sympy
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import implicit_regularization as sol  # noqa: E402

from hetlab import measures as hm  # noqa: E402
from hetlab import modified_losses as ml  # noqa: E402
from hetlab.algorithms import GD, RandomReshuffling, shuffling  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import affine_fixed_point, fit_slope, method_affine_map  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem, random_quadratics  # noqa: E402

DT = torch.float64
ETAS = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])


def _spd(seed, d=3, spectrum=(0.5, 2.0)):
    return random_quadratics(1, d, spectrum=spectrum, seed=seed).A[0].numpy()

# ------------------------------------------------------------------------- (a) matrix-log series


def test_series_coefficients_by_sympy():
    u = sympy.symbols("u")
    series = sympy.series(-sympy.log(1 - u), u, 0, 9).removeO()
    for k in range(1, 9):
        assert float(series.coeff(u, k)) == pytest.approx(sol.log_series_coefficient(k), rel=1e-15)
    with pytest.raises(ValueError):
        sol.log_series_coefficient(0)


@pytest.mark.parametrize("seed, h", [(0, 0.05), (1, 0.2), (2, 0.4)])
def test_partial_sums_against_matrix_powers_and_logm(seed, h):
    H = _spd(seed)
    for K in (1, 2, 3, 6):
        direct = sum(h ** (k - 1) / k * np.linalg.matrix_power(H, k) for k in range(1, K + 1))
        assert np.abs(sol.modified_hessian_partial_sum(H, h, K) - direct).max() < 1e-13
    M = -np.real(scipy.linalg.logm(np.eye(3) - h * H)) / h
    assert np.abs(sol.modified_hessian_partial_sum(H, h, 80) - M).max() < 1e-12


@pytest.mark.parametrize("seed, h, tol", [(0, 0.05, 1e-10), (3, 0.1, 1e-8), (4, 0.3, 1e-6)])
def test_order_needed_by_brute_force(seed, h, tol):
    H = _spd(seed)
    M = -np.real(scipy.linalg.logm(np.eye(3) - h * H)) / h
    errs = [np.linalg.norm(M - sum(h ** (k - 1) / k * np.linalg.matrix_power(H, k) for k in range(1, K + 1)), 2)
            for K in range(1, 40)]
    brute = 1 + next(i for i, e in enumerate(errs) if e <= tol)
    assert sol.series_order_needed(H, h, tol) == brute


def test_order_needed_on_the_b1_matrix():
    from proofs_check import b1_gd_implicit_gradient_regularizer as b1
    H = ml.objective(b1.make_problem(0)[0]).H
    K = sol.series_order_needed(H, 0.05, 1e-10)
    M = ml.gd_exact_modified_hessian(H, 0.05)
    assert np.linalg.norm(M - ml.log_series_hessian(H, 0.05, K), 2) <= 1e-10
    assert np.linalg.norm(M - ml.log_series_hessian(H, 0.05, K - 1), 2) > 1e-10
    with pytest.raises(ValueError):
        sol.series_order_needed(H, 10.0, 1e-3)

# ------------------------------------------------------------------------------ (b) GD on a line


@pytest.mark.parametrize("a, b, h", [(2.0, 1.0, 0.05), (2.0, 1.0, 0.45), (0.7, -3.0, 1.2), (5.0, 0.5, 0.01)])
def test_1d_modified_curvature_reproduces_library_gd(a, b, h):
    line = QuadraticProblem.from_minimizers(np.array([[[a]]]), np.array([[b]]))
    m = sol.gd_1d_modified_curvature(a, h)
    gd, x0 = GD(h), 3.0
    state = gd.init(torch.tensor([x0], dtype=DT), line)
    for t in range(1, 31):
        state = gd.step(state, Oracle(line), SimulatedComm(1), None)
        flow = b + np.exp(-t * h * m) * (x0 - b)
        assert abs(float(state["x"][0]) - flow) <= 1e-13 * max(1.0, abs(x0 - b))


def test_1d_igr_curvature_and_gap():
    a = 1.7
    line = QuadraticProblem.from_minimizers(np.array([[[a]]]), np.array([[0.3]]))
    hs = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])
    for h in hs:
        assert sol.gd_1d_igr_curvature(a, h) == pytest.approx(float(ml.igr_loss(line, h).H[0, 0]), rel=1e-14)
    gaps = np.array([sol.gd_1d_modified_curvature(a, h) - sol.gd_1d_igr_curvature(a, h) for h in hs])
    rest = gaps - np.array([sol.gd_1d_curvature_gap_leading(a, h) for h in hs])
    assert abs(fit_slope(hs, gaps).slope - 2) < 0.05                 # the gap is O(h^2) ...
    assert abs(fit_slope(hs, rest).slope - 3) < 0.05                 # ... with the leading term h^2 a^3 / 3
    hh = sympy.symbols("h")
    exact = sympy.series(-sympy.log(1 - hh * a) / hh, hh, 0, 4).removeO()
    assert float(exact.coeff(hh, 2)) == pytest.approx(a ** 3 / 3, rel=1e-12)


def test_1d_no_modified_loss_past_ha_one():
    a, b = 2.0, 1.0
    line = QuadraticProblem.from_minimizers(np.array([[[a]]]), np.array([[b]]))
    for h in (0.5, 0.75, 0.9):
        with pytest.raises(ValueError):
            sol.gd_1d_modified_curvature(a, h)
    # ha = 1: one step to the minimiser; 1 < ha < 2: x - b changes sign every step (no flow can cross b)
    gd = GD(0.5)
    s = gd.step(gd.init(torch.tensor([3.0], dtype=DT), line), Oracle(line), SimulatedComm(1), None)
    assert abs(float(s["x"][0]) - b) < 1e-15
    gd = GD(0.75)
    s = gd.init(torch.tensor([3.0], dtype=DT), line)
    signs = []
    for _ in range(6):
        s = gd.step(s, Oracle(line), SimulatedComm(1), None)
        signs.append(np.sign(float(s["x"][0]) - b))
    assert all(s1 == -s2 for s1, s2 in zip(signs, signs[1:]))

# ------------------------------------------------------------------------------ (c) two minibatches


def _two(seed):
    p = random_quadratics(2, 3, seed=seed)
    return p, p.A.numpy(), p.b.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_minibatch_loss_follows_the_enumerated_mean(seed):
    p, A, b = _two(seed)
    x0 = np.random.default_rng(seed).standard_normal(3)
    res = []
    for e in ETAS:
        H, c = sol.rr_two_minibatch_modified_loss(A[0], b[0], A[1], b[1], e)
        xF = np.linalg.solve(H, c)
        flow = xF + scipy.linalg.expm(-2 * e * H) @ (x0 - xF)
        res.append(np.linalg.norm(shuffling.expected_epoch(p, e, torch.as_tensor(x0)).numpy() - flow))
    assert fit_slope(ETAS, res).slope >= 2.8
    # and it is the library's RR loss
    lib = ml.sgd_rr_loss(p, 0.03)
    H, c = sol.rr_two_minibatch_modified_loss(A[0], b[0], A[1], b[1], 0.03)
    assert np.abs(H - lib.H).max() < 1e-14 and np.abs(c - lib.c).max() < 1e-14


@pytest.mark.parametrize("seed", [0, 5])
def test_two_minibatch_epoch_matrix_from_the_probed_fixed_orders(seed):
    p, A, _ = _two(seed)
    eta = 0.1
    Ms = [method_affine_map(RandomReshuffling(eta, order=o), p)[0] for o in ((0, 1), (1, 0))]
    assert np.abs(0.5 * (Ms[0] + Ms[1]) - sol.rr_two_minibatch_epoch_matrix(A[0], A[1], eta)).max() < 1e-14
    # one order alone is (I - eta A_2)(I - eta A_1): not symmetric, unlike the mean
    assert np.abs(Ms[0] - Ms[0].T).max() > 1e-4


def test_two_minibatch_second_order_agreement():
    _, A, b = _two(7)
    gaps_exp, gaps_2nd = [], []
    for e in ETAS:
        P = sol.rr_two_minibatch_epoch_matrix(A[0], A[1], e)
        H, _ = sol.rr_two_minibatch_modified_loss(A[0], b[0], A[1], b[1], e)
        gaps_exp.append(np.linalg.norm(P - scipy.linalg.expm(-2 * e * H)))
        gaps_2nd.append(np.linalg.norm(P - sol.rr_two_minibatch_epoch_matrix_second_order(A[0], A[1], e)))
    assert abs(fit_slope(ETAS, gaps_exp).slope - 3) < 0.1
    # the mean epoch matrix is exactly quadratic in eta, so the second-order expansion of the flow matches it
    # exactly: the eta^2 terms agree
    assert max(gaps_2nd) < 1e-14

# ------------------------------------------------------------------------ (d) the modified minimiser


def _autograd_minimiser(p, eta):
    """Minimiser of f + eta/(4m) sum_k ||grad f_k||^2, the loss written with autograd: one Newton step from 0
    (exact for a quadratic)."""
    def F(x):
        losses = p.loss(x.expand(p.n, p.d))
        G = torch.stack([torch.autograd.grad(losses[k], x, create_graph=True)[0] for k in range(p.n)])
        return losses.mean() + eta / (4 * p.n) * (G * G).sum()
    x0 = torch.zeros(p.d, dtype=DT, requires_grad=True)
    g = torch.autograd.grad(F(x0), x0)[0]
    H = torch.autograd.functional.hessian(F, x0)
    return (-torch.linalg.solve(H, g)).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modified_minimiser_against_autograd(seed):
    p = random_quadratics(4, 3, seed=seed)
    for e in (0.04, 0.01):
        assert np.abs(sol.rr_modified_minimiser(p.A.numpy(), p.b.numpy(), e) - _autograd_minimiser(p, e)).max() < 1e-12


@pytest.mark.parametrize("seed", [0, 3])
def test_displacement_and_stationary_mean_of_reshuffling(seed):
    p = random_quadratics(4, 3, seed=seed)
    A, b, xs = p.A.numpy(), p.b.numpy(), p.x_star.numpy()
    d1, d2, d3 = [], [], []
    for e in ETAS:
        xF = sol.rr_modified_minimiser(A, b, e)
        z = affine_fixed_point(*shuffling.expected_epoch_affine_map(p, e))   # long-run mean of RR (library)
        d1.append(np.linalg.norm(z - xs))
        d2.append(np.linalg.norm(z - xs - sol.rr_first_order_displacement(A, b, e)))
        d3.append(np.linalg.norm(z - xF))
    assert abs(fit_slope(ETAS, d1).slope - 1) < 0.05
    assert abs(fit_slope(ETAS, d2).slope - 2) < 0.1
    assert abs(fit_slope(ETAS, d3).slope - 2) < 0.1


@pytest.mark.parametrize("seed", range(6))
def test_variance_is_lower_at_the_modified_minimiser(seed):
    p = random_quadratics(4, 3, seed=seed)
    A, b, xs = p.A.numpy(), p.b.numpy(), p.x_star.numpy()

    def V_lib(x):
        return hm.gradient_variance(p.local_grads(torch.as_tensor(x)))

    for x in (xs, np.ones(3), np.random.default_rng(seed).standard_normal(3)):
        assert sol.between_variance(A, b, x) == pytest.approx(V_lib(x), rel=1e-12)
    for e in (0.04, 0.005):
        assert V_lib(sol.rr_modified_minimiser(A, b, e)) < V_lib(xs)
    # the first-order displacement is a step down the variance: <grad V(x*), delta> < 0
    eps = 1e-6
    delta = sol.rr_first_order_displacement(A, b, 0.01)
    assert (V_lib(xs + eps * delta) - V_lib(xs - eps * delta)) / (2 * eps) < 0

# ------------------------------------------------------------------------------- (e) alignment


@pytest.mark.parametrize("seed, m", [(0, 2), (1, 4), (2, 7)])
def test_mean_pairwise_inner_product_by_brute_force(seed, m):
    G = np.random.default_rng(seed).standard_normal((m, 5))
    gbar = G.mean(0)
    V = float(((G - gbar) ** 2).sum(1).mean())
    brute = np.mean([G[k] @ G[l] for k in range(m) for l in range(m) if k != l])
    assert sol.mean_pairwise_inner_product(float(gbar @ gbar), V, m) == pytest.approx(brute, rel=1e-12, abs=1e-12)
    assert hm.mean_pairwise_inner_product(torch.as_tensor(G)) == pytest.approx(brute, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError):
        sol.mean_pairwise_inner_product(1.0, 1.0, 1)
