"""Tests of the exercise answers of the chapter "Training a core subnetwork".

The answers live in ``book/solutions/core_subnetwork.py`` (closed forms in plain NumPy). Each is checked
against an independent computation with hetlab: the library's alternating scheme, probed into its exact
cycle map (``hetlab.exact.affine_map``) or iterated to its limit, its measured contraction, and the core
trained alone by the library's core steps. Mutation tests show that a wrong formula (a flipped sign, a
missing square, the full model's split instead of the core alone) is detected by the same comparisons.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import core_subnetwork as sol  # noqa: E402

import proofs_check  # noqa: E402
from hetlab import exact  # noqa: E402
from hetlab.core_subnetwork import (AlternatingCoreTraining, CoreQuadratic, block_core,  # noqa: E402
                                    linear_model_problem, unvec, vec)

CASES_2X2 = [(2.0, 1.0, 1.0, 1.0, -1.0), (3.0, -0.7, 1.5, 0.4, 2.0), (1.0, 0.9, 2.0, -1.0, 0.5)]


def prob_2x2(a, c, e, b1, b2):
    return CoreQuadratic(np.array([[a, c], [c, e]]), np.array([b1, b2]), block_core(2, 1))


def library_limit(prob, eta, p, q):
    """Fixed point of the probed cycle map of the library's implementation (not the closed-form product)."""
    alg = AlternatingCoreTraining(eta, p, q)
    M, c = exact.affine_map(lambda x: alg.cycle(prob, x), prob.d)
    return exact.affine_fixed_point(M, c), M


def small_step_limit(prob, p, q, eta=1e-3):
    """Richardson extrapolation 2 z(eta/2) - z(eta) of the library's limits: the eta -> 0 limit up to O(eta^2)."""
    return 2 * library_limit(prob, eta / 2, p, q)[0] - library_limit(prob, eta, p, q)[0]

# --------------------------------------------------------------------------------- cs-ex-joint


@pytest.mark.parametrize("case", CASES_2X2)
@pytest.mark.parametrize("p, q", [(1, 1), (1, 3), (2, 1)])
def test_joint_minimizer_is_the_small_step_limit_of_the_library_scheme(case, p, q):
    prob = prob_2x2(*case)
    z0 = small_step_limit(prob, p, q)
    lam = q / (p + q)
    u, v = sol.joint_minimizer_2x2(*case, lam)
    assert abs(z0[0] - u) < 1e-5 and abs(z0[1] - v) < 1e-5
    fcs = prob.f_core_star
    assert abs((prob.f_split(z0) - fcs) - sol.core_excess_2x2(*case, lam)) < 1e-5
    assert abs((prob.f(z0) - prob.f_star) - sol.full_excess_2x2(*case, lam)) < 1e-5


def test_chapter_example_values_and_monotonicity():
    case = CASES_2X2[0]
    assert sol.joint_minimizer_2x2(*case, 0.5) == (1.0, -2.0)
    lams = np.linspace(0.05, 1.0, 20)
    core = [sol.core_excess_2x2(*case, l) for l in lams]
    full = [sol.full_excess_2x2(*case, l) for l in lams]
    assert np.all(np.diff(core) > 0) and np.all(np.diff(full) < 0)
    assert abs(full[-1]) < 1e-15                                   # lam = 1: the full minimiser


def test_mutation_sign_flip_in_joint_minimizer_is_detected():
    case = CASES_2X2[1]
    prob = prob_2x2(*case)
    z0 = small_step_limit(prob, 1, 1)
    a, c, e, b1, b2 = case
    wrong_u = (b1 + 0.5 * c * b2 / e) / (a - 0.5 * c * c / e)     # sign of the coupling term flipped
    assert abs(z0[0] - wrong_u) > 1e-2

# ---------------------------------------------------------------------------------- cs-ex-rate


@pytest.mark.parametrize("case", CASES_2X2)
@pytest.mark.parametrize("frac", [0.2, 0.6, 1.0])
def test_cycle_rate_2x2_against_the_library(case, frac):
    prob = prob_2x2(*case)
    eta = frac / prob.L
    z_bar, M = library_limit(prob, eta, 1, 1)
    rho = sol.cycle_rate_2x2(*case[:3], eta)
    assert abs(exact.spectral_radius(M) - rho) < 1e-12
    # measured: the implementation started along the slowest mode contracts by rho per cycle
    ev, W = np.linalg.eig(M)
    v = np.real(W[:, np.argmax(np.abs(ev))])
    traj = AlternatingCoreTraining(eta, 1, 1).run(prob, z_bar + 1e-2 * v / np.linalg.norm(v), 60)
    errs = np.linalg.norm(traj - z_bar, axis=1)
    assert abs(exact.empirical_rate(errs, 1e-7, 1e-1) - rho) < 1e-9
    assert abs(sol.gd_rate_2x2(*case[:3], eta) - exact.spectral_radius(np.eye(2) - eta * prob.H)) < 1e-14


