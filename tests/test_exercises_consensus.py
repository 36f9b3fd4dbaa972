"""Tests of the exercise answers of the chapter "Consensus distance".

The answers live in ``book/solutions/consensus.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation with hetlab: running the library's D-SGD until its consensus
distance stops changing, probing its affine map and its noise matrix and solving the Lyapunov equation
(``hetlab.exact.stationary_moments``), or Monte Carlo. A wrong formula in the solutions module makes the
corresponding test fail. Seeds are fixed and appear in the test ids.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import consensus as sol  # noqa: E402

from hetlab.algorithms import DSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import method_affine_map, stationary_moments  # noqa: E402
from hetlab.measures import consensus_distance_sq  # noqa: E402
from hetlab.problems import GaussianNoiseOracle, Oracle, QuadraticProblem  # noqa: E402
from hetlab.topology import Topology, gossip_power, make_topology  # noqa: E402
from proofs_check.c2_dsgd_stationary_consensus_distance import probe_noise_matrix  # noqa: E402

DT = torch.float64


def _identical(B, curvature=1.0) -> QuadraticProblem:
    B = np.asarray(B, dtype=np.float64)
    n, d = B.shape
    return QuadraticProblem.from_minimizers(curvature * np.broadcast_to(np.eye(d), (n, d, d)).copy(), B)


def _settled_consensus(method, problem, max_iters=200_000, tol=1e-14) -> float:
    """Xi^2 of the library's D-SGD (exact gradients, from 0) once an iteration changes it by < tol relative
    (the remaining error is then below tol / (1 - rate), far below the 1e-9 tolerances used here)."""
    oracle, comm = Oracle(problem), SimulatedComm(problem.n)
    state = method.init(torch.zeros(problem.d, dtype=DT), problem)
    prev = -1.0
    for _ in range(max_iters):
        state = method.step(state, oracle, comm, None)
        xi = consensus_distance_sq(state["X"])
        if abs(xi - prev) <= tol * max(xi, 1e-300):
            return xi
        prev = xi
    raise AssertionError(f"{method!r} did not settle")


def _m2_consensus(method, problem, s2) -> float:
    """Exact stationary E Xi^2 of the library's method with N(0, s2 I) gradient noise (probed map and N, M2)."""
    M, c, _ = method_affine_map(method, problem)
    N = probe_noise_matrix(method, problem)
    m, C = stationary_moments(M, c, N, s2 * np.eye(M.shape[0]))
    n, d = problem.n, problem.d
    P = np.kron(np.eye(n) - 1.0 / n, np.eye(d))
    return float((np.trace(P @ C) + m @ P @ m) / n)


# ------------------------------------------------------------------------- exercise (a)

TWO_NODE_CASES = [  # (a, eta, b1, b2, curvature)
    (0.25, 0.1, [1.0, 0.0], [-1.0, 2.0], 1.0),
    (0.1, 0.05, [0.3, -2.0, 1.0], [1.5, 0.5, -1.0], 1.0),
    (0.4, 0.2, [2.0], [-1.0], 1.5),
    (0.5, 0.1, [1.0, 1.0], [0.0, -1.0], 1.0),
]


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
@pytest.mark.parametrize("a, eta, b1, b2, kappa", TWO_NODE_CASES)
def test_two_node_consensus_matches_dsgd(a, eta, b1, b2, kappa, ordering):
    W = np.array([[1 - a, a], [a, 1 - a]])
    prob = _identical(np.array([b1, b2]), kappa)
    xi_run = _settled_consensus(DSGD(eta, Topology.from_matrix(W), ordering=ordering), prob)
    xi_ans = sol.two_node_consensus_sq(a, eta, b1, b2, ordering, curvature=kappa)
    if ordering == "atc" and a == 0.5:
        assert xi_ans == 0.0 and xi_run <= 1e-30        # W = J: ATC reaches consensus exactly
    else:
        assert xi_ans == pytest.approx(xi_run, rel=1e-10)
        assert xi_ans > 1e-4


# ------------------------------------------------------------------------- exercise (b)


@pytest.mark.parametrize("eta", [0.01, 0.05, 0.2])
def test_atc_parallel_ratio_single_mode_on_the_ring(eta):
    n, d = 16, 2
    topo = make_topology("ring", n)
    W = topo.W_numpy()
    lam, U = np.linalg.eigh(W)
    rng = np.random.default_rng(7)
    checked = 0
    for j in range(n):
        if abs(lam[j] - 1) < 1e-9 or abs(lam[j]) < 1e-12:
            continue
        B = np.outer(U[:, j], rng.standard_normal(d)) + rng.standard_normal(d)   # one mode plus a common shift
        prob = _identical(B)
        xi = {o: _settled_consensus(DSGD(eta, topo, ordering=o), prob) for o in ("atc", "parallel")}
        assert float(sol.atc_parallel_ratio(lam[j], eta)) == pytest.approx(xi["atc"] / xi["parallel"], rel=1e-9)
        checked += 1
    assert checked >= 10


