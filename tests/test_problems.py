"""Problems: stacked gradients against autograd, exact constants against brute force, validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad as fgrad
from torch.func import vmap

from hetlab.problems import (LeastSquaresProblem, LogisticRegressionProblem, PLProblem,
                             QuadraticProblem, pl_family, random_least_squares, random_logistic,
                             random_quadratics)

DT = torch.float64
RNG_SEED = 1234


def _rand_X(n, d, seed=RNG_SEED, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, d, generator=g, dtype=DT)


def _autograd_rows(problem, X, idx=None):
    """Row-wise gradients of ``problem.loss`` by autograd (row i of the loss depends on row i only)."""
    X = X.clone().requires_grad_(True)
    (G,) = torch.autograd.grad(problem.loss(X, idx).sum(), X)
    return G


def _spd_stack(n, d, seed, lo=0.5, hi=2.0):
    rng = np.random.default_rng(seed)
    A = np.empty((n, d, d))
    for i in range(n):
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        A[i] = (Q * rng.uniform(lo, hi, d)) @ Q.T
    return 0.5 * (A + A.transpose(0, 2, 1))


# ---------------------------------------------------------------------------- problem zoo
def _quad():
    rng = np.random.default_rng(3)
    A = _spd_stack(5, 4, seed=3)
    c = rng.standard_normal((5, 4))
    e = rng.standard_normal(5)
    return QuadraticProblem(A, c, e, weights=rng.uniform(0.2, 1.0, 5))


def _quad_from_min():
    rng = np.random.default_rng(4)
    return QuadraticProblem.from_minimizers(_spd_stack(6, 3, seed=4), rng.standard_normal((6, 3)))


def _ls_equal():
    return random_least_squares(4, 6, 3, lam=0.1, seed=5)


def _ls_padded():
    return random_least_squares(4, 7, 3, counts=[7, 3, 5, 1], lam=0.1, seed=6)


def _logistic_equal():
    return random_logistic(4, 6, 3, lam=0.05, seed=7)


def _logistic_padded():
    return random_logistic(5, 8, 3, counts=[8, 2, 5, 1, 6], lam=0.05, seed=8)


def _pl():
    return pl_family(6, seed=0)


def _pl_shifted():
    return pl_family(5, shift_scale=0.5, d=2, seed=0)


ALL_PROBLEMS = {
    "quadratic": _quad, "quadratic_from_min": _quad_from_min, "random_quadratics": lambda: random_quadratics(5, 4, seed=2),
    "ls": _ls_equal, "ls_padded": _ls_padded, "logistic": _logistic_equal,
    "logistic_padded": _logistic_padded, "pl": _pl, "pl_shifted": _pl_shifted,
}
FINITE_SUM = {k: ALL_PROBLEMS[k] for k in ("ls", "ls_padded", "logistic", "logistic_padded")}


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make", ALL_PROBLEMS.values(), ids=ALL_PROBLEMS.keys())
def test_grad_matches_autograd_of_loss(make):
    P = make()
    X = _rand_X(P.n, P.d, scale=1.5)
    G = P.grad(X)
    assert G.shape == (P.n, P.d) and G.dtype == DT
    torch.testing.assert_close(G, _autograd_rows(P, X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", ALL_PROBLEMS.values(), ids=ALL_PROBLEMS.keys())
def test_grad_and_loss_with_idx_subset(make):
    P = make()
    idx = torch.tensor([P.n - 1, 0, 2])
    X = _rand_X(len(idx), P.d, seed=99)
    G = P.grad(X, idx)
    torch.testing.assert_close(G, _autograd_rows(P, X, idx), rtol=1e-12, atol=1e-12)
    # the same rows evaluated in the full stack agree with the subset evaluation
    Xfull = _rand_X(P.n, P.d, seed=5)
    Xfull[idx] = X
    torch.testing.assert_close(G, P.grad(Xfull)[idx], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(P.loss(X, idx), P.loss(Xfull)[idx], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("make", ALL_PROBLEMS.values(), ids=ALL_PROBLEMS.keys())
def test_global_grad_is_weighted_mean_and_matches_autograd(make):
    P = make()
    x = _rand_X(1, P.d, seed=17)[0].requires_grad_(True)
    (g_auto,) = torch.autograd.grad(P.global_loss(x), x)
    torch.testing.assert_close(P.global_grad(x.detach()), g_auto, rtol=1e-12, atol=1e-12)
    assert abs(float(P.weights.sum()) - 1.0) < 1e-15


@pytest.mark.parametrize("make", ALL_PROBLEMS.values(), ids=ALL_PROBLEMS.keys())
def test_wrong_stacked_shape_raises(make):
    P = make()
    with pytest.raises(ValueError, match="shape"):
        P.grad(torch.zeros(P.n + 1, P.d, dtype=DT))
    with pytest.raises(ValueError, match="shape"):
        P.loss(torch.zeros(2, P.d, dtype=DT), torch.tensor([0]))


def _per_sample_loss_fn(P):
    lam = P.lam
    if isinstance(P, LogisticRegressionProblem):
        def ell(x, z, y):
            return torch.nn.functional.softplus(-y * (z @ x)) + 0.5 * lam * (x @ x)
    else:
        def ell(x, z, y):
            return 0.5 * (z @ x - y) ** 2 + 0.5 * lam * (x @ x)
    return ell


def _valid_data(P, i):
    m = int(P.counts[i])
    return P.Z[i, :m], P.y[i, :m]


@pytest.mark.parametrize("make", FINITE_SUM.values(), ids=FINITE_SUM.keys())
def test_per_sample_grads_match_autograd(make):
    P = make()
    X = _rand_X(P.n, P.d, seed=21)
    PSG = P.per_sample_grads(X)
    m_max = P.Z.shape[1]
    assert PSG.shape == (P.n, m_max, P.d)
    dell = fgrad(_per_sample_loss_fn(P))
    for i in range(P.n):
        Zi, yi = _valid_data(P, i)
        ref = vmap(dell, in_dims=(None, 0, 0))(X[i], Zi, yi)
        torch.testing.assert_close(PSG[i, : len(yi)], ref, rtol=1e-12, atol=1e-12)
        assert torch.count_nonzero(PSG[i, len(yi):]) == 0  # padding rows are exactly zero
        # the local gradient is the mean of the valid per-sample gradients
        torch.testing.assert_close(P.grad(X)[i], ref.mean(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", FINITE_SUM.values(), ids=FINITE_SUM.keys())
def test_loss_ignores_padding_brute_force(make):
    P = make()
    X = _rand_X(P.n, P.d, seed=23)
    ell = _per_sample_loss_fn(P)
    ref = torch.stack([
        torch.stack([ell(X[i], z, y) for z, y in zip(*_valid_data(P, i))]).mean() for i in range(P.n)
    ])
    torch.testing.assert_close(P.loss(X), ref, rtol=1e-12, atol=1e-12)
    # default client weights are proportional to the sample counts
    c = P.counts.to(DT)
    torch.testing.assert_close(P.weights, c / c.sum(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("make", FINITE_SUM.values(), ids=FINITE_SUM.keys())
@pytest.mark.parametrize("use_idx", [False, True])
def test_minibatch_grad_matches_autograd(make, use_idx):
    P = make()
    idx = torch.tensor([P.n - 1, 1, 0]) if use_idx else None
    rows = list(range(P.n)) if idx is None else idx.tolist()
    X = _rand_X(len(rows), P.d, seed=31)
    rng = np.random.default_rng(0)
    b = 4
    samples = torch.as_tensor(np.stack([rng.integers(0, int(P.counts[i]), size=b) for i in rows]))
    G = P.minibatch_grad(X, samples, idx)
    ell = _per_sample_loss_fn(P)
    for r, i in enumerate(rows):
        x = X[r].clone().requires_grad_(True)
        batch_loss = torch.stack([ell(x, P.Z[i, j], P.y[i, j]) for j in samples[r].tolist()]).mean()
        (ref,) = torch.autograd.grad(batch_loss, x)
        torch.testing.assert_close(G[r], ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- constants
def _np_weights(P):
    return P.weights.numpy()


@pytest.mark.parametrize("make", [_quad, _quad_from_min, _ls_equal, _ls_padded, lambda: random_quadratics(5, 4, seed=2)])
def test_quadratic_constants_brute_force(make):
    P = make()
    # Hessians by autograd, one client at a time
    H = np.stack([
        torch.autograd.functional.hessian(lambda x: P.loss(x[None], torch.tensor([i]))[0],
                                          torch.zeros(P.d, dtype=DT)).numpy()
        for i in range(P.n)
    ])
    np.testing.assert_allclose(P.hessians().numpy(), H, rtol=1e-12, atol=1e-12)
    q = _np_weights(P)
    assert abs(P.L - max(np.linalg.eigvalsh(h)[-1] for h in H)) <= 1e-12 * P.L
    Hbar = np.einsum("i,ijk->jk", q, H)
    assert abs(P.mu - np.linalg.eigvalsh(Hbar)[0]) <= 1e-12 * P.L
    assert abs(P.L_global - np.linalg.eigvalsh(Hbar)[-1]) <= 1e-12 * P.L
    xs = P.x_star
    assert float(P.global_grad(xs).norm()) < 1e-10
    assert abs(P.f_star - float(P.global_loss(xs))) <= 1e-15 * max(1.0, abs(P.f_star))
    G = np.stack([P.grad(xs[None], torch.tensor([i]))[0].numpy() for i in range(P.n)])
    zeta = sum(q[i] * G[i] @ G[i] for i in range(P.n))
    assert abs(P.zeta_star_sq - zeta) <= 1e-12 * max(zeta, 1e-300)
    assert P.zeta_star_sq > 1e-3  # heterogeneous minimisers
    # x_star is the minimiser: perturbations only increase f
    rng = np.random.default_rng(0)
    for _ in range(5):
        u = torch.as_tensor(rng.standard_normal(P.d))
        assert float(P.global_loss(xs + 1e-3 * u)) > P.f_star


def test_ls_constants_from_raw_data():
    """L and mu of padded least squares from the raw (unpadded) data, weights = m_i / sum m."""
    P = _ls_padded()
    counts = P.counts.numpy()
    H = [P.Z[i, :m].numpy().T @ P.Z[i, :m].numpy() / m + P.lam * np.eye(P.d) for i, m in enumerate(counts)]
    q = counts / counts.sum()
    assert abs(P.L - max(np.linalg.eigvalsh(h)[-1] for h in H)) <= 1e-12 * P.L
    assert abs(P.mu - np.linalg.eigvalsh(sum(qi * h for qi, h in zip(q, H)))[0]) <= 1e-12 * P.L
    Lsample = max(float(P.Z[i, j] @ P.Z[i, j]) for i, m in enumerate(counts) for j in range(m)) + P.lam
    assert abs(P.L_sample - Lsample) <= 1e-12 * Lsample


def test_from_minimizers_local_minimisers():
    P = _quad_from_min()
    torch.testing.assert_close(P.loss(P.b), torch.zeros(P.n, dtype=DT), rtol=0, atol=1e-14)
    torch.testing.assert_close(P.grad(P.b), torch.zeros(P.n, P.d, dtype=DT), rtol=0, atol=1e-14)


def test_quadratic_prox_is_argmin():
    P = _quad()
    X = _rand_X(P.n, P.d, seed=41)
    rho = 0.7
    Y = P.prox(X, rho)
    # optimality: grad f_i(y_i) + rho (y_i - x_i) = 0
    torch.testing.assert_close(P.grad(Y) + rho * (Y - X), torch.zeros_like(X), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        P.prox(X, 0.0)


@pytest.mark.parametrize("make", [_logistic_equal, _logistic_padded])
def test_logistic_hessian_and_L(make):
    P = make()
    # brute-force L from the raw data: Hessian bound Z^T Z / (4 m) + lam I (attained at x = 0)
    counts = P.counts.numpy()
    L_bf = max(np.linalg.eigvalsh(P.Z[i, :m].numpy().T @ P.Z[i, :m].numpy() / (4 * m))[-1]
               for i, m in enumerate(counts)) + P.lam
    assert abs(P.L - L_bf) <= 1e-12 * L_bf
    g = torch.Generator().manual_seed(5)
    for trial in range(6):
        X = (0.0 if trial == 0 else 2.0) * torch.randn(P.n, P.d, generator=g, dtype=DT)
        H_lib = P.hessians(X)
        for i in range(P.n):
            H = torch.autograd.functional.hessian(lambda x: P.loss(x[None], torch.tensor([i]))[0], X[i])
            torch.testing.assert_close(H_lib[i], H, rtol=1e-11, atol=1e-12)
        top = torch.linalg.eigvalsh(H_lib)[:, -1].max().item()
        if trial == 0:
            assert abs(top - P.L) <= 1e-12 * P.L  # the sup is attained at x = 0
        else:
            assert top <= P.L * (1 + 1e-12)
            assert top < P.L  # strictly below away from 0 (random points)


@pytest.mark.parametrize("make", [_logistic_equal, _logistic_padded])
def test_logistic_constants(make):
    P = make()
    xs = P.x_star
    assert float(P.global_grad(xs).norm()) < 1e-10
    assert abs(P.f_star - float(P.global_loss(xs))) < 1e-15
    q = _np_weights(P)
    G = P.local_grads(xs).numpy()
    zeta = float(sum(q[i] * G[i] @ G[i] for i in range(P.n)))
    assert abs(P.zeta_star_sq - zeta) <= 1e-12 * zeta and zeta > 1e-4
    assert P.mu == P.lam
    Hbar = torch.autograd.functional.hessian(P.global_loss, xs).numpy()
    assert abs(P.mu_local - np.linalg.eigvalsh(Hbar)[0]) <= 1e-10
    assert P.mu_local >= P.lam


def test_zeta_star_zero_for_common_minimiser():
    b0 = np.array([1.0, -2.0, 0.5, 3.0])
    P = random_quadratics(6, 4, minimizer_heterogeneity=0.0, common_minimizer=b0, seed=3)
    np.testing.assert_allclose(P.x_star.numpy(), b0, rtol=0, atol=1e-12)
    assert P.zeta_star_sq < 1e-20
    assert abs(P.f_star) < 1e-20


# ---------------------------------------------------------------------------- PL family
def _g(t):
    return t * t + 3 * np.sin(t) ** 2


def _dg(t):
    return 2 * t + 3 * np.sin(2 * t)


def _pl_coordinate(P, k, t):
    """h_k(t) and h_k'(t) of the global objective, computed from a, s, q alone."""
    w = (P.weights * P.a).numpy()
    s = P.s[:, k].numpy()
    h = sum(w[i] * _g(t - s[i]) for i in range(P.n))
    dh = sum(w[i] * _dg(t - s[i]) for i in range(P.n))
    return h, dh