def test_chapter_rate_comparison():
    case = CASES_2X2[0]
    rho, rho_gd = sol.cycle_rate_2x2(*case[:3], 0.25), sol.gd_rate_2x2(*case[:3], 0.25)
    assert rho < rho_gd                        # the bound rho(M) <= rho(I - eta H)^1
    assert math.sqrt(rho) < rho_gd             # on this instance also faster per gradient step


def test_mutation_unsquared_trace_is_detected():
    a, c, e = CASES_2X2[1][:3]
    prob = prob_2x2(*CASES_2X2[1])
    eta = 0.5 / prob.L
    s = 1 - eta * a
    tau_wrong = s + 1 - eta * e                 # (1 - eta a) not squared
    delta = s * (s * (1 - eta * e) - eta * eta * c * c)
    wrong = 0.5 * (tau_wrong + math.sqrt(tau_wrong ** 2 - 4 * delta))
    assert abs(exact.spectral_radius(library_limit(prob, eta, 1, 1)[1]) - wrong) > 1e-3

# --------------------------------------------------------------------------------- cs-ex-split


@pytest.mark.parametrize("seed, p, q", [(0, 2, 1), (1, 1, 1), (2, 3, 2)])
def test_split_excesses_against_the_iterated_library_scheme(seed, p, q):
    G2 = proofs_check.get("G2")
    prob = G2.block_instance(seed)
    eta = 0.5 / prob.L
    alg = AlternatingCoreTraining(eta, p, q)
    x = alg.run(prob, np.zeros(prob.d), 1500)[-1]                  # end of a full phase
    x_core = x.copy()
    for _ in range(p):                                             # one more core phase
        x_core = alg.core_step(prob, x_core)
    after_full, after_core = sol.split_excesses(prob.H, prob.b, G2.K, eta, p, q)
    fcs = prob.f_core_star
    assert abs(prob.f_split(x) - fcs - after_full) < 1e-10
    assert abs(prob.f_split(x_core) - fcs - after_core) < 1e-10
    assert after_core < after_full                                 # splitting after the core phase is better


def test_mutation_split_at_the_wrong_phase_is_detected():
    G2 = proofs_check.get("G2")
    prob = G2.block_instance(0)
    eta = 0.5 / prob.L
    after_full, after_core = sol.split_excesses(prob.H, prob.b, G2.K, eta, 2, 1)
    x = AlternatingCoreTraining(eta, 2, 1).run(prob, np.zeros(prob.d), 1500)[-1]
    assert abs(prob.f_split(x) - prob.f_core_star - after_core) > 1e-4

# ------------------------------------------------------------------------------- cs-ex-lowrank


def _linear_data(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, 5))
    Y = X @ rng.standard_normal((5, 3)) + 0.2 * rng.standard_normal((50, 3))
    U0 = np.linalg.qr(rng.standard_normal((5, 2)))[0]
    V0 = np.linalg.qr(rng.standard_normal((3, 2)))[0]
    return X, Y, U0, V0


@pytest.mark.parametrize("seed, reg", [(0, 0.0), (1, 0.1), (2, 0.5)])
def test_low_rank_core_alone_against_library_core_training(seed, reg):
    X, Y, U0, V0 = _linear_data(seed)
    prob = linear_model_problem(X, Y, U0, V0, reg=reg)
    # the core trained alone: the library's scheme with core steps only (q = 0), from W = 0
    x = AlternatingCoreTraining(0.9 / prob.L, 1, 0).run(prob, np.zeros(prob.d), 3000)[-1]
    W = unvec(x, (5, 3))
    C = sol.low_rank_core_alone(X, Y, U0, V0, reg)
    assert np.abs(W - U0 @ C @ V0.T).max() < 1e-10
    # splitting the full model gives a different, worse core
    C_split = sol.split_full_model(X, Y, U0, V0, reg)
    W_full = AlternatingCoreTraining(0.9 / prob.L, 0, 1).run(prob, np.zeros(prob.d), 3000)[-1]
    assert np.abs(U0.T @ unvec(W_full, (5, 3)) @ V0 - C_split).max() < 1e-10
    assert prob.f_core(vec(C)) < prob.f_core(vec(C_split))


def test_mutation_projected_full_solution_is_not_the_core_alone():
    X, Y, U0, V0 = _linear_data(0)
    prob = linear_model_problem(X, Y, U0, V0)
    x = AlternatingCoreTraining(0.9 / prob.L, 1, 0).run(prob, np.zeros(prob.d), 3000)[-1]
    C_core = U0.T @ unvec(x, (5, 3)) @ V0
    assert np.abs(C_core - sol.split_full_model(X, Y, U0, V0)).max() > 1e-3
