"""The modified-loss builders (``hetlab.modified_losses``) against automatic differentiation and finite
differences of the modified losses written out by hand, the exact GD modified Hessian against the matrix
exponential and against running GD, and the residual-slope helpers. Seeds are fixed."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from hetlab import modified_losses as ml
from hetlab.algorithms import GD
from hetlab.comm import SimulatedComm
from hetlab.problems import Oracle, QuadraticProblem, random_quadratics

DT = torch.float64


def _problem(seed, n=5, d=3, weights=True):
    """Rows with Hessians, linear terms, constants and (optionally) non-uniform weights."""
    rng = np.random.default_rng(seed)
    p = random_quadratics(n, d, weights=rng.uniform(0.5, 2.0, n) if weights else None, seed=seed)
    e = rng.standard_normal(n)
    return QuadraticProblem(p.A, p.c, e, p.weights)


def _autograd_terms(p, x, groups):
    """grad f, the row gradients and the group gradients at x by autograd of the problem's own losses."""
    q = p.weights
    X = x.expand(p.n, p.d)
    losses = p.loss(X)                                               # f_i(x), differentiable in x
    G = torch.stack([torch.autograd.grad(losses[i], x, create_graph=True)[0] for i in range(p.n)])
    gbar = q @ G
    Gg = torch.stack([(q[g] @ G[g]) / q[g].sum() for g in groups])
    Qg = torch.stack([q[g].sum() for g in groups])
    return losses, G, gbar, Gg, Qg


def _modified_by_autograd(p, coefs, groups):
    a, b, g_, w = coefs

    def F(x):
        losses, G, gbar, Gg, Qg = _autograd_terms(p, x, groups)
        owner = torch.empty(p.n, dtype=torch.long)
        for k, gr in enumerate(groups):
            owner[gr] = k
        f = p.weights @ losses
        sq = lambda V: (V * V).sum(-1)  # noqa: E731
        return (f + a * sq(gbar) + b * (p.weights @ sq(G)) + g_ * (Qg @ sq(Gg - gbar))
                + w * (p.weights @ sq(G - Gg[owner])))
    return F


COEFS = [(0.0, 0.0, 0.0, 0.0), (0.3, 0.0, 0.0, 0.0), (0.0, 0.2, 0.0, 0.0), (0.0, 0.0, -0.4, 0.0),
         (0.0, 0.0, 0.0, 0.25), (0.1, -0.05, 0.3, 0.2)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("coefs", COEFS, ids=[str(c) for c in COEFS])
def test_builders_match_autograd_hessian_gradient_and_value(seed, coefs):
    p = _problem(seed, n=6)
    groups = [[0, 1], [2, 3, 4], [5]]
    F = _modified_by_autograd(p, coefs, groups)
    built = ml.modified_loss(p, grad_norm=coefs[0], mean_grad_norm=coefs[1], between=coefs[2],
                             within=coefs[3], groups=groups)
    x0 = torch.zeros(p.d, dtype=DT, requires_grad=True)
    H = torch.autograd.functional.hessian(lambda x: F(x), x0).numpy()
    g0 = torch.autograd.grad(F(x0), x0)[0].numpy()
    assert np.abs(built.H - H).max() < 1e-12 * max(1, np.abs(H).max())
    assert np.abs(built.c - (-g0)).max() < 1e-12 * max(1, np.abs(g0).max())
    F0 = F(x0).detach().item()
    assert abs(built.e - F0) < 1e-12 * max(1, abs(F0))
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal(p.d), dtype=DT).requires_grad_(True)
    Fx = F(x).detach().item()
    assert abs(built.value(x.detach().numpy()) - Fx) < 1e-11 * max(1, abs(Fx))


@pytest.mark.parametrize("seed", [0, 3])
def test_gradient_matches_central_finite_differences(seed):
    p = _problem(seed)
    F = ml.igr_loss(p, 0.1) + 0.2 * ml.between_variance(p)
    x = np.random.default_rng(seed).standard_normal(p.d)
    eps = 1e-5
    fd = np.array([(F.value(x + eps * e) - F.value(x - eps * e)) / (2 * eps) for e in np.eye(p.d)])
    assert np.abs(fd - F.grad(x)).max() < 1e-7