def _pl_constant_brute_force(P):
    xs = P.x_star.numpy()
    mus = []
    for k in range(P.d):
        hs = _pl_coordinate(P, k, np.array([xs[k]]))[0][0]
        # stage 1: uniform grid, spacing 5e-4, over +-40 (the ratio tends to 2 sum_i w_i at infinity)
        t = xs[k] + np.linspace(-40.0, 40.0, 160_001)
        t = t[np.abs(t - xs[k]) > 1e-3]
        h, dh = _pl_coordinate(P, k, t)
        r = dh ** 2 / (2 * (h - hs))
        j = int(np.argmin(r))
        # stage 2: very fine grid (spacing 1e-8) around the best stage-1 point
        tt = np.linspace(t[j] - 1e-3, t[j] + 1e-3, 200_001)
        h, dh = _pl_coordinate(P, k, tt)
        mus.append(float(np.min(dh ** 2 / (2 * (h - hs)))))
    return min(mus)


@pytest.mark.parametrize("make", [_pl, _pl_shifted, lambda: pl_family(4, a_range=(0.1, 3.0), shift_scale=0.3, d=3, seed=7)])
def test_pl_constants_brute_force(make):
    P = make()
    assert P.L == 8.0 * float(P.a.max())
    mu_bf = _pl_constant_brute_force(P)
    assert mu_bf > 0.05
    assert abs(P.mu - mu_bf) <= 1e-6 * mu_bf
    # x_star is the global minimiser: a fine grid per coordinate (the problem is separable)
    xs = P.x_star.numpy()
    for k in range(P.d):
        t = np.linspace(-15.0, 15.0, 300_001)
        h, _ = _pl_coordinate(P, k, t)
        hs, dhs = _pl_coordinate(P, k, np.array([xs[k]]))
        assert h.min() >= hs[0] - 1e-12
        assert abs(t[np.argmin(h)] - xs[k]) <= 1e-4
        assert abs(dhs[0]) < 1e-12
    assert float(P.global_grad(P.x_star).norm()) < 1e-10
    # the PL inequality holds at random points with the returned constant
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = 3 * torch.randn(P.d, generator=g, dtype=DT)
        gn = float(P.global_grad(x) @ P.global_grad(x))
        assert 0.5 * gn >= P.mu * (float(P.global_loss(x)) - P.f_star) * (1 - 1e-9)


