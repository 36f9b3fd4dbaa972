"""Exact verification machinery (THEORY §0.1, M1–M6)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from hetlab import exact as E


# ---------------------------------------------------------------------------------------- M1
def test_affine_map_recovers_random_affine_map():
    rng = np.random.default_rng(0)
    dim = 7
    M0 = rng.standard_normal((dim, dim))
    c0 = rng.standard_normal(dim)
    calls = []

    def step(z):
        calls.append(1)
        return M0 @ z + c0

    M, c = E.affine_map(step, dim)
    np.testing.assert_allclose(M, M0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c, c0, rtol=0, atol=1e-15)
    assert len(calls) == dim + 2  # 0, the unit vectors and the random affinity probe


def test_affine_map_rejects_non_affine_and_bad_shapes():
    rng = np.random.default_rng(1)
    M0 = rng.standard_normal((3, 3))
    with pytest.raises(ValueError, match="not affine"):
        E.affine_map(lambda z: M0 @ z + 0.01 * z ** 2, 3)
    with pytest.raises(ValueError, match="not affine"):
        E.affine_map(lambda z: np.tanh(M0 @ z), 3)
    with pytest.raises(ValueError, match=r"R\^3"):
        E.affine_map(lambda z: np.zeros(2), 3)
    # check=False skips the probe (a quadratic map then gives its secant)
    M, c = E.affine_map(lambda z: z ** 2, 2, check=False)
    np.testing.assert_array_equal(M, np.eye(2))


def test_affine_fixed_point_and_spectral_radius():
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lam = np.array([0.9, -0.5, 0.3, 0.1])
    M = Q @ np.diag(lam) @ Q.T
    c = rng.standard_normal(4)
    z = E.affine_fixed_point(M, c)
    np.testing.assert_allclose(M @ z + c, z, rtol=0, atol=1e-13)
    assert E.spectral_radius(M) == pytest.approx(0.9, rel=1e-13)
    # complex eigenvalues: a rotation scaled by 0.7
    R = 0.7 * np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    assert E.spectral_radius(R) == pytest.approx(0.7, rel=1e-13)
    # iterating converges to the fixed point
    x = np.zeros(4)
    for _ in range(400):
        x = M @ x + c
    np.testing.assert_allclose(x, z, rtol=1e-12)


def test_flatten_state_round_trip():
    import torch
    state = {"x": torch.arange(3, dtype=torch.float64), "c_i": torch.ones(2, 3, dtype=torch.float64),
             "round": 4, "k": torch.tensor([1, 2])}
    vec, unflatten = E.flatten_state(state)
    assert vec.shape == (9,)
    new = unflatten(vec * 2)
    assert new["round"] == 4 and torch.equal(new["k"], state["k"])
    assert torch.equal(new["x"], 2 * state["x"]) and new["c_i"].shape == (2, 3)


# ---------------------------------------------------------------------------------------- M2
def test_stationary_moments_against_monte_carlo():
    """A 2-D noisy linear system z+ = M z + c + N xi: Lyapunov moments vs 40 000 parallel chains (M5)."""
    M = np.array([[0.6, 0.3], [-0.2, 0.7]])
    c = np.array([1.0, -0.5])
    N = np.array([[1.0, 0.0], [0.5, 0.8]])
    Sigma = np.array([[1.0, 0.3], [0.3, 0.5]])
    assert E.spectral_radius(M) < 0.8
    m, C = E.stationary_moments(M, c, N, Sigma)
    np.testing.assert_allclose(C, M @ C @ M.T + N @ Sigma @ N.T, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(C, C.T, atol=0)
    rng = np.random.default_rng(2024)
    chains = 40_000
    Lc = np.linalg.cholesky(Sigma)
    z = np.zeros((chains, 2))
    for _ in range(150):  # rho^150 < 1e-14: the transient is gone
        xi = rng.standard_normal((chains, 2)) @ Lc.T
        z = z @ M.T + c + xi @ N.T
    for k in range(2):
        assert E.mc_agrees(z[:, k], m[k], rel_tol=0.05)
    dz = z - m
    for j in range(2):
        for k in range(2):
            assert E.mc_agrees(dz[:, j] * dz[:, k], C[j, k], rel_tol=0.05)


def test_stationary_moments_defaults_and_instability():
    M = np.array([[0.5, 0.1], [0.0, 0.4]])
    c = np.array([1.0, 2.0])
    m, C = E.stationary_moments(M, c)
    np.testing.assert_allclose(m, np.linalg.solve(np.eye(2) - M, c))
    assert np.all(C == 0)
    m, C = E.stationary_moments(M, c, Sigma=np.eye(2))  # N defaults to I
    np.testing.assert_allclose(C, M @ C @ M.T + np.eye(2), atol=1e-13)
    with pytest.raises(ValueError, match="not stable"):
        E.stationary_moments(np.diag([1.0, 0.5]), c, Sigma=np.eye(2))
    with pytest.raises(ValueError, match="spectral radius"):
        E.stationary_moments(np.array([[0.0, 1.2], [1.2, 0.0]]), c)


# ---------------------------------------------------------------------------------------- M3
def test_quadratic_flow_solves_the_ode():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    H = Q @ np.diag([0.5, 1.0, 2.0]) @ Q.T
    c = rng.standard_normal(3)
    x0 = rng.standard_normal(3)
    np.testing.assert_allclose(E.quadratic_flow(H, c, x0, 0.0), x0, atol=1e-14)
    h = 1e-4
    for T in (0.3, 1.0, 2.5):
        xT = E.quadratic_flow(H, c, x0, T)
        deriv = (E.quadratic_flow(H, c, x0, T + h) - E.quadratic_flow(H, c, x0, T - h)) / (2 * h)
        np.testing.assert_allclose(deriv, -(H @ xT - c), rtol=0, atol=1e-8)
    # semigroup property and the limit
    np.testing.assert_allclose(E.quadratic_flow(H, c, E.quadratic_flow(H, c, x0, 0.4), 0.6),
                               E.quadratic_flow(H, c, x0, 1.0), atol=1e-13)
    np.testing.assert_allclose(E.quadratic_flow(H, c, x0, 80.0), np.linalg.solve(H, c), atol=1e-12)


def test_flow_residual_slope_of_gd():
    """One GD step follows the plain gradient flow to order eta^2 (slope 2) and the IGR-modified
    flow H_F = H + eta/2 H^2 to order eta^3 (slope 3) – M3 on THEORY B1. (THEORY's M3 step sizes
    {0.02, ..., 0.0025} span only 0.9 decades, which M4's guard rejects, so 0.04 is added.)"""
    rng = np.random.default_rng(4)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    H = Q @ np.diag([0.5, 1.0, 2.0]) @ Q.T
    b = rng.standard_normal(3)
    c = H @ b
    x0 = rng.standard_normal(3)
    etas = [0.04, 0.02, 0.01, 0.005, 0.0025]  # >= 1 decade (M4)
    gd = lambda eta, x: x - eta * (H @ x - c)  # noqa: E731
    plain, _ = E.modified_flow_residual_slope(gd, lambda eta: (H, c), x0, etas, lambda eta: eta)
    mod, _ = E.modified_flow_residual_slope(
        gd, lambda eta: (H + eta / 2 * H @ H, c + eta / 2 * H @ c), x0, etas, lambda eta: eta)
    wrong, _ = E.modified_flow_residual_slope(
        gd, lambda eta: (H - eta / 2 * H @ H, c - eta / 2 * H @ c), x0, etas, lambda eta: eta)
    assert abs(plain - 2) <= 0.1
    assert abs(mod - 3) <= 0.1
    assert abs(wrong - 2) <= 0.1  # a wrong sign stays at order 2


# ---------------------------------------------------------------------------------------- M4
def test_fit_slope_recovers_power_law_exactly():
    x = np.geomspace(1e-3, 1e-1, 6)
    fit = E.fit_slope(x, 3.0 * x ** -1.5)
    assert fit.slope == pytest.approx(-1.5, abs=1e-12)
    assert fit.intercept == pytest.approx(np.log(3.0), abs=1e-11)
    np.testing.assert_allclose(fit.predict(x), 3.0 * x ** -1.5, rtol=1e-11)
    semi = E.fit_slope(np.arange(5.0), 2.0 * 0.3 ** np.arange(5.0), loglog=False)
    assert semi.slope == pytest.approx(np.log(0.3), abs=1e-12)


def test_fit_slope_guards():
    x = np.geomspace(1, 100, 5)
    with pytest.raises(ValueError, match="at least 4 points"):
        E.fit_slope(x[:3], x[:3] ** 2)
    with pytest.raises(ValueError, match="decades"):
        E.fit_slope(np.linspace(1, 9, 5), np.linspace(1, 9, 5) ** 2)
    E.fit_slope(np.geomspace(1, 10, 4), np.geomspace(1, 10, 4))  # exactly one decade is enough
    for bad in (0.0, -1.0, np.nan, np.inf):
        y = x ** 2
        y[2] = bad
        with pytest.raises(ValueError, match="finite and positive"):
            E.fit_slope(x, y)
    with pytest.raises(ValueError, match="x must be positive"):
        E.fit_slope(np.array([-1.0, 1, 10, 100]), np.ones(4))
    with pytest.raises(ValueError, match="same length"):
        E.fit_slope(x, x[:4])


def test_empirical_rate_geometric_sequence():
    e = 0.5 ** np.arange(60.0)
    assert E.empirical_rate(e) == pytest.approx(0.5, rel=1e-14)
    win = E.asymptotic_window(e)
    assert np.all(e[win] <= 1e-2) and np.all(e[win] >= 1e-10)
    assert win[0] == 7 and win[-1] == 33  # 2^-7 < 1e-2 <= 2^-6, 2^-33 >= 1e-10 > 2^-34
    # a transient that would spoil a global fit is excluded by the window
    e2 = np.concatenate([[10.0, 5.0, 1.0], 0.3 * 0.8 ** np.arange(150.0)])
    assert E.empirical_rate(e2) == pytest.approx(0.8, rel=1e-13)
    with pytest.raises(ValueError, match="fewer than 3"):
        E.empirical_rate(np.array([1.0, 1e-3, 1e-4, 1.0]))


# ---------------------------------------------------------------------------------------- M5
def test_mc_interval_and_agrees():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    m, lo, hi = E.mc_interval(s)
    se = np.std(s, ddof=1) / 2
    assert (m, lo, hi) == pytest.approx((2.5, 2.5 - 3 * se, 2.5 + 3 * se), rel=1e-15)
    assert E.mc_agrees(s, 2.5)
    assert not E.mc_agrees(s, 2.5 + 3.1 * se)  # outside the interval
    wide = np.array([0.0, 10.0, 0.0, 10.0])
    assert not E.mc_agrees(wide, 5.5)  # inside ±3 SE but 10 % off
    assert E.mc_agrees(wide, 5.5, rel_tol=0.2)
    with pytest.raises(ValueError, match="at least 2"):
        E.mc_interval([1.0])


# ---------------------------------------------------------------------------------------- M6
def test_must_differ_verdicts():
    ok = E.must_differ(0.0438, 1e-14)
    assert ok == {"fix_ok": True, "biased_stays": True, "passed": True}
    assert not E.must_differ(0.0438, 1e-9)["passed"]  # the fix did not converge
    v = E.must_differ(5e-9, 1e-14)  # the biased method is not visibly biased
    assert v["fix_ok"] and not v["biased_stays"] and not v["passed"]
    v = E.must_differ(0.0438, 1e-14, closed_form_bias=0.0438 * (1 + 1e-10))
    assert v["bias_matches"] and v["passed"]
    v = E.must_differ(0.0438, 1e-14, closed_form_bias=0.0438 * (1 + 1e-6))
    assert not v["bias_matches"] and not v["passed"]


def test_lyapunov_cross_check_with_kronecker():
    """The Lyapunov solution equals the Kronecker-product formula vec C = (I - M (x) M)^-1 vec Q."""
    rng = np.random.default_rng(5)
    M = 0.3 * rng.standard_normal((3, 3))
    N = rng.standard_normal((3, 2))
    S = np.array([[1.0, 0.2], [0.2, 0.4]])
    _, C = E.stationary_moments(M, np.zeros(3), N, S)
    Q = N @ S @ N.T
    vecC = np.linalg.solve(np.eye(9) - np.kron(M, M), Q.reshape(-1))
    np.testing.assert_allclose(C, vecC.reshape(3, 3), rtol=1e-12, atol=1e-14)
    assert scipy.linalg.norm(C - C.T) == 0


def test_method_affine_map_does_not_depend_on_the_key_order_of_step():
    """A method may return its state keys in another order than init; the probed map must not mix blocks."""
    import torch

    from hetlab.algorithms import FedAvg, ServerMomentum
    from hetlab.comm import SimulatedComm
    from hetlab.exact import flatten_state, method_affine_map
    from hetlab.problems import Oracle, random_quadratics

    class Reordered(FedAvg):
        def step(self, state, oracle, comm, generator):
            new = super().step(state, oracle, comm, generator)
            return dict(reversed(list(new.items())))

    prob = random_quadratics(4, 3, seed=1)
    meth = Reordered(0.1, 3, ServerMomentum(0.5, 0.5))
    M, c, unflatten = method_affine_map(meth, prob)
    template = meth.init(torch.zeros(3, dtype=torch.float64), prob)
    z = np.random.default_rng(0).standard_normal(M.shape[0])
    state = unflatten(z)
    for _ in range(5):
        state = meth.step(state, Oracle(prob), SimulatedComm(prob.n), None)
        z = M @ z + c
        assert np.abs(flatten_state({k: state[k] for k in template})[0] - z).max() < 1e-12
