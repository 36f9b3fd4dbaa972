"""Tests of the exercise answers of the chapter "Heterogeneity and local methods".

The answers live in ``book/solutions/local_methods.py`` (closed forms in plain NumPy). Each test
checks an answer against an *independent* computation with hetlab: running the algorithm until it
stops moving, reading fixed points and rates off the implementation by probing its affine round
map (``hetlab.exact.method_affine_map``), hetlab's own closed forms, or brute-force search. A
wrong formula in the solutions module makes the corresponding test fail. Seeds are fixed and
appear in the test ids.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import local_methods as sol  # noqa: E402

from hetlab import closed_forms as cf  # noqa: E402
from hetlab.algorithms import FedAvg, FedProx, Scaffold, ServerMomentum, ServerSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import affine_fixed_point, method_affine_map, spectral_radius  # noqa: E402
from hetlab.measures import weighted_gradient_diversity  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem, random_quadratics  # noqa: E402

DT = torch.float64


def _problem_1d(a, b, weights=None) -> QuadraticProblem:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return QuadraticProblem.from_minimizers(a.reshape(-1, 1, 1), b.reshape(-1, 1), weights)


def _iterate_until_still(method, problem, max_rounds=20000, tol=1e-15) -> np.ndarray:
    """Run exact rounds of ``method`` from 0 until a round moves the model by less than ``tol``."""
    oracle, comm = Oracle(problem), SimulatedComm(problem.n)
    state = method.init(torch.zeros(problem.d, dtype=DT), problem)
    for _ in range(max_rounds):
        new = method.step(state, oracle, comm, None)
        moved = float((new["x"] - state["x"]).norm())
        state = new
        if moved < tol:
            return state["x"].numpy()
    raise AssertionError(f"{method!r} did not settle within {max_rounds} rounds")


# ------------------------------------------------------------------------- exercise (a)

CASES_1D = [  # (a, b, eta, K)
    ([1.0, 3.0], [-1.0, 2.0], 0.1, 5),
    ([0.5, 2.0], [1.0, -1.5], 0.2, 10),
    ([1.5, 0.7], [0.3, 4.0], 0.3, 3),
    ([2.0, 1.0], [-2.0, -0.5], 0.05, 40),
]


@pytest.mark.parametrize("a, b, eta, K", CASES_1D)
def test_fedavg_fixed_point_1d_matches_running_fedavg(a, b, eta, K):
    prob = _problem_1d(a, b)
    x_run = _iterate_until_still(FedAvg(eta, K), prob)[0]
    x_ans = sol.fedavg_fixed_point_1d(a, b, eta, K)
    assert abs(x_ans - x_run) <= 1e-10
    bias = sol.fedavg_bias_two_clients(a, b, eta, K)
    assert abs(bias - (x_run - float(prob.x_star[0]))) <= 1e-10
    assert abs(bias) > 1e-3  # these cases are genuinely biased


def test_fedavg_fixed_point_1d_many_clients_and_weights():
    rng = np.random.default_rng(11)
    a, b = rng.uniform(0.5, 2.0, 5), rng.standard_normal(5)
    q = rng.uniform(0.1, 1.0, 5)
    prob = _problem_1d(a, b, weights=q)
    for eta, K in [(0.1, 4), (0.3, 7)]:
        x_ans = sol.fedavg_fixed_point_1d(a, b, eta, K, q=q)
        assert abs(x_ans - _iterate_until_still(FedAvg(eta, K), prob)[0]) <= 1e-10
        assert abs(x_ans - cf.fedavg_fixed_point(prob, eta, K)[0]) <= 1e-12


@pytest.mark.parametrize("a, b, eta, K", [
    ([1.0, 3.0], [-1.0, 2.0], 0.1, 1),      # one local step
    ([2.0, 2.0], [-1.0, 2.0], 0.1, 10),     # equal curvatures
    ([1.0, 3.0], [0.7, 0.7], 0.1, 10),      # equal minimisers
])
def test_fedavg_bias_vanishes_in_the_special_cases(a, b, eta, K):
    prob = _problem_1d(a, b)
    x_run = _iterate_until_still(FedAvg(eta, K), prob)[0]
    assert abs(x_run - float(prob.x_star[0])) <= 1e-12
    assert abs(sol.fedavg_bias_two_clients(a, b, eta, K)) <= 1e-14


@pytest.mark.parametrize("a, b, eta", [([1.0, 3.0], [-1.0, 2.0], 0.1), ([0.5, 2.0], [1.0, -1.5], 0.4)])
def test_fedavg_bias_limit_large_K(a, b, eta):
    prob = _problem_1d(a, b)
    K = 3000  # (1 - eta a_i)^K is below 1e-60 here
    bias_cf = cf.fedavg_fixed_point(prob, eta, K)[0] - float(prob.x_star[0])
    assert abs(sol.fedavg_bias_limit_two_clients(a, b) - bias_cf) <= 1e-12
    # and the limit is the mean of the minimisers minus x_star
    assert abs(sol.fedavg_bias_limit_two_clients(a, b) - (np.mean(b) - float(prob.x_star[0]))) <= 1e-12


# ------------------------------------------------------------------------- exercise (b)

@pytest.mark.parametrize("server_lr, beta", [(1.0, 0.0), (0.5, 0.0), (1.5, 0.0), (1.0, 0.5), (0.5, 0.9),
                                              (0.8, 0.3)])
@pytest.mark.parametrize("seed", [0, 3])
def test_server_optimizer_keeps_fixed_point_and_sets_rate(server_lr, beta, seed):
    prob = random_quadratics(6, 4, seed=seed)
    eta, K = 0.1, 8
    x_fix, m_fix, rho = sol.fedavg_server_fixed_point(prob.A.numpy(), prob.b.numpy(), eta, K, server_lr, beta)
    server = ServerSGD(server_lr) if beta == 0 else ServerMomentum(server_lr, beta)
    M, c, unflatten = method_affine_map(FedAvg(eta, K, server_opt=server), prob)
    probed = unflatten(affine_fixed_point(M, c))
    assert np.linalg.norm(x_fix - probed["x"].numpy()) <= 1e-10
    assert np.linalg.norm(x_fix - cf.fedavg_fixed_point(prob, eta, K)) <= 1e-10
    assert np.linalg.norm(m_fix) <= 1e-10
    if beta:
        assert np.linalg.norm(probed["server_m"].numpy()) <= 1e-10
    assert abs(rho - spectral_radius(M)) <= 1e-10


def test_server_momentum_rate_matches_a_run():
    """The rate of the joint (x, m) map is the rate a real FedAvgM run shows."""
    prob = random_quadratics(6, 4, seed=1)
    eta, K, lr, beta = 0.1, 8, 1.0, 0.5
    x_fix, _, rho = sol.fedavg_server_fixed_point(prob.A.numpy(), prob.b.numpy(), eta, K, lr, beta)
    method = FedAvg(eta, K, server_opt=ServerMomentum(lr, beta))
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    state = method.init(torch.zeros(prob.d, dtype=DT), prob)
    errs = []
    for _ in range(60):
        state = method.step(state, oracle, comm, None)
        errs.append(np.linalg.norm(state["x"].numpy() - x_fix))
    errs = np.array(errs)
    # geometric mean of the decay over 40 rounds (complex modes oscillate round to round)
    rate = (errs[55] / errs[15]) ** (1 / 40)
    assert abs(rate - rho) <= 0.03


# ------------------------------------------------------------------------- exercise (c)

@pytest.mark.parametrize("a, b", [([1.0, 3.0], [-1.0, 2.0]), ([0.5, 2.0], [1.0, -1.5]), ([1.5, 0.7], [0.3, 4.0])])
@pytest.mark.parametrize("mu", [0.3, 1.0, 10.0])
def test_fedprox_fixed_point_1d_matches_running_fedprox(a, b, mu):
    prob = _problem_1d(a, b)
    x_run = _iterate_until_still(FedProx(mu), prob)[0]
    assert abs(sol.fedprox_fixed_point_1d(a, b, mu) - x_run) <= 1e-10
    assert abs(sol.fedprox_bias_two_clients(a, b, mu) - (x_run - float(prob.x_star[0]))) <= 1e-10


@pytest.mark.parametrize("a, b", [([1.0, 3.0], [-1.0, 2.0]), ([0.5, 2.0], [1.0, -1.5])])
def test_fedprox_leading_term(a, b):
    prob = _problem_1d(a, b)
    mus = np.array([1e2, 1e3, 1e4, 1e5])
    exact = np.array([cf.fedprox_fixed_point(prob, m)[0] - float(prob.x_star[0]) for m in mus])
    lead = np.array([sol.fedprox_bias_leading_two_clients(a, b, m) for m in mus])
    rel = np.abs(lead - exact) / np.abs(exact)
    # the leading term is right iff its relative error vanishes like 1/mu
    a1, a2 = a
    assert np.all(rel <= 2.5 * a1 * a2 / ((a1 + a2) * mus))
    assert np.all(rel[1:] < rel[:-1] / 5)
    # and it agrees with hetlab's first-order surrogate (coefficient 1/mu)
    for m, l_ in zip(mus, lead):
        x_s = cf.local_surrogate_minimizer(prob, 1.0 / m)[0] - float(prob.x_star[0])
        assert abs(l_ - x_s) <= 5 * abs(l_) * a2 / m


def test_fedprox_small_mu_limit_is_fedavg_long_run_limit():
    a, b = [1.0, 3.0], [-1.0, 2.0]
    assert abs(sol.fedprox_bias_two_clients(a, b, 1e-12) - sol.fedavg_bias_limit_two_clients(a, b)) <= 1e-9


# ------------------------------------------------------------------------- exercise (d)

def _common_minimiser_problem(n, d, seed, weights=None):
    rng = np.random.default_rng(seed + 1000)
    return random_quadratics(n, d, spectrum=(0.2, 2.0), minimizer_heterogeneity=0.0,
                             common_minimizer=rng.standard_normal(d), weights=weights, seed=seed)


def _sampled_diversity(A, q, E):
    """Lambda(b* + e) for the rows e of E (vectorised, chunked)."""
    out = []
    for chunk in np.array_split(E, max(1, len(E) // 50_000)):
        G = np.einsum("nij,Nj->Nni", A, chunk)                  # client gradients A_i e
        num = np.einsum("i,Ni->N", q, (G * G).sum(-1))          # sum_i q_i |A_i e|^2
        gbar = np.einsum("i,Nij->Nj", q, G)
        out.append(num / (gbar * gbar).sum(-1))
    return np.concatenate(out)


@pytest.mark.parametrize("n, d, seed, weighted", [(6, 5, 0, False), (4, 3, 1, False), (5, 4, 2, True),
                                                  (8, 5, 3, True)])
def test_diversity_bound_by_brute_force(n, d, seed, weighted):
    q = np.random.default_rng(seed + 7).uniform(0.2, 1.0, n) if weighted else None
    prob = _common_minimiser_problem(n, d, seed, weights=q)
    A, qq = prob.A.numpy(), prob.weights.numpy()
    bound = sol.diversity_bound(A, q=qq)
    E = np.random.default_rng(seed).standard_normal((400_000, d))
    lam = _sampled_diversity(A, qq, E)
    assert lam.max() <= bound * (1 + 1e-12)
    assert lam.max() >= 0.99 * bound
    assert bound <= prob.L ** 2 / prob.mu ** 2 + 1e-12 and lam.min() >= 1 - 1e-12
    # the vectorised sampler agrees with hetlab.measures on a few hundred points
    xs = prob.x_star
    for e, v in zip(E[:300], lam[:300]):
        h = weighted_gradient_diversity(prob.local_grads(xs + torch.as_tensor(e)), prob.weights)
        assert abs(h - v) <= 1e-10 * v
    # the maximiser attains the bound (any scale), measured with hetlab
    e_max = torch.as_tensor(sol.diversity_maximiser(A, q=qq))
    for scale in (1e-3, 1.0, 50.0):
        h = weighted_gradient_diversity(prob.local_grads(xs + scale * e_max), prob.weights)
        assert abs(h - bound) <= 1e-9 * bound


def test_diversity_bound_is_one_for_identical_hessians():
    prob = random_quadratics(5, 4, hessian_heterogeneity=0.0, minimizer_heterogeneity=0.0, seed=4)
    assert abs(sol.diversity_bound(prob.A.numpy()) - 1.0) <= 1e-12


# ------------------------------------------------------------------------- exercise (e)

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eta, K", [(0.1, 1), (0.1, 7), (0.05, 20)])
def test_scaffold_control_update_matches_hetlab(seed, eta, K):
    prob = random_quadratics(5, 3, seed=seed)
    rng = np.random.default_rng(seed + 50)
    method = Scaffold(eta, K, option="II")
    state = method.init(torch.zeros(prob.d, dtype=DT), prob)
    state["x"] = torch.as_tensor(rng.standard_normal(prob.d))
    state["c_i"] = torch.as_tensor(rng.standard_normal((prob.n, prob.d)))
    state["c"] = prob.weights @ state["c_i"]
    new = method.step(state, Oracle(prob), SimulatedComm(prob.n), None)
    A, b = prob.A.numpy(), prob.b.numpy()
    x, c = state["x"].numpy(), state["c"].numpy()
    for i in range(prob.n):
        ci = state["c_i"][i].numpy()
        want = new["c_i"][i].numpy()
        closed = sol.scaffold_control_update(A[i], b[i], x, ci, c, eta, K)
        path = sol.scaffold_path_average_gradient(A[i], b[i], x, ci, c, eta, K)
        scale = 1.0 + np.abs(want).max()
        assert np.abs(closed - want).max() <= 1e-12 * scale
        assert np.abs(path - want).max() <= 1e-12 * scale
        if K == 1:  # option II with one local step is option I: the gradient at x
            assert np.abs(want - A[i] @ (x - b[i])).max() <= 1e-12 * scale