def test_pl_unshifted_has_common_minimiser():
    P = _pl()
    assert float(P.x_star.abs().max()) < 1e-12
    assert P.zeta_star_sq < 1e-24
    np.testing.assert_allclose(P.L, 8 * P.a.max().item())


def test_pl_constant_vanishes_with_spurious_stationary_point():
    """With large shifts the global objective can have a non-global stationary point: then the
    PL constant is 0, and ``mu`` must not overstate it."""
    P = pl_family(5, shift_scale=1.0, d=2, seed=3)
    t = np.linspace(-10, 10, 200_001)
    h, dh = _pl_coordinate(P, 0, t)
    hs = _pl_coordinate(P, 0, P.x_star[:1].numpy())[0][0]
    crossings = np.nonzero(np.diff(np.sign(dh)))[0]
    assert any(h[j] - hs > 1.0 for j in crossings)  # a stationary point with a positive gap
    assert 0 <= P.mu < 1e-10


def test_pl_validation():
    with pytest.raises(ValueError, match="positive"):
        PLProblem([1.0, -0.5])
    with pytest.raises(ValueError, match="shape"):
        PLProblem([1.0, 2.0], shifts=np.zeros((3, 1)))


# ---------------------------------------------------------------------------- random_quadratics
def test_random_quadratics_identical_hessians():
    P = random_quadratics(6, 4, hessian_heterogeneity=0.0, seed=1)
    for i in range(1, P.n):
        assert torch.equal(P.A[i], P.A[0])
    assert not torch.allclose(P.b[1], P.b[0])  # minimisers still differ


