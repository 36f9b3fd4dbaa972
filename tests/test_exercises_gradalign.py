"""Tests of the exercise answers of the chapter "Local steps, large batches and GradAlign".

The answers live in ``book/solutions/gradalign.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation with hetlab: one round of the library's GradAlign, its
iterates run to convergence, the exact expectation over orders of the library's local reshuffled SGD and
FedGA with residual-slope fits (M3), the matrix closed forms, and the measures module. A wrong formula in
the solutions module makes the corresponding test fail. Seeds are fixed and appear in the test ids.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import gradalign as sol  # noqa: E402

from hetlab import closed_forms_alignment as ca  # noqa: E402
from hetlab import measures as hm  # noqa: E402
from hetlab.algorithms import FedGA, GradAlign, LocalReshuffledSGD  # noqa: E402
from hetlab.algorithms.client_minibatch import random_client_minibatch_quadratics  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import fit_slope, flow_residuals  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem, random_logistic, random_quadratics  # noqa: E402

DT = torch.float64
ETAS = np.array([0.02, 0.01, 0.005, 0.0025, 0.00125])

CASES = [([1.0, 3.0], [-1.0, 2.0]), ([0.5, 2.0], [1.0, -1.5]), ([2.0, 0.7], [0.3, 4.0]), ([1.5, 1.5], [-2.0, 1.0])]


def _problem_1d(a, b) -> QuadraticProblem:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return QuadraticProblem.from_minimizers(a.reshape(2, 1, 1), b.reshape(2, 1))


def _one_round(method, problem, x):
    state = method.init(torch.as_tensor(x, dtype=DT), problem)
    return method.step(state, Oracle(problem), SimulatedComm(problem.n), None)["x"].numpy()

# ---------------------------------------------------------------------------- ga-ex-two-clients


@pytest.mark.parametrize("a, b", CASES)
@pytest.mark.parametrize("x, gamma, beta", [(0.5, 0.1, 0.3), (-1.0, 0.05, 1.0), (2.0, 0.2, 0.0)])
def test_gradalign_step_two_clients_matches_the_library(a, b, x, gamma, beta):
    p = _problem_1d(a, b)
    lib = _one_round(GradAlign(gamma, beta), p, [x])[0]
    assert abs(sol.gradalign_step_two_clients(a, b, x, gamma, beta) - lib) < 1e-14
    lib_f = _one_round(GradAlign(gamma, beta, displacement="flipped"), p, [x])[0]
    assert abs(sol.gradalign_step_two_clients(a, b, x, gamma, -beta) - lib_f) < 1e-14


@pytest.mark.parametrize("a, b", CASES)
def test_vb_two_clients_matches_the_measures(a, b):
    p = _problem_1d(a, b)
    for x in (-1.0, 0.0, 0.7, 3.0):
        G = p.local_grads(torch.tensor([x], dtype=DT))
        assert sol.vb_two_clients(a, b, x) == pytest.approx(hm.gradient_variance(G), rel=1e-13, abs=1e-15)


def test_equal_curvatures_make_gradalign_gd():
    a, b = [1.5, 1.5], [-2.0, 1.0]
    p = _problem_1d(a, b)
    x = 0.3
    gd = x - 0.1 * float(p.global_grad(torch.tensor([x], dtype=DT))[0])
    assert abs(sol.gradalign_step_two_clients(a, b, x, 0.1, 2.0) - gd) < 1e-15

# ---------------------------------------------------------------------------------- ga-ex-beta


@pytest.fixture(scope="module")
def mb():
    return random_client_minibatch_quadratics(3, 3, 3, spectrum=(0.5, 1.6), seed=0)


def _slope(round_map, loss, x0, steps):
    return fit_slope(ETAS, flow_residuals(round_map, loss, x0, ETAS, lambda e: steps * e)).slope


def test_beta_choices_by_slopes(mb):
    A, c, K = mb.A_batches.numpy(), mb.c_batches.numpy(), mb.num_batches
    x0 = np.array([1.0, -2.0, 0.5])
    no_vb = lambda e: ca.modified_loss(A, c, e / 4, 0.0, e / 4)  # noqa: E731
    sgd = lambda e: ca.sgd_modified_loss(A, c, e)  # noqa: E731

    def fedga(beta_fn):
        return lambda e, x: _one_round(FedGA(e, K, beta_fn(e, K), minibatch_order="exact"), mb, x)

    assert _slope(fedga(sol.beta_cancelling_vb), no_vb, x0, K) >= 2.8
    assert _slope(fedga(sol.beta_cancelling_vb), sgd, x0, K) <= 2.2
    assert _slope(fedga(sol.beta_matching_sgd), sgd, x0, K) >= 2.8
    assert _slope(fedga(sol.beta_matching_sgd), no_vb, x0, K) <= 2.2


@pytest.mark.parametrize("K", [1, 2, 3, 7])
def test_fedga_vb_coefficient_against_the_matrix_closed_form(mb, K):
    """The V_b coefficient of the answer reproduces hetlab's FedGA modified loss matrix by matrix."""
    A, c = mb.A_batches.numpy(), mb.c_batches.numpy()
    for eta, beta in ((0.01, 0.0), (0.02, 0.05), (0.005, sol.beta_matching_sgd(0.005, K))):
        H1, h1 = ca.fedga_modified_loss(A, c, eta, K, beta)
        H2, h2 = ca.modified_loss(A, c, eta / 4, sol.fedga_vb_coefficient(eta, K, beta), eta / 4)
        np.testing.assert_allclose(H1, H2, atol=1e-15)
        np.testing.assert_allclose(h1, h2, atol=1e-15)
    assert sol.fedga_vb_coefficient(0.01, K, sol.beta_cancelling_vb(0.01, K)) == pytest.approx(0.0, abs=1e-18)
    assert sol.fedga_vb_coefficient(0.01, K, sol.beta_matching_sgd(0.01, K)) == pytest.approx(0.01 / 4, rel=1e-14)

