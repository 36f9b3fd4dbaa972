"""Tests of the exercise answers of the chapter "Gradient diversity and the batch size".

The answers live in ``book/solutions/batch_size.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation with hetlab: brute-force enumeration of every minibatch
(``hetlab.batch``, ``hetlab.closed_forms_batch``) or of every ordered tuple of draws, the exact minibatch
variance of its least-squares problem, per-sample gradients with Yin's diversity, the exact mean-square
operators of minibatch and delayed SGD, the library's ``AsyncSGD`` iterated, and the parameter counts of
real ``torch`` networks. The mutation tests write a plausible wrong formula in the test and show that the
same comparison rejects it.
"""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import batch_size as sol  # noqa: E402

from hetlab import batch as hb  # noqa: E402
from hetlab import closed_forms_batch as cfb  # noqa: E402
from hetlab import width as hw  # noqa: E402
from hetlab.algorithms.async_sgd import AsyncSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.problems import LeastSquaresProblem, Oracle, QuadraticProblem  # noqa: E402

DT = torch.float64


def _G(seed, N, d, shift=0.3):
    return np.random.default_rng(seed).normal(shift, 1.0, (N, d))


def _rows(seed, N, d, spread=1.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)) * np.exp(spread * rng.uniform(-1, 1, (N, 1)))


def _with_replacement_by_enumeration(G, B):
    """E||sum of B i.i.d. uniform rows||^2 and E||mean - S/N||^2 over all N^B ordered tuples."""
    N = G.shape[0]
    tuples = np.array(list(itertools.product(range(N), repeat=B)))
    sums = G[tuples].sum(1)
    dev = G[tuples].mean(1) - G.mean(0)
    return float((sums * sums).sum(1).mean()), float((dev * dev).sum(1).mean())

# ---------------------------------------------------------------------------------- bs-ex-moments