def test_random_quadratics_identical_minimisers():
    P = random_quadratics(6, 4, minimizer_heterogeneity=0.0, seed=1)
    for i in range(1, P.n):
        assert torch.equal(P.b[i], P.b[0])
    assert not torch.allclose(P.A[1], P.A[0])  # Hessians still differ


def test_random_quadratics_seed_reproducible():
    P1, P2, P3 = (random_quadratics(5, 3, seed=s) for s in (11, 11, 12))
    assert torch.equal(P1.A, P2.A) and torch.equal(P1.b, P2.b) and torch.equal(P1.c, P2.c)
    assert not torch.allclose(P1.A, P3.A) and not torch.allclose(P1.b, P3.b)


@pytest.mark.parametrize("h", [0.0, 0.3, 1.0])
def test_random_quadratics_spectrum(h):
    lo, hi = 0.3, 3.0
    P = random_quadratics(7, 5, spectrum=(lo, hi), hessian_heterogeneity=h, seed=2)
    eig = np.linalg.eigvalsh(P.A.numpy())
    assert eig.min() >= lo - 1e-12 and eig.max() <= hi + 1e-12
    assert lo - 1e-12 <= P.mu <= P.L <= hi + 1e-12


def test_random_quadratics_bad_arguments():
    with pytest.raises(ValueError, match="spectrum"):
        random_quadratics(3, 2, spectrum=(0.0, 1.0))
    with pytest.raises(ValueError, match="hessian_heterogeneity"):
        random_quadratics(3, 2, hessian_heterogeneity=1.5)
    with pytest.raises(ValueError, match="minimizer_heterogeneity"):
        random_quadratics(3, 2, minimizer_heterogeneity=-1.0)


