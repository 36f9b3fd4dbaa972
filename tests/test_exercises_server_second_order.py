"""Tests of the exercise answers of the chapter "Server-side and second-order methods".

The answers live in ``book/solutions/server_second_order.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation: the exact affine map of the library's FedAvg with a server
optimizer (``hetlab.exact``), FedAWARE's exact min-norm solver and Frank–Wolfe, the library's LocalNewton iterated
with and without its line search, and SciPy (SLSQP, bounded scalar minimisation). Mutation tests show that a wrong
formula (a missing square, a flipped sign, a forgotten power, the wrong curvature) is caught by the same
comparison. All seeds are fixed and printed in the parametrisation.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import server_second_order as sol  # noqa: E402

from hetlab.algorithms import FedAvg, LocalNewton, ServerSGD  # noqa: E402
from hetlab.algorithms.server_side import (frank_wolfe_min_norm, kkt_residuals, min_norm_simplex,  # noqa: E402
                                           weighted_diversity)
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import method_affine_map, spectral_radius  # noqa: E402
from hetlab.problems import Oracle, random_quadratics  # noqa: E402

DT = torch.float64


def unit_rows(m, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((m, d))
    V[:, 0] += shift
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def slsqp_min_norm(V):
    """An independent solver of the simplex min-norm QP (SciPy SLSQP)."""
    G = V @ V.T
    m = len(V)
    res = minimize(lambda l: l @ G @ l, np.full(m, 1 / m), jac=lambda l: 2 * G @ l, method="SLSQP",
                   bounds=[(0, 1)] * m, constraints=[{"type": "eq", "fun": lambda l: l.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    return res.x


def quad_arrays(prob):
    return prob.A.numpy(), prob.b.numpy(), prob.weights.numpy()


def run_rounds(method, prob, rounds, x0):
    state = method.init(torch.as_tensor(x0, dtype=DT), prob)
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    xs = [state["x"].numpy().copy()]
    for _ in range(rounds):
        state = method.step(state, oracle, comm, None)
        xs.append(state["x"].numpy().copy())
    return np.array(xs), state

# ---------------------------------------------------------------------------------- so-ex-server-lr


def library_server_rate(prob, lr, K, server_lr):
    M, _, _ = method_affine_map(FedAvg(lr, K, server_opt=ServerSGD(server_lr)), prob)
    return spectral_radius(M)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_server_sgd_rate_equals_spectral_radius_of_library_fedavg(seed):
    prob = random_quadratics(6, 4, seed=seed)
    Qb = sol.fedavg_Qbar(prob.A.numpy(), 0.1, 5, prob.weights.numpy())
    for g in (0.3, 1.0, 1.5, sol.optimal_server_lr(Qb)[0]):
        assert abs(sol.server_sgd_rate(Qb, g) - library_server_rate(prob, 0.1, 5, g)) < 1e-12


@pytest.mark.parametrize("seed", [0, 3])
def test_optimal_server_lr_minimises_the_library_rate_on_a_grid(seed):
    prob = random_quadratics(8, 5, seed=seed)
    Qb = sol.fedavg_Qbar(prob.A.numpy(), 0.1, 10, prob.weights.numpy())
    g_opt, r_opt = sol.optimal_server_lr(Qb)
    grid = np.linspace(0.2, 2.5, 47)
    rates = np.array([library_server_rate(prob, 0.1, 10, g) for g in grid])
    assert rates.min() >= r_opt - 1e-12                       # nothing on the grid beats the answer
    assert abs(library_server_rate(prob, 0.1, 10, g_opt) - r_opt) < 1e-12
    assert g_opt > 1.0                                         # plain averaging is not optimal here


def test_mutation_server_lr_one_over_sum_is_detected():
    prob = random_quadratics(8, 5, seed=0)
    Qb = sol.fedavg_Qbar(prob.A.numpy(), 0.1, 10, prob.weights.numpy())
    lam = np.linalg.eigvalsh(Qb)
    wrong = 1.0 / (lam[0] + lam[-1])                           # the factor 2 forgotten
    assert library_server_rate(prob, 0.1, 10, wrong) > sol.optimal_server_lr(Qb)[1] + 1e-3

# ---------------------------------------------------------------------------------- so-ex-diversity


@pytest.mark.parametrize("seed", range(5))
def test_inverse_sq_norm_is_the_library_weighted_diversity_for_unit_rows(seed):
    V = unit_rows(5, 4, seed, shift=0.5)
    rng = np.random.default_rng(100 + seed)
    for _ in range(20):
        lam = rng.dirichlet(np.ones(5))
        assert abs(sol.inverse_sq_norm(V, lam) - weighted_diversity(V, lam)) <= 1e-12 * weighted_diversity(V, lam)
        assert abs(sol.weighted_diversity(V, lam) - weighted_diversity(V, lam)) <= 1e-12 * weighted_diversity(V, lam)


def test_identity_needs_unit_rows():
    V = unit_rows(4, 3, 7, shift=1.0) * np.array([[1.0], [3.0], [0.5], [2.0]])
    lam = np.full(4, 0.25)
    assert abs(sol.inverse_sq_norm(V, lam) - weighted_diversity(V, lam)) > 1e-2


@pytest.mark.parametrize("m, d, seed", [(2, 3, 0), (3, 2, 1), (4, 4, 2), (5, 5, 3), (6, 3, 4), (6, 8, 5)])
def test_min_norm_point_matches_library_and_slsqp(m, d, seed):
    V = unit_rows(m, d, seed, shift=1.0)
    lam = sol.min_norm_point(V)
    d_sol, d_lib = lam @ V, min_norm_simplex(V) @ V             # d* is unique (the weights need not be)
    assert np.linalg.norm(d_sol - d_lib) < 1e-10
    assert abs(d_sol @ d_sol - float(np.sum((slsqp_min_norm(V) @ V) ** 2))) < 1e-9
    # the maximal diversity is not beaten by random weights
    rng = np.random.default_rng(seed)
    best_random = max(weighted_diversity(V, rng.dirichlet(np.ones(m))) for _ in range(300))
    assert best_random <= sol.inverse_sq_norm(V, lam) * (1 + 1e-12)


@pytest.mark.parametrize("theta_deg", [30.0, 90.0, 150.0, 179.0])
@pytest.mark.parametrize("k", [2, 3, 6])
def test_arc_max_diversity_against_library_solver(theta_deg, k):
    ang = np.deg2rad(np.linspace(0.0, theta_deg, k))
    V = np.stack([np.cos(ang), np.sin(ang)], 1)
    lam = min_norm_simplex(V)
    assert abs(weighted_diversity(V, lam) - sol.arc_max_diversity(np.deg2rad(theta_deg))) \
        <= 1e-9 * sol.arc_max_diversity(np.deg2rad(theta_deg))
    assert abs(lam[0] - 0.5) < 1e-10 and abs(lam[-1] - 0.5) < 1e-10


def test_arc_of_pi_or_more_contains_zero():
    ang = np.deg2rad([0.0, 100.0, 200.0])
    V = np.stack([np.cos(ang), np.sin(ang)], 1)
    assert np.linalg.norm(min_norm_simplex(V) @ V) < 1e-12
    assert sol.arc_max_diversity(np.deg2rad(200.0)) == np.inf


def test_mutation_inverse_norm_without_square_is_detected():
    V = unit_rows(5, 5, 0, shift=1.5)
    lam = min_norm_simplex(V)
    d = lam @ V
    mutated = 1.0 / np.linalg.norm(d)
    assert abs(mutated - weighted_diversity(V, lam)) > 1e-3
    assert abs(sol.inverse_sq_norm(V, lam) - weighted_diversity(V, lam)) < 1e-12 * weighted_diversity(V, lam)

# --------------------------------------------------------------------------------- so-ex-two-vector


def scipy_two_vector(u, v):
    res = minimize_scalar(lambda a: float(np.sum((a * u + (1 - a) * v) ** 2)), bounds=(0, 1), method="bounded",
                          options={"xatol": 1e-12})
    return res.x, res.fun


@pytest.mark.parametrize("seed", range(8))
def test_two_vector_alpha_and_norm_against_scipy_and_library(seed):
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(4) + 0.5 * seed, (1 + seed) * rng.standard_normal(4)
    a_num, f_num = scipy_two_vector(u, v)
    f_sol = sol.two_vector_min_norm_sq(u, v)
    assert abs(sol.two_vector_alpha(u, v) - a_num) < 1e-6
    assert f_sol <= f_num + 1e-12 * max(1.0, f_num)              # SciPy's bounded search never does better
    lam = min_norm_simplex(np.stack([u, v]))                     # hetlab's exact solver, rows (u, v)
    assert abs(sol.two_vector_alpha(u, v) - lam[0]) < 1e-10
    d_lib = lam @ np.stack([u, v])
    assert abs(f_sol - d_lib @ d_lib) < 1e-12 * max(1.0, f_sol)


@pytest.mark.parametrize("theta", [0.3, 1.0, 2.0, 3.0])
def test_two_unit_vectors_bisector(theta):
    u, v = np.array([1.0, 0.0, 0.0]), np.array([np.cos(theta), np.sin(theta), 0.0])
    assert sol.two_vector_alpha(u, v) == pytest.approx(0.5, abs=1e-15)
    assert abs(sol.two_vector_min_norm_sq(u, v) - np.cos(theta / 2) ** 2) < 1e-14
    lam = min_norm_simplex(np.stack([u, v]))
    assert abs(lam[0] - 0.5) < 1e-12


def test_mutation_two_vector_sign_flip_is_detected():
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal(4) + 1.0, 2.0 * rng.standard_normal(4)
    a_num, _ = scipy_two_vector(u, v)
    mutated = float(np.clip((u - v) @ v / ((u - v) @ (u - v)), 0, 1))   # <u - v, v> instead of <v - u, v>
    assert abs(mutated - a_num) > 1e-2
    assert abs(sol.two_vector_alpha(u, v) - a_num) < 1e-7

# -------------------------------------------------------------------------------------- so-ex-kkt


E3_LIKE = [unit_rows(5, 5, s, shift=1.5) for s in range(4)]


@pytest.mark.parametrize("k", range(4))
def test_kkt_slacks_against_library_residuals(k):
    V = E3_LIKE[k]
    for lam in (min_norm_simplex(V), np.full(5, 0.2), np.random.default_rng(k).dirichlet(np.ones(5))):
        s = sol.kkt_slacks(V, lam)
        lib_min, lib_supp, _ = kkt_residuals(V, lam)
        assert abs(s.min() - lib_min) < 1e-14
        assert abs(np.abs(s[lam > 1e-12]).max() - lib_supp) < 1e-14


@pytest.mark.parametrize("k", range(4))
def test_is_min_norm_on_exact_pairwise_vanilla_and_uniform(k):
    V = E3_LIKE[k]
    assert sol.is_min_norm(V, min_norm_simplex(V))
    assert sol.is_min_norm(V, frank_wolfe_min_norm(V, 2000, variant="pairwise"))
    assert not sol.is_min_norm(V, np.full(5, 0.2))          # FedAvg's weights are not the min-norm weights


def test_vanilla_frank_wolfe_fails_the_kkt_test_on_e3():
    V = E3_LIKE[0]
    assert not sol.is_min_norm(V, frank_wolfe_min_norm(V, 2000, variant="vanilla"))


@pytest.mark.parametrize("k", range(4))
def test_frank_wolfe_gap_bounds_the_suboptimality(k):
    V = E3_LIKE[k]
    phi = lambda lam: float(np.sum((lam @ V) ** 2))  # noqa: E731
    phi_star = phi(min_norm_simplex(V))
    rng = np.random.default_rng(10 + k)
    lams = [rng.dirichlet(np.ones(5)) for _ in range(50)]
    lams += [frank_wolfe_min_norm(V, t, variant="vanilla") for t in (1, 5, 50, 500)]
    for lam in lams:
        gap = sol.frank_wolfe_gap(V, lam)
        assert phi(lam) - phi_star <= gap + 1e-14
        assert gap >= -1e-14
    assert abs(sol.frank_wolfe_gap(V, min_norm_simplex(V))) < 1e-12


def test_mutation_flipped_slack_sign_is_detected():
    V = E3_LIKE[0]
    lam = min_norm_simplex(V)
    d = lam @ V
    mutated = d @ d - V @ d                                   # sign flipped
    assert mutated.min() < -1e-3                              # the mutated test would reject the optimum
    assert sol.is_min_norm(V, lam)

# ------------------------------------------------------------------------------- so-ex-exact-step


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha, K", [(1.0, 1), (0.5, 2), (0.3, 4)])
def test_exact_step_is_the_library_line_search(seed, alpha, K):
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=seed)
    x = np.random.default_rng(seed + 50).standard_normal(5)
    ln = LocalNewton(K, alpha, 0.0, line_search="exact")
    st = ln.step(ln.init(torch.as_tensor(x), prob), Oracle(prob), SimulatedComm(6), None)
    X = prob.stack(torch.as_tensor(x))
    d = (prob.weights @ (ln.local_newton(X, Oracle(prob)) - X)).numpy()
    Abar, cbar = prob.A_bar.numpy(), (prob.weights @ prob.c).numpy()
    g = sol.exact_line_search_step(Abar, cbar, x, d)
    assert abs(g - float(st["gamma"])) < 1e-12 * max(1.0, g)
    # and SciPy's 1-D minimisation of the library's global loss along d
    res = minimize_scalar(lambda t: float(prob.global_loss(torch.as_tensor(x + t * d))), bounds=(0, 10),
                          method="bounded", options={"xatol": 1e-10})
    assert abs(g - res.x) < 1e-6


def test_mutation_exact_step_with_identity_curvature_is_detected():
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=0)
    x = np.random.default_rng(50).standard_normal(5)
    ln = LocalNewton(1, 1.0, 0.0, line_search="exact")
    st = ln.step(ln.init(torch.as_tensor(x), prob), Oracle(prob), SimulatedComm(6), None)
    d = prob.weights.numpy() @ prob.b.numpy() - x            # alpha = K = 1: d = b_bar - x
    Abar, cbar = prob.A_bar.numpy(), (prob.weights @ prob.c).numpy()
    mutated = max(0.0, -((Abar @ x - cbar) @ d) / (d @ d))    # d^T d instead of d^T A_bar d
    assert abs(mutated - float(st["gamma"])) > 1e-3
    assert abs(sol.exact_line_search_step(Abar, cbar, x, d) - float(st["gamma"])) < 1e-12

# ------------------------------------------------------------------------------- so-ex-line-limit


@pytest.mark.parametrize("seed", range(5))
def test_line_minimiser_and_excess_against_library_local_newton(seed):
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=seed)
    A, b, q = quad_arrays(prob)
    xs, _ = run_rounds(LocalNewton(1, 1.0, 0.0, line_search="exact"), prob, 5, np.zeros(5))
    t = sol.line_minimiser_t(A, b, q)
    if t > 0:
        assert np.linalg.norm(xs[-1] - t * (q @ b)) < 1e-12
        assert abs(sol.line_excess(A, b, q) - prob.suboptimality(torch.as_tensor(xs[-1]))) < 1e-12
    # the excess is f at the line minimiser found by SciPy on the library's loss
    res = minimize_scalar(lambda s: float(prob.global_loss(torch.as_tensor(s * (q @ b)))), bracket=(-1, 2),
                          options={"xtol": 1e-12})
    assert abs(sol.line_excess(A, b, q) - (res.fun - prob.f_star)) < 1e-10


@pytest.mark.parametrize("seed", range(6))
def test_line_limit_from_any_start(seed):
    prob = random_quadratics(5, 4, spectrum=(0.2, 2.0), seed=seed)
    A, b, q = quad_arrays(prob)
    x0 = 2.0 * np.random.default_rng(seed + 20).standard_normal(4)
    for alpha, K in ((1.0, 1), (0.5, 3)):
        xs, _ = run_rounds(LocalNewton(K, alpha, 0.0, line_search="exact"), prob, 4, x0)
        assert np.linalg.norm(xs[-1] - sol.line_limit(A, b, x0, q)) < 1e-11
        assert np.all(np.diff([prob.suboptimality(torch.as_tensor(x)) for x in xs]) <= 1e-12)


def test_mutation_line_minimiser_without_curvature_is_detected():
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=0)
    A, b, q = quad_arrays(prob)
    xs, _ = run_rounds(LocalNewton(1, 1.0, 0.0, line_search="exact"), prob, 3, np.zeros(5))
    bb = q @ b
    cbar = np.einsum("i,ijk,ik->j", q, A, b)
    mutated = bb @ cbar / (bb @ bb)                          # b^T b instead of b^T A_bar b
    assert np.linalg.norm(xs[-1] - mutated * bb) > 1e-3
    assert np.linalg.norm(xs[-1] - sol.line_minimiser_t(A, b, q) * bb) < 1e-12

# --------------------------------------------------------------------------- so-ex-no-line-search


@pytest.mark.parametrize("alpha, K", [(0.5, 1), (0.5, 3), (0.8, 2), (1.5, 3), (1.2, 2)])
def test_no_line_search_rate_and_limit_against_library(alpha, K):
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=1)
    A, b, q = quad_arrays(prob)
    bbar = sol.no_line_search_limit(b, q)
    xs, _ = run_rounds(LocalNewton(K, alpha, 0.0, line_search=None), prob, 5, np.ones(5))
    err = np.linalg.norm(xs - bbar, axis=1)
    assert np.allclose(err[1:] / err[:-1], sol.no_line_search_rate(alpha, K), rtol=1e-8)


def test_no_line_search_one_round_for_alpha_one_and_excess():
    for seed in range(4):
        prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=seed)
        A, b, q = quad_arrays(prob)
        xs, _ = run_rounds(LocalNewton(2, 1.0, 0.0, line_search=None), prob, 3, np.zeros(5))
        bbar = sol.no_line_search_limit(b, q)
        assert np.linalg.norm(xs[1] - bbar) < 1e-12 and np.linalg.norm(xs[-1] - bbar) < 1e-12
        assert abs(sol.no_line_search_excess(A, b, q) - prob.suboptimality(torch.as_tensor(xs[-1]))) < 1e-12
        assert sol.no_line_search_excess(A, b, q) > 1e-3         # biased: b_bar is not x*


def test_mutation_rate_without_power_k_is_detected():
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=1)
    _, b, q = quad_arrays(prob)
    xs, _ = run_rounds(LocalNewton(3, 0.5, 0.0, line_search=None), prob, 4, np.ones(5))
    err = np.linalg.norm(xs - sol.no_line_search_limit(b, q), axis=1)
    measured = err[1:] / err[:-1]
    assert not np.allclose(measured, abs(1 - 0.5), rtol=1e-3)    # |1 - alpha| (K forgotten)
    assert np.allclose(measured, sol.no_line_search_rate(0.5, 3), rtol=1e-8)


def test_mutation_excess_with_identity_metric_is_detected():
    prob = random_quadratics(6, 5, spectrum=(0.2, 2.0), seed=2)
    A, b, q = quad_arrays(prob)
    e = sol.no_line_search_limit(b, q) - prob.x_star.numpy()
    lib = prob.suboptimality(torch.as_tensor(sol.no_line_search_limit(b, q)))
    assert abs(0.5 * e @ e - lib) > 1e-3                          # 1/2 ||e||^2 instead of 1/2 ||e||_A^2
    assert abs(sol.no_line_search_excess(A, b, q) - lib) < 1e-12
