"""Tests of the exercise answers of the chapter "Gossip, topology and heterogeneity".

The answers live in ``book/solutions/gossip.py`` (closed forms in plain NumPy). Each test checks an answer
against an *independent* computation with hetlab: the library's mixing matrices and spectral quantities,
brute-force searches over them, its D-SGD implementation (iterated, or its affine map probed), and its
RelaySum messaging. A wrong formula in the solutions module makes the corresponding test fail.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import gossip as sol  # noqa: E402

from hetlab import topology as topo  # noqa: E402
from hetlab.algorithms.gossip import DSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import affine_fixed_point, method_affine_map  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem  # noqa: E402
from hetlab.topology import spectral  # noqa: E402

DT = torch.float64


def _ring_matrix(n, a):
    """The ring with self weight ``a`` from library constructors: lazy((adjacency)/2, alpha = 1 - a)."""
    half = nx.to_numpy_array(topo.ring(n), nodelist=range(n)) / 2
    return half if a == 0 else topo.lazy(half, 1 - a)

# ------------------------------------------------------------------------ ex-go-ring-spectrum


@pytest.mark.parametrize("n", [4, 5, 8, 9, 16])
@pytest.mark.parametrize("a", [0.0, 0.2, 1 / 3, 0.5, 0.9])
def test_ring_spectrum_and_rho(n, a):
    W = _ring_matrix(n, a)
    assert np.allclose(np.sort(np.linalg.eigvalsh(W)), np.sort(sol.ring_eigenvalues(n, a)), atol=1e-12)
    assert abs(spectral.rho(W) - sol.ring_rho(n, a)) < 1e-12


@pytest.mark.parametrize("n", [3, 6, 7, 8, 16])
def test_ring_best_self_weight_by_grid_search(n):
    grid = np.linspace(0.0, 1.0, 5001)[:-1]  # a = 1 (alpha = 0) is the identity: it never mixes
    rhos = np.array([spectral.rho(_ring_matrix(n, a)) for a in grid])
    a_star, rho_star = sol.ring_best_self_weight(n)
    assert rhos.min() >= rho_star - 1e-12          # nothing on the grid beats the answer
    assert rhos.min() - rho_star <= 1e-3           # and the grid gets close to it
    assert abs(grid[rhos.argmin()] - a_star) <= 2.5e-4
    assert abs(spectral.rho(_ring_matrix(n, a_star)) - rho_star) < 1e-12
    if n % 2 == 0:
        c = math.cos(2 * math.pi / n)
        assert abs(rho_star - (1 + c) / (3 - c)) < 1e-14
    # and it beats the usual 1/3 weights for n >= 4
    if n >= 4:
        assert rho_star < topo.make_topology("ring", n).rho

# --------------------------------------------------------------------------- ex-go-hypercube


@pytest.mark.parametrize("n", [2, 4, 8, 32, 64])
def test_hypercube_spectrum_with_multiplicities(n):
    T = topo.make_topology("hypercube", n)
    lam = np.linalg.eigvalsh(T.W_numpy())
    vals, counts = np.unique(np.round(lam, 9), return_counts=True)
    measured = {float(v): int(c) for v, c in zip(vals, counts)}
    predicted = {round(v, 9): m for v, m in sol.hypercube_spectrum(n).items()}
    assert measured == predicted
    assert abs(T.rho - sol.hypercube_rho(n)) < 1e-12
    assert abs(T.p - sol.hypercube_p(n)) < 1e-12

# ---------------------------------------------------------------------- ex-go-dsgd-two-nodes


def _two_node_problem(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return QuadraticProblem.from_minimizers(a.reshape(2, 1, 1), b.reshape(2, 1))


CASES = [([1.0, 3.0], [-1.0, 2.0], 0.3, 0.1), ([0.5, 2.0], [1.0, -1.5], 0.1, 0.2),
         ([1.5, 1.5], [0.3, 4.0], 0.25, 0.05), ([2.0, 1.0], [-2.0, -0.5], 0.5, 0.3)]


@pytest.mark.parametrize("a, b, w, eta", CASES)
def test_two_node_dsgd_fixed_point_matches_the_library(a, b, w, eta):
    prob = _two_node_problem(a, b)
    T = topo.Topology.from_matrix([[1 - w, w], [w, 1 - w]], name="two-nodes")
    M, c, unflatten = method_affine_map(DSGD(eta, T), prob)
    X_probe = unflatten(affine_fixed_point(M, c))["X"].numpy()[:, 0]
    ans = sol.dsgd_two_nodes_fixed_point(a, b, w, eta)
    assert np.abs(ans - X_probe).max() < 1e-12
    # and running the method lands there too
    m, state, oracle, comm = DSGD(eta, T), None, Oracle(prob), SimulatedComm(2)
    state = m.init(torch.zeros(1, dtype=DT), prob)
    for _ in range(4000):
        state = m.step(state, oracle, comm, None)
    assert np.abs(state["X"].numpy()[:, 0] - ans).max() < 1e-10


@pytest.mark.parametrize("w, eta", [(0.1, 0.1), (0.3, 0.05), (0.45, 0.2)])
def test_two_node_gap_with_equal_curvature(w, eta):
    a, b = 1.7, np.array([2.0, -1.0])
    x = sol.dsgd_two_nodes_fixed_point([a, a], b, w, eta)
    assert abs(x.mean() - b.mean()) < 1e-13                       # the mean is exact
    assert abs((x[0] - x[1]) - sol.dsgd_two_nodes_gap_equal_curvature(a, b, w, eta)) < 1e-13
    assert abs(sol.dsgd_two_nodes_gap_equal_curvature(a, b, 0.5, eta)) < 1e-15  # W = J: consensus


def test_two_node_w_half_is_exact():
    a, b = [1.0, 3.0], [-1.0, 2.0]
    x = sol.dsgd_two_nodes_fixed_point(a, b, 0.5, 0.2)
    x_star = float(_two_node_problem(a, b).x_star[0])
    assert np.abs(x - x_star).max() < 1e-13

# ------------------------------------------------------------------------------ ex-go-rounds


@pytest.mark.parametrize("name, n, eps", [("ring", 16, 1e-6), ("ring", 64, 1e-6), ("ring", 64, 1e-2),
                                          ("exponential", 16, 1e-6), ("exponential", 64, 1e-6),
                                          ("exponential", 64, 1e-9)])
def test_rounds_to_eps_by_matrix_powers(name, n, eps):
    W = topo.make_topology(name, n).W_numpy()
    r = sol.ring_rounds(n, eps) if name == "ring" else sol.exponential_rounds(n, eps)
    assert spectral.rho(np.linalg.matrix_power(W, r)) <= eps * (1 + 1e-9)
    assert spectral.rho(np.linalg.matrix_power(W, r - 1)) > eps


@pytest.mark.parametrize("n", [8, 16, 64])
def test_one_peer_rounds_are_exact(n):
    sched = topo.one_peer_exponential(n)
    P = np.eye(n)
    for r in range(1, sol.one_peer_rounds(n) + 1):
        P = sched[(r - 1) % len(sched)] @ P
        if r < sol.one_peer_rounds(n):
            assert spectral.rho(P) > 0.5
    assert spectral.rho(P) < 1e-14


def test_ring_needs_thousands_of_rounds_where_exponential_needs_dozens():
    assert sol.ring_rounds(64, 1e-6) > 4000 and sol.exponential_rounds(64, 1e-6) < 50
    assert sol.one_peer_rounds(64) == 6

# ------------------------------------------------------------------------ ex-go-chain-delays


@pytest.mark.parametrize("n", [2, 3, 8, 13])
def test_chain_delays_and_mean(n):
    D = topo.tree_delays(topo.chain(n))
    assert np.array_equal(sol.chain_delays(n), D)
    assert abs(sol.chain_mean_delay(n) - D.mean()) < 1e-12


@pytest.mark.parametrize("n", [3, 8, 12])
def test_chain_full_count_step_by_relaying_counts(n):
    msg = topo.TreeMessaging(topo.chain(n))
    c = torch.zeros(msg.E, dtype=DT)
    first_full = None
    for t in range(2 * n):
        c = msg.relay(torch.ones(n, dtype=DT), c)
        if first_full is None and bool(((1 + msg.receive(c)) == n).all()):
            first_full = t
    assert first_full == sol.chain_full_count_step(n)


@pytest.mark.parametrize("n", [3, 8, 20])
def test_star_mean_delay(n):
    assert abs(sol.star_mean_delay(n) - topo.tree_delays(topo.star(n)).mean()) < 1e-12
    assert sol.star_mean_delay(n) < 1 <= sol.chain_mean_delay(max(n, 6))