def test_named_losses_and_identities():
    p = random_quadratics(4, 3, seed=0)                             # uniform weights, from minimisers
    A, b = p.A.numpy(), p.b.numpy()
    Abar, xs = A.mean(0), p.x_star.numpy()
    h = 0.07
    igr = ml.igr_loss(p, h)
    assert np.allclose(igr.H, Abar + h / 2 * Abar @ Abar, rtol=0, atol=1e-14)
    assert np.allclose(igr.c, Abar @ xs + h / 2 * Abar @ Abar @ xs, rtol=0, atol=1e-13)   # THEORY B common facts
    rr = ml.sgd_rr_loss(p, h)
    S = np.einsum("ijk,ikl->jl", A, A) / 4
    assert np.allclose(rr.H, Abar + h / 2 * S, rtol=0, atol=1e-14)
    assert np.allclose(rr.c, Abar @ xs + h / 2 * np.einsum("ijk,ikl,il->j", A, A, b) / 4, rtol=0, atol=1e-13)
    # mean_k ||grad f_k||^2 = ||grad f||^2 + V_b, so F_SGD = f + h/4 ||grad f||^2 + h/4 V_b
    lhs, rhs = ml.mean_grad_norm_sq(p), ml.grad_norm_sq(p) + ml.between_variance(p)
    assert np.allclose(lhs.H, rhs.H, atol=1e-14) and np.allclose(lhs.c, rhs.c, atol=1e-14)
    assert abs(lhs.e - rhs.e) < 1e-13
    alt = ml.modified_loss(p, grad_norm=h / 4, between=h / 4)
    assert np.allclose(rr.H, alt.H, atol=1e-14) and np.allclose(rr.c, alt.c, atol=1e-14)
    assert np.allclose(ml.sgd_with_replacement_loss(p, h).H, igr.H)
    # the regulariser of GD vanishes at x*: same minimiser; the per-row one moves it
    assert np.abs(igr.minimizer() - xs).max() < 1e-13
    assert np.abs(rr.minimizer() - xs).max() > 1e-3


def test_between_plus_within_is_the_total_variance():
    p = _problem(2, n=6)
    groups = [[0, 3], [1, 2, 5], [4]]
    total = ml.between_variance(p)
    split = ml.between_variance(p, groups) + ml.within_variance(p, groups)
    assert np.allclose(total.H, split.H, atol=1e-13) and np.allclose(total.c, split.c, atol=1e-13)
    assert abs(total.e - split.e) < 1e-12
    one = ml.within_variance(p, [[i] for i in range(6)])             # singleton groups: no within variance
    assert np.abs(one.H).max() < 1e-14 and np.abs(one.c).max() < 1e-14


def test_group_validation():
    p = _problem(0, n=4)
    for bad in ([[0, 1], [2]], [[0, 1], [1, 2, 3]], [[0, 1, 2, 3], []]):
        with pytest.raises(ValueError, match="partition|empty"):
            ml.between_variance(p, bad)
    with pytest.raises(ValueError, match="groups"):
        ml.modified_loss(p, within=0.1)
    with pytest.raises(ValueError, match="uniform"):
        ml.sgd_rr_loss(p, 0.1)