@pytest.mark.parametrize("N, B", [(6, 1), (6, 2), (7, 3), (9, 4), (10, 10), (12, 5)])
def test_moments_without_replacement_against_enumeration_of_all_subsets(N, B):
    G = _G(N * 10 + B, N, 3)
    assert sol.sum_second_moment(G, B) == pytest.approx(hb.enumerate_sum_second_moment(G, B), rel=1e-12)
    assert sol.mean_variance(G, B) == pytest.approx(hb.enumerate_mean_variance(G, B), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("N, B", [(4, 1), (4, 3), (5, 2), (5, 4), (6, 3)])
def test_moments_with_replacement_against_enumeration_of_all_tuples(N, B):
    G = _G(N * 7 + B, N, 2, shift=-0.5)
    s2, var = _with_replacement_by_enumeration(G, B)
    assert sol.sum_second_moment(G, B, replace=True) == pytest.approx(s2, rel=1e-12)
    assert sol.mean_variance(G, B, replace=True) == pytest.approx(var, rel=1e-12)
    assert sol.sum_second_moment(G, B, replace=True) == pytest.approx(
        hb.minibatch_sum_second_moment(G, B, replace=True), rel=1e-12)


@pytest.mark.parametrize("replace", [False, True])
def test_mean_variance_against_the_least_squares_minibatch_variance(replace):
    rng = np.random.default_rng(3)
    m, d = 15, 4
    Z, y = rng.standard_normal((1, m, d)), rng.standard_normal((1, m))
    prob = LeastSquaresProblem(Z, y)
    x = torch.as_tensor(rng.standard_normal(d))
    G = prob.per_sample_grads(prob.stack(x))[0].numpy()
    for B in (1, 4, 9, 15):
        lib = float(prob.minibatch_variance(x, B, replace)[0])
        assert sol.mean_variance(G, B, replace) == pytest.approx(lib, rel=1e-12, abs=1e-14)


def test_mutation_with_replacement_pair_factor_is_rejected_by_enumeration():
    G = _G(1, 8, 3)
    N, B = 8, 4
    sq, S = float((G * G).sum()), G.sum(0)
    wrong = B * sq / N + B * (B - 1) * (float(S @ S) - sq) / N ** 2    # (B-1)/N instead of (B-1)/(N-1)
    assert abs(wrong - hb.enumerate_sum_second_moment(G, B)) > 1e-3 * abs(wrong)
    assert abs(sol.sum_second_moment(G, B) - hb.enumerate_sum_second_moment(G, B)) < 1e-12 * abs(wrong)

# ----------------------------------------------------------------------------- bs-ex-interpolation


def _ls_problem(A, x_star, noise=0.0, seed=0):
    y = A @ x_star + noise * np.random.default_rng(seed).standard_normal(A.shape[0])
    return LeastSquaresProblem(A[None], y[None])


def _batch_bound_library(prob, x):
    G = prob.per_sample_grads(prob.stack(torch.as_tensor(x)))[0]
    return hb.batch_size_bound(G)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interpolating_batch_bound_is_bounded_and_attained(seed):
    A = _rows(seed, 30, 4)
    rng = np.random.default_rng(seed + 100)
    x_star = rng.standard_normal(4)
    prob = _ls_problem(A, x_star)
    sup = sol.sup_batch_bound_interpolating(A)
    vals = [_batch_bound_library(prob, x_star + rng.standard_normal(4) * 10.0 ** rng.uniform(-3, 1))
            for _ in range(300)]
    assert max(vals) <= sup * (1 + 1e-10)
    assert sup <= sol.simple_batch_bound_interpolating(A) * (1 + 1e-12)
    v = sol.worst_direction_interpolating(A)
    assert _batch_bound_library(prob, x_star + 1e-3 * v) == pytest.approx(sup, rel=1e-9)
    assert sol.batch_bound_at(A, v) == pytest.approx(sup, rel=1e-10)
    # scale invariance: N Delta depends on the direction of the error only
    assert _batch_bound_library(prob, x_star + 5.0 * v) == pytest.approx(sup, rel=1e-9)


def test_noisy_least_squares_diversity_blows_up_at_the_optimum():
    A = _rows(4, 30, 4)
    prob = _ls_problem(A, np.ones(4), noise=0.5)
    x_opt = prob.x_star
    G = prob.per_sample_grads(prob.stack(x_opt))[0]
    assert hb.batch_size_bound(G) > 1e6 * sol.sup_batch_bound_interpolating(A)


def test_mutation_generalised_eigenvalue_with_H_instead_of_H_squared_is_rejected():
    import scipy.linalg
    A = _rows(5, 30, 4)
    N = A.shape[0]
    H = A.T @ A / N
    K = (A * (A * A).sum(1)[:, None]).T @ A / N
    wrong = float(scipy.linalg.eigh(K, H, eigvals_only=True)[-1])
    prob = _ls_problem(A, np.zeros(4))
    v = sol.worst_direction_interpolating(A)
    measured = _batch_bound_library(prob, v)
    assert abs(wrong - measured) > 1e-3 * measured
    assert abs(sol.sup_batch_bound_interpolating(A) - measured) < 1e-9 * measured

# -------------------------------------------------------------------------------- bs-ex-critical


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_smoothness_dominates_the_enumerated_batch_hessian_square(seed):
    A = _rows(seed, 8, 3)
    N = A.shape[0]
    L, L_max, mu = sol.row_constants(A)
    assert (L, L_max, mu) == pytest.approx(cfb.row_constants(A), rel=1e-12)
    H = A.T @ A / N
    for B in range(1, N + 1):
        EH2 = cfb.enumerate_hessian_second_moment(A, np.eye(3), B)          # E[H_B I H_B], all batches
        gap = sol.expected_smoothness(B, N, L, L_max) * H - EH2
        assert np.linalg.eigvalsh(gap).min() >= -1e-12 * L_max ** 2
        assert sol.expected_smoothness(B, N, L, L_max) == pytest.approx(cfb.expected_smoothness(B, N, L, L_max),
                                                                         rel=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guaranteed_rate_bounds_the_exact_operator_and_predictions(seed):
    A = _rows(seed, 24, 3)
    N = A.shape[0]
    L, L_max, mu = cfb.row_constants(A)
    assert sol.critical_batch(A) == pytest.approx(cfb.critical_batch_size(L, L_max), rel=1e-13)
    for B in (1, 2, 4, 8, 24):
        eta = 1.0 / cfb.expected_smoothness(B, N, L, L_max)
        assert cfb.ms_rate(A, B, eta) <= sol.guaranteed_rate(A, B) + 1e-12
        assert sol.predicted_speedup(A, B) == pytest.approx(cfb.derived_speedup(B, N, L, L_max), rel=1e-13)


def test_mutation_swapped_constants_violate_the_bound():
    A = _rows(0, 8, 3)
    N = A.shape[0]
    L, L_max, mu = cfb.row_constants(A)
    H = A.T @ A / N
    wrong = lambda B: (N - B) / (B * (N - 1)) * L + N * (B - 1) / (B * (N - 1)) * L_max  # noqa: E731
    EH2 = cfb.enumerate_hessian_second_moment(A, np.eye(3), 1)
    assert np.linalg.eigvalsh(wrong(1) * H - EH2).min() < -1e-3
    assert np.linalg.eigvalsh(sol.expected_smoothness(1, N, L, L_max) * H - EH2).min() >= -1e-12

# ----------------------------------------------------------------------------- bs-ex-superlinear


H_CASES = [np.array([0.2, 0.2, 0.2, 3.4]), np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
           np.array([0.5, 1.0, 1.5, 2.0, 8.0]), np.random.default_rng(9).uniform(0.1, 3.0, 7)]


@pytest.mark.parametrize("h", H_CASES)
def test_scalar_rate_against_the_exact_operator(h):
    a = np.sqrt(h)[:, None]
    for B in range(1, len(h)):
        r_lib, _ = cfb.optimal_ms_rate(a, B)
        assert sol.scalar_optimal_rate(h, B) == pytest.approx(r_lib, rel=1e-8)


@pytest.mark.parametrize("h", H_CASES)
def test_with_replacement_speedup_is_at_most_linear_by_enumeration(h):
    N = len(h)
    for B in range(1, 5):
        tuples = np.array(list(itertools.product(range(N), repeat=B)))
        hB = h[tuples].mean(1)
        r_enum = 1.0 - h.mean() ** 2 / float((hB * hB).mean())   # best step eta = mean h / E h_B^2
        assert sol.scalar_optimal_rate(h, B, replace=True) == pytest.approx(r_enum, rel=1e-12)
        assert sol.scalar_speedup(h, B, replace=True) <= B * (1 + 1e-12)


def test_without_replacement_speedup_can_be_superlinear():
    h = H_CASES[0]
    a = np.sqrt(h)[:, None]
    S_lib = cfb.speedups(a, [2, 3])
    assert S_lib == pytest.approx([sol.scalar_speedup(h, 2), sol.scalar_speedup(h, 3)], rel=1e-7)
    assert S_lib[0] > 2 and S_lib[1] > 3


def test_mutation_finite_population_factor_is_rejected():
    h = H_CASES[2]
    N, B = len(h), 3
    q = h.var() / h.mean() ** 2
    c = (N - B) / (B * N)                                  # wrong: N instead of N - 1
    r_lib, _ = cfb.optimal_ms_rate(np.sqrt(h)[:, None], B)
    assert abs(q * c / (1 + q * c) - r_lib) > 1e-3 * r_lib

# ---------------------------------------------------------------------------------- bs-ex-delay


def _boundary_by_bisection(tau, h=1.7):
    """The step at which the exact mean-square rate of delayed SGD on identical rows crosses 1."""
    A = np.full((2, 1), math.sqrt(h))                      # two identical rows: deterministic delayed GD
    lo, hi = 1e-6, 2.0 / h
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cfb.delayed_ms_rate(A, tau, mid) < 1 else (lo, mid)
    return 0.5 * (lo + hi) * h


@pytest.mark.parametrize("tau", range(7))
def test_stability_limit_against_the_exact_delayed_operator(tau):
    assert sol.delayed_gd_stability_limit(tau) == pytest.approx(_boundary_by_bisection(tau), rel=1e-9)


@pytest.mark.parametrize("tau", [0, 1, 3, 5])
def test_spectral_radius_squared_is_the_mean_square_rate(tau):
    h = 0.8
    A = np.full((3, 1), math.sqrt(h))
    for a in np.linspace(0.05, 1.5, 7) * sol.delayed_gd_stability_limit(tau):
        assert sol.delayed_gd_spectral_radius(a, tau) ** 2 == pytest.approx(
            cfb.delayed_ms_rate(A, tau, a / h), rel=1e-9)


@pytest.mark.parametrize("tau", [1, 2, 4])
def test_async_sgd_converges_below_and_diverges_above_the_limit(tau):
    h, T = 2.0, 4000
    prob = QuadraticProblem.from_minimizers(np.full((2, 1, 1), h), np.zeros((2, 1)))
    out = {}
    for factor in (0.97, 1.03):
        meth = AsyncSGD(factor * sol.delayed_gd_stability_limit(tau) / h, tau)
        s, oracle, comm = meth.init(torch.ones(1, dtype=DT), prob), Oracle(prob), SimulatedComm(2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(T):
            s = meth.step(s, oracle, comm, gen)
        out[factor] = abs(float(s["x"][0]))
    assert out[0.97] < 1e-3 and out[1.03] > 1e3


def test_tau1_operator_against_the_library_matrices():
    A = _rows(2, 10, 3)
    rng = np.random.default_rng(7)
    W = rng.standard_normal((6, 6))
    Z = W @ W.T
    eta = 0.3 / cfb.row_constants(A)[1]
    Ms = cfb.delayed_sgd_matrices(A, 1, eta)
    Z_next = np.einsum("nab,bc,ndc->ad", Ms, Z, Ms) / len(Ms)
    P, Q, R = sol.tau1_second_moment_step(A, eta, Z[:3, :3], Z[:3, 3:], Z[3:, 3:])
    assert np.abs(P - Z_next[:3, :3]).max() < 1e-12 * np.abs(Z).max()
    assert np.abs(Q - Z_next[:3, 3:]).max() < 1e-12 * np.abs(Z).max()
    assert np.abs(R - Z_next[3:, 3:]).max() < 1e-12 * np.abs(Z).max()


def test_mutation_naive_delay_limit_is_rejected():
    # 2/(tau+1) agrees with the true limit for tau = 0, 1 and differs from tau = 2 on
    for tau in (0, 1):
        assert abs(2.0 / (tau + 1) - _boundary_by_bisection(tau)) < 1e-8
    for tau in (2, 4):
        assert abs(2.0 / (tau + 1) - _boundary_by_bisection(tau)) > 1e-2

# ---------------------------------------------------------------------------------- bs-ex-width


def _torch_count(d_in, width, depth, d_out):
    dims = [d_in] + [width] * (depth - 1) + [d_out]
    net = torch.nn.Sequential(*[torch.nn.Linear(dims[k], dims[k + 1], bias=False) for k in range(depth)])
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("depth", [2, 3, 4, 6, 8])
def test_param_count_against_torch_networks(depth):
    for width in (1, 5, 25, 64):
        assert sol.param_count(10, width, depth, 1) == _torch_count(10, width, depth, 1) \
            == hw.param_count(10, width, depth, 1)


@pytest.mark.parametrize("params", [500, 1000, 4000, 20000])
@pytest.mark.parametrize("depth", [2, 3, 4, 6, 8])
def test_matched_width_is_the_best_width_by_search(params, depth):
    w = sol.matched_width(params, depth, 10, 1)
    counts = {h: hw.param_count(10, h, depth, 1) for h in range(1, params + 1)}
    best = min(abs(c - params) for c in counts.values())
    assert abs(counts[w] - params) == best
    assert w == hw.width_for_params(params, depth, 10, 1)


def test_mutation_one_square_layer_too_many_is_rejected():
    wrong = lambda d_in, h, depth, d_out: d_in * h + (depth - 1) * h * h + h * d_out  # noqa: E731
    assert wrong(10, 25, 8, 1) != _torch_count(10, 25, 8, 1) == sol.param_count(10, 25, 8, 1)