# ---------------------------------------------------------------------------- validation
def test_non_symmetric_hessian_raises():
    A = np.stack([np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]])])
    with pytest.raises(ValueError, match="symmetric"):
        QuadraticProblem(A, np.zeros((2, 2)))


def test_non_psd_hessian_raises():
    A = np.stack([np.eye(2), np.diag([2.0, -0.5])])
    with pytest.raises(ValueError, match="positive semi-definite"):
        QuadraticProblem(A, np.zeros((2, 2)))


def test_wrong_shapes_raise():
    A = np.stack([np.eye(3)] * 4)
    with pytest.raises(ValueError, match=r"c must have shape \[4, 3\]"):
        QuadraticProblem(A, np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"A must have shape"):
        QuadraticProblem(np.zeros((4, 3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"b must have shape \[4, 3\]"):
        QuadraticProblem.from_minimizers(A, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"weights must have shape \[4\]"):
        QuadraticProblem(A, np.zeros((4, 3)), weights=np.ones(5))
    with pytest.raises(ValueError, match=r"e must have shape \[4\]"):
        QuadraticProblem(A, np.zeros((4, 3)), e=np.zeros(3))


def test_singular_global_hessian_raises():
    A = np.stack([np.diag([1.0, 0.0]), np.diag([2.0, 0.0])])
    with pytest.raises(ValueError, match="singular"):
        QuadraticProblem(A, np.zeros((2, 2)))
    # singular local Hessians are fine as long as their weighted mean is not
    P = QuadraticProblem(np.stack([np.diag([1.0, 0.0]), np.diag([0.0, 1.0])]), np.ones((2, 2)))
    assert P.mu == pytest.approx(0.5, abs=1e-15)


def test_bad_weights_raise():
    A = np.stack([np.eye(2)] * 3)
    with pytest.raises(ValueError, match="non-negative"):
        QuadraticProblem(A, np.zeros((3, 2)), weights=[0.5, -0.1, 0.6])
    with pytest.raises(ValueError, match="zero"):
        QuadraticProblem(A, np.zeros((3, 2)), weights=[0.0, 0.0, 0.0])
    P = QuadraticProblem(A, np.zeros((3, 2)), weights=[1.0, 2.0, 1.0])
    torch.testing.assert_close(P.weights, torch.tensor([0.25, 0.5, 0.25], dtype=DT))


def test_logistic_labels_must_be_pm_one():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((2, 4, 3))
    y01 = (rng.uniform(size=(2, 4)) < 0.5).astype(float)
    y01[0, 0], y01[0, 1] = 0.0, 1.0
    with pytest.raises(ValueError, match="-1 or \\+1"):
        LogisticRegressionProblem(Z, y01)
    # labels on padding rows are ignored (zeroed by the mask)
    y = np.where(y01 > 0, 1.0, -1.0)
    y[1, 3] = 0.0
    P = LogisticRegressionProblem(Z, y, counts=[4, 3])
    assert P.n == 2
    with pytest.raises(ValueError, match="lam"):
        LogisticRegressionProblem(Z, np.where(y01 > 0, 1.0, -1.0), lam=0.0)


@pytest.mark.parametrize("counts", [[4, 0], [5, 2], [-1, 3]])
def test_counts_out_of_range(counts):
    rng = np.random.default_rng(0)
    Z, y = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4))
    with pytest.raises(ValueError, match=r"counts must lie in \[1, 4\]"):
        LeastSquaresProblem(Z, y, counts=counts)
    with pytest.raises(ValueError, match=r"counts must lie in \[1, 4\]"):
        LogisticRegressionProblem(Z, np.sign(y), counts=counts)


def test_finite_sum_shape_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"Z must have shape \[n, m, d\]"):
        LeastSquaresProblem(rng.standard_normal((4, 3)), rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"y must have shape \[2, 4\]"):
        LeastSquaresProblem(rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="lam"):
        LeastSquaresProblem(rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4)), lam=-1.0)
