"""Exact mean-square operators of minibatch and delayed SGD (hetlab.closed_forms_batch), AsyncSGD, the
width/depth diversity diagnostic (hetlab.width), and check E2's ability to fail."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import proofs_check
from hetlab import closed_forms_batch as cfb
from hetlab.algorithms import AsyncSGD, MinibatchSGD
from hetlab.comm import SimulatedComm
from hetlab.problems import Oracle
from hetlab.width import diversity_at_init, param_count, width_for_params
from proofs_check.e2_critical_batch_size_saturation import interpolating_problem, make_rows

DT = torch.float64


def rows(N=8, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)) * np.exp(rng.uniform(-1, 1, (N, 1)))


def test_operator_matches_second_moment_recursion_by_enumeration():
    # one step of T_{B, eta} on P equals E[(I - eta H_B) P (I - eta H_B)] over all batches
    import itertools
    A = rows(7, 3)
    N, d = A.shape
    rng = np.random.default_rng(1)
    P = rng.standard_normal((d, d))
    P = P @ P.T
    for B in (1, 3, 7):
        acc = np.zeros((d, d))
        subs = list(itertools.combinations(range(N), B))
        for sub in subs:
            Hb = A[list(sub)].T @ A[list(sub)] / B
            M = np.eye(d) - 0.1 * Hb
            acc += M @ P @ M
        acc /= len(subs)
        T = cfb.minibatch_ms_operator(A, B, 0.1)
        out = (T @ P.reshape(-1, order="F")).reshape(d, d, order="F")
        assert np.allclose(out, acc, atol=1e-13)


def test_expected_smoothness_endpoints_and_derived_speedup():
    L, Lmax, N = 2.0, 30.0, 64
    assert cfb.expected_smoothness(1, N, L, Lmax) == pytest.approx(Lmax)
    assert cfb.expected_smoothness(N, N, L, Lmax) == pytest.approx(L)
    assert cfb.derived_speedup(N, N, L, Lmax) == pytest.approx(Lmax / L)
    assert cfb.critical_batch_size(L, Lmax) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="batch size"):
        cfb.expected_smoothness(0, N, L, Lmax)
    with pytest.raises(ValueError, match="batch size"):
        cfb.expected_smoothness(65, N, L, Lmax)


def test_full_batch_rate_is_gd_rate_and_speedups_are_monotone():
    A = rows(16, 3, seed=2)
    r, eta = cfb.optimal_ms_rate(A, 16)
    L, _, mu = cfb.row_constants(A)
    assert r == pytest.approx(cfb.gd_optimal_rate(A), rel=1e-10)
    assert eta == pytest.approx(2 / (L + mu), rel=1e-6)
    S = cfb.speedups(A, (1, 2, 4, 8, 16))
    assert S[0] == 1.0 and np.all(np.diff(S) > 0) and np.all(S <= np.array([1, 2, 4, 8, 16]) + 1e-9)


def test_ms_rate_predicts_simulated_minibatch_sgd():
    # E||e_T||^2 of the library's MinibatchSGD (participation = B clients = rows) against the operator
    A = rows(10, 2, seed=4)
    x_star = np.array([1.0, -2.0])
    prob = interpolating_problem(A, x_star)
    B, eta, T, R = 3, 0.5 / cfb.row_constants(A)[1], 15, 1500
    m = MinibatchSGD(eta, participation=B, check_stability=False)
    gen = torch.Generator().manual_seed(0)
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    vals = []
    for _ in range(R):
        s = m.init(torch.zeros(2, dtype=DT), prob)
        for _ in range(T):
            s = m.step(s, oracle, comm, gen)
        vals.append(float(((s["x"] - torch.tensor(x_star)) ** 2).sum()))
    Top = cfb.minibatch_ms_operator(A, B, eta)
    p = np.linalg.matrix_power(Top, T) @ np.outer(x_star, x_star).reshape(-1, order="F")
    exact = np.trace(p.reshape(2, 2, order="F"))
    se = np.std(vals, ddof=1) / math.sqrt(R)
    assert abs(np.mean(vals) - exact) <= 3 * se


def test_delayed_operator_tau_zero_is_sgd_with_batch_one():
    A = rows(9, 3, seed=5)
    for eta in (0.01, 0.1):
        assert cfb.delayed_ms_rate(A, 0, eta) == pytest.approx(cfb.ms_rate(A, 1, eta), rel=1e-12)


def test_delayed_rate_dense_and_arpack_agree():
    # K is 576 x 576 (tau = 7, d = 3): the ARPACK path; several instances and steps, dense as reference
    for seed, eta in [(6, 0.05), (0, 0.13254), (3, 0.3)]:
        A = rows(24, 3, seed=seed)
        A = A / np.linalg.norm(A, axis=1, keepdims=True) * np.exp(0.5 * np.random.default_rng(seed).uniform(-1, 1, (24, 1)))
        parts = cfb._delayed_parts(A, 7)
        K = parts[0] - eta * parts[1] + eta ** 2 * parts[2]
        dense = float(np.abs(np.linalg.eigvals(K)).max())
        assert cfb.delayed_ms_rate(A, 7, eta) == pytest.approx(dense, rel=1e-9)


def test_delays_slow_down_homogeneous_rows():
    A = rows(12, 2, seed=7)
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    tau, slow = cfb.tolerable_delay(A, [1, 2, 4], grid=20)
    assert slow[-1] > slow[0] >= 0.9
    with pytest.raises(ValueError, match="delay"):
        cfb.delayed_sgd_matrices(A, -1, 0.1)


def test_async_sgd_fixed_delay_uses_the_stale_model():
    A = rows(6, 2, seed=8)
    prob = interpolating_problem(A, np.array([1.0, 1.0]))
    m = AsyncSGD(0.1, max_delay=2, batch=6)      # all rows: deterministic delayed GD
    s = m.init(torch.zeros(2, dtype=DT), prob)
    xs = [s["x"]]
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    for t in range(6):
        s = m.step(s, oracle, comm, None)
        xs.append(s["x"])
    H = torch.tensor(A.T @ A / 6)
    for t in range(6):
        stale = xs[max(t - 2, 0)]
        expected = xs[t] - 0.1 * H @ (stale - torch.tensor([1.0, 1.0], dtype=DT))
        assert torch.allclose(xs[t + 1], expected, atol=1e-14)
    with pytest.raises(ValueError, match="max_delay"):
        AsyncSGD(0.1, max_delay=-1)
    with pytest.raises(ValueError, match="delays"):
        AsyncSGD(0.1, 1, delays="poisson")


def test_async_sgd_without_delay_equals_minibatch_sgd():
    A = rows(8, 3, seed=9)
    prob = interpolating_problem(A, np.ones(3))
    a, b = AsyncSGD(0.05, 0, batch=2), MinibatchSGD(0.05, participation=2, check_stability=False)
    sa, sb = a.init(torch.zeros(3, dtype=DT), prob), b.init(torch.zeros(3, dtype=DT), prob)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    for _ in range(20):
        sa, sb = a.step(sa, oracle, comm, ga), b.step(sb, oracle, comm, gb)
    assert torch.allclose(sa["x"], sb["x"], atol=1e-14)


def test_width_for_params_matches_count():
    for depth in (2, 3, 5, 8):
        h = width_for_params(4000, depth, 10, 1)
        assert abs(param_count(10, h, depth, 1) - 4000) <= abs(param_count(10, h + 1, depth, 1) - 4000)
        assert abs(param_count(10, h, depth, 1) - 4000) <= abs(param_count(10, max(h - 1, 1), depth, 1) - 4000)
    with pytest.raises(ValueError, match="depth"):
        width_for_params(100, 1, 10, 1)


def test_diversity_at_init_uses_per_sample_gradients_correctly():
    # depth-1 linear model W x: per-sample gradient (W x_i - y_i) x_i^T, computed by hand
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    est = diversity_at_init(X, Y, width=1, depth=1, inits=3, seed=11, bootstrap=50)
    gen = torch.Generator().manual_seed(11)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for r in range(3):
        W = torch.randn(2, 4, generator=gen, dtype=DT) / 2.0
        G = torch.einsum("ni,nj->nij", Xt @ W.T - Yt, Xt).reshape(16, -1)
        assert est.sum_sq[r] == pytest.approx(float((G * G).sum()), rel=1e-12)
        assert est.sq_sum[r] == pytest.approx(float(G.sum(0) @ G.sum(0)), rel=1e-12)
    assert est.ratio == pytest.approx(est.sum_sq.mean() / est.sq_sum.mean())
    assert est.ci[0] <= est.ratio <= est.ci[1]


def test_e2_fails_if_the_step_is_not_retuned(monkeypatch):
    mod = proofs_check.get("E2")
    real = mod.cfb.optimal_ms_rate
    A = make_rows(0)
    eta1 = real(A, 1)[1]
    monkeypatch.setattr(mod.cfb, "optimal_ms_rate", lambda A_, B, grid=300: (mod.cfb.ms_rate(A_, B, eta1), eta1))
    assert not mod.run().passed


def test_e2_fails_with_a_wrong_pair_factor(monkeypatch):
    mod = proofs_check.get("E2")
    real = mod.cfb.minibatch_hessian_second_moment
    monkeypatch.setattr(mod.cfb, "minibatch_hessian_second_moment", lambda A, P, B: real(A, P, B) * (1 + 1e-6))
    assert not mod.run().passed