# -------------------------------------------------------------------------------- ga-ex-epochs


@pytest.mark.parametrize("K, E", [(2, 2), (3, 2), (2, 3)])
def test_vb_coefficient_for_several_passes(K, E):
    p = random_client_minibatch_quadratics(3, K, 3, spectrum=(0.5, 1.0), seed=K + 10 * E)
    A, c = p.A_batches.numpy(), p.c_batches.numpy()
    tau = E * K
    x0 = np.array([1.5, -1.0, 0.5])
    rm = lambda e, x: _one_round(LocalReshuffledSGD(e, epochs=E, order="exact"), p, x)  # noqa: E731

    def loss(coef):
        return lambda e: ca.modified_loss(A, c, e / 4, coef(e), e / 4)

    assert _slope(rm, loss(lambda e: sol.vb_coefficient_local_sgd(e, tau)), x0, tau) >= 2.8
    assert _slope(rm, loss(lambda e: sol.vb_coefficient_local_sgd(e, K)), x0, tau) <= 2.2    # one pass only
    assert _slope(rm, loss(lambda e: -sol.vb_coefficient_local_sgd(e, tau)), x0, tau) <= 2.2  # wrong sign


def test_vb_coefficient_signs():
    assert sol.vb_coefficient_local_sgd(0.01, 1) == 0.0
    assert all(sol.vb_coefficient_local_sgd(0.01, t) < 0 for t in range(2, 20))
    # one step per round is GD: the library round equals x - eta grad f, which has no V_b anywhere
    p = random_quadratics(4, 3, seed=0)
    x = np.array([0.3, 0.2, -1.0])
    from hetlab.algorithms import FedAvg
    np.testing.assert_allclose(_one_round(FedAvg(0.1, 1), p, x),
                               x - 0.1 * p.global_grad(torch.as_tensor(x)).numpy(), atol=1e-15)

# ----------------------------------------------------------------------------- ga-ex-minimiser


def _iterate(method, p, x0, rounds=3000):
    state = method.init(torch.as_tensor(x0, dtype=DT), p)
    comm, oracle = SimulatedComm(p.n), Oracle(p)
    for _ in range(rounds):
        state = method.step(state, oracle, comm, None)
    return state["x"].numpy()


@pytest.mark.parametrize("a, b", CASES[:3])
@pytest.mark.parametrize("s", [0.3, -0.3, 0.05, 1.0])
def test_modified_minimiser_is_the_gradalign_limit(a, b, s):
    p = _problem_1d(a, b)
    method = GradAlign(0.1, abs(s), displacement="paper" if s > 0 else "flipped")
    x_lim = _iterate(method, p, [0.0])[0]
    assert abs(sol.modified_minimiser_two_clients(a, b, s) - x_lim) < 1e-12
    vb_star = sol.vb_two_clients(a, b, float(p.x_star[0]))
    ratio = sol.vb_two_clients(a, b, x_lim) / vb_star
    assert ratio == pytest.approx(sol.vb_ratio_two_clients(a, b, s), rel=1e-10)
    assert (ratio < 1) == (s > 0)


def test_ratio_is_one_for_equal_curvatures_and_matrix_minimiser_agrees():
    a, b = [1.5, 1.5], [-2.0, 1.0]
    assert sol.vb_ratio_two_clients(a, b, 0.7) == 1.0
    a, b = [1.0, 3.0], [-1.0, 2.0]
    p = _problem_1d(a, b)
    H, h = ca.alignment_modified_loss(p.A.numpy(), p.c.numpy(), 0.4)
    assert abs(ca.minimizer(H, h)[0] - sol.modified_minimiser_two_clients(a, b, 0.4)) < 1e-14
    with pytest.raises(ValueError, match="not strongly convex"):
        sol.modified_minimiser_two_clients(a, b, -10.0)

# -------------------------------------------------------------------------------- ga-ex-cosine


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_inner_product_at_the_optimum(seed):
    p = random_logistic(10, 40, 5, heterogeneity=1.0, lam=1e-2, seed=seed)
    G = p.local_grads(p.x_star)
    got = hm.mean_pairwise_inner_product(G)
    assert got == pytest.approx(sol.mean_inner_product_at_stationary((G * G).sum(1).numpy()), rel=1e-9)
    assert got == pytest.approx(-p.zeta_star_sq / (p.n - 1), rel=1e-9)


@pytest.mark.parametrize("n", [2, 3, 6, 10])
def test_mean_cosine_with_equal_norms(n):
    # equal norms and zero sum: the vertices of a regular simplex, randomly rotated
    E = np.eye(n) - 1.0 / n
    Q, _ = np.linalg.qr(np.random.default_rng(n).standard_normal((n, n)))
    G = 2.5 * (E / np.linalg.norm(E, axis=1, keepdims=True)) @ Q
    assert np.abs(G.sum(0)).max() < 1e-12
    C = hm.pairwise_cosine(torch.as_tensor(G))
    off = ~torch.eye(n, dtype=torch.bool)
    assert float(C[off].mean()) == pytest.approx(sol.mean_cosine_equal_norms(n), rel=1e-12)