def test_atc_parallel_ratio_properties():
    lam_grid = np.linspace(-0.999, 0.999, 2001)
    for eta in (0.01, 0.1, 0.5, 0.9):
        stable = np.abs(lam_grid - eta) < 1
        assert np.all(sol.atc_parallel_ratio(lam_grid[stable], eta) < 1)
    assert sol.atc_parallel_ratio(0.0, 0.3) == 0.0
    assert float(sol.atc_parallel_ratio(0.9, 1e-9)) == pytest.approx(0.81, rel=1e-6)
    np.testing.assert_allclose(np.sort(sol.ring_eigenvalues(16)), np.linalg.eigvalsh(make_topology("ring", 16).W_numpy()),
                               atol=1e-14)


# ------------------------------------------------------------------------- exercise (c)


def _gossip_setting(seed=0):
    n, d = 16, 2
    B = 2.0 * np.random.default_rng(seed).standard_normal((n, d))
    return make_topology("ring", n).W_numpy(), B


@pytest.mark.parametrize("r", [1, 3, 6, 7, 20])
def test_gossip_consensus_matches_m2_of_the_library(r):
    W, B = _gossip_setting()
    eta, s2 = 0.02, 1.0
    total, det, noise = sol.gossip_consensus_sq(W, B, eta, s2, r)
    xi_m2 = _m2_consensus(DSGD(eta, Topology.from_matrix(gossip_power(W, r)), ordering="atc"), _identical(B), s2)
    assert total == pytest.approx(xi_m2, rel=1e-9)
    assert det > noise > 0


def test_min_gossip_steps_is_the_first_r_below_the_threshold():
    W, B = _gossip_setting()
    eta, s2, L, n = 0.02, 1.0, 1.0, 16
    r_star = sol.min_gossip_steps(W, B, eta, s2, L)
    assert r_star == 7
    gamma2 = eta * s2 / (L * n)
    prob = _identical(B)
    above = _m2_consensus(DSGD(eta, Topology.from_matrix(gossip_power(W, r_star - 1)), ordering="atc"), prob, s2)
    below = _m2_consensus(DSGD(eta, Topology.from_matrix(gossip_power(W, r_star)), ordering="atc"), prob, s2)
    assert above > gamma2 >= below
    assert np.array_equal(sol.ring_mixing(16), W)


# ------------------------------------------------------------------------- exercise (d)


@pytest.mark.parametrize("n, d, eta, kappa", [(8, 2, 0.1, 1.0), (5, 3, 0.3, 2.0), (16, 1, 0.05, 0.5)])
def test_complete_graph_noise_consensus_matches_m2(n, d, eta, kappa):
    topo = make_topology("complete", n)
    prob = _identical(np.zeros((n, d)), kappa)
    s2 = 1.7
    for o in ("atc", "parallel"):
        xi_m2 = _m2_consensus(DSGD(eta, topo, ordering=o), prob, s2)
        ans = sol.complete_graph_noise_consensus_sq(n, d, eta, s2, kappa, o)
        if o == "atc":
            assert ans == 0.0 and abs(xi_m2) <= 1e-15
        else:
            assert ans == pytest.approx(xi_m2, rel=1e-10) and ans > 1e-4


def test_complete_graph_parallel_noise_monte_carlo():
    """seed 3: the parallel ordering's noise-driven Xi^2 on W = J, by simulation (independent samples: on W = J
    the consensus part is fresh noise at every step)."""
    n, d, eta, s2 = 8, 4, 0.2, 1.0
    prob = _identical(np.zeros((n, d)))
    method = DSGD(eta, make_topology("complete", n), ordering="parallel")
    oracle = GaussianNoiseOracle(prob, math.sqrt(d * s2))
    comm, gen = SimulatedComm(n), torch.Generator().manual_seed(3)
    state = method.init(torch.zeros(d, dtype=DT), prob)
    vals = []
    for t in range(6000):
        state = method.step(state, oracle, comm, gen)
        if t >= 50:
            vals.append(consensus_distance_sq(state["X"]))
    vals = np.array(vals).reshape(50, -1).mean(1)             # batch means
    pred = sol.complete_graph_noise_consensus_sq(n, d, eta, s2, 1.0, "parallel")
    se = vals.std(ddof=1) / math.sqrt(vals.size)
    assert abs(vals.mean() - pred) <= 3 * se
    assert abs(vals.mean() / pred - 1) < 0.05