def test_quadratic_loss_algebra_and_errors():
    F = ml.QuadraticLoss(np.diag([1.0, 2.0]), np.array([1.0, 0.0]), 0.5)
    G = ml.QuadraticLoss(np.eye(2), np.zeros(2))
    x = np.array([0.3, -0.4])
    assert abs((F + 2 * G).value(x) - (F.value(x) + 2 * G.value(x))) < 1e-15
    assert abs((F - G / 2).value(x) - (F.value(x) - 0.5 * G.value(x))) < 1e-15
    assert abs((-F).value(x) + F.value(x)) < 1e-15
    assert np.allclose(F.minimizer(), [1.0, 0.0])
    assert np.allclose(F.flow(x, 50.0), F.minimizer(), atol=1e-12)
    with pytest.raises(ValueError, match="symmetric"):
        ml.QuadraticLoss(np.array([[1.0, 1.0], [0.0, 1.0]]), np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        ml.QuadraticLoss(np.eye(2), np.zeros(3))
    with pytest.raises(TypeError):
        F * np.ones(2)
    with pytest.raises(ValueError, match="dimension"):
        F + ml.QuadraticLoss(np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="singular"):
        ml.QuadraticLoss(np.diag([1.0, 0.0]), np.zeros(2)).minimizer()
    with pytest.raises(TypeError, match="quadratic"):
        ml.objective(object())

# -------------------------------------------------------------------------- exact GD modified loss


@pytest.mark.parametrize("h", [0.01, 0.1, 0.4])
def test_exact_modified_hessian(h):
    H = random_quadratics(1, 4, spectrum=(0.3, 2.0), seed=5).A[0].numpy()
    M = ml.gd_exact_modified_hessian(H, h)
    assert np.abs(scipy.linalg.expm(-h * M) - (np.eye(4) - h * H)).max() < 1e-13
    # eigenvalues -log(1 - h lambda)/h in the same eigenbasis
    lam = np.linalg.eigvalsh(H)
    assert np.allclose(np.linalg.eigvalsh(M), -np.log1p(-h * lam) / h, rtol=1e-12)
    # the series converges: the error of the order-k partial sum shrinks like (h L)^k
    errs = [np.linalg.norm(M - ml.log_series_hessian(H, h, k), 2) for k in range(1, 7)]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:]))
    assert np.allclose(ml.log_series_hessian(H, h, 2), H + h / 2 * H @ H)


def test_exact_modified_hessian_refuses_oscillating_steps():
    H = np.diag([1.0, 3.0])
    with pytest.raises(ValueError, match="no real gradient flow"):
        ml.gd_exact_modified_hessian(H, 0.4)
    with pytest.raises(ValueError, match="positive"):
        ml.gd_exact_modified_hessian(H, -0.1)


def test_exact_modified_loss_flow_is_gradient_descent():
    p = random_quadratics(4, 3, seed=1)
    h, steps = 0.2, 7
    F = ml.gd_exact_modified_loss(p, h)
    x0 = torch.as_tensor(np.random.default_rng(1).standard_normal(3))
    gd = GD(h)
    state = gd.init(x0, p)
    for _ in range(steps):
        state = gd.step(state, Oracle(p), SimulatedComm(p.n), None)
    assert np.abs(F.flow(x0.numpy(), steps * h) - state["x"].numpy()).max() < 1e-13
    assert np.abs(F.minimizer() - p.x_star.numpy()).max() < 1e-13

# ---------------------------------------------------------------------------------- slope helpers


def test_residual_slopes_and_single_evaluation_of_the_round_map():
    p = random_quadratics(4, 3, seed=0)
    f = ml.objective(p)
    calls = []

    def gd_step(h, x):
        calls.append(h)
        return x - h * f.grad(x)

    etas = [0.08, 0.04, 0.02, 0.01, 0.005]
    out = ml.residual_slopes(gd_step, {"plain": lambda h: f, "igr": lambda h: ml.igr_loss(p, h),
                                       "exact": lambda h: ml.gd_exact_modified_loss(f, h)},
                             np.ones(3), etas, time=lambda h: h)
    assert len(calls) == len(etas)
    assert abs(out["plain"][0] - 2) < 0.1 and abs(out["igr"][0] - 3) < 0.1
    res = ml.flow_residuals(gd_step, {"exact": lambda h: ml.gd_exact_modified_loss(f, h)}, np.ones(3), etas,
                            time=lambda h: h)
    assert res["exact"].max() < 1e-14
    with pytest.raises(ValueError, match="decade"):
        ml.residual_slopes(gd_step, {"plain": lambda h: f}, np.ones(3), [0.08, 0.04, 0.02, 0.01], time=lambda h: h)
