"""Checks C1, C3, C4, C5 (gossip) and the closed forms behind them (``hetlab.closed_forms_gossip``).

``tests/test_proofs_check.py`` already runs every check with seed 0 and asserts that its negative controls
fail. Here: another seed, the facts the checks rely on (the vectorised simulation *is* the library's D-SGD,
``TreeMessaging`` refuses a cycle, the periodic ring is refused), the closed forms against the library on
cases the checks do not cover, and mutation tests: a wrong prediction or a broken implementation must make
the check fail.
"""
from __future__ import annotations

import functools
import math

import networkx as nx
import numpy as np
import pytest
import torch

import proofs_check
from hetlab import closed_forms_gossip as cfg
from hetlab import topology as topo
from hetlab.algorithms.gossip import DSGD, GradientTracking, QGDSGDm
from hetlab.comm import SimulatedComm
from hetlab.exact import affine_fixed_point, method_affine_map
from hetlab.problems import Oracle
from hetlab.topology import MixingMatrixError, TreeMessaging, spectral

C1 = proofs_check.get("C1")
C3 = proofs_check.get("C3")
C4 = proofs_check.get("C4")
C5 = proofs_check.get("C5")

# ----------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("cid", ["C1", "C3", "C4", "C5"])
def test_gossip_checks_pass_for_seed_3(cid):
    res = proofs_check.run_check(cid, seed=3)
    assert res.passed, [c.name for c in res.criteria if not c.ok]
    assert all(not c.holds for c in res.negative_controls)


def test_vectorised_runs_equal_library_dsgd_with_same_noise():
    """Every row of the stacked-seed simulation of C3 is the library's DSGD (ATC) run with that row's noise."""
    prob = C3.make_problem(seed=1)
    ring = topo.make_topology("ring", prob.n)
    lrs = C3.decreasing_steps(prob, 120)
    S, seed = 4, 11
    sim = C3.simulate_dsgd_decreasing(prob, ring.W_numpy(), lrs, (120,), S, torch.Generator().manual_seed(seed))
    for row in range(S):
        X = C3.library_dsgd_decreasing(prob, ring, lrs, S, row, seed)
        e = float(((X.mean(0) - prob.x_star) ** 2).sum())
        assert abs(e - sim[120][row]) <= 1e-12 * sim[120][row]
    # and the rows differ (independent noise per run)
    assert np.ptp(sim[120]) > 1e-3


def test_exact_moments_without_noise_equal_the_deterministic_run():
    prob = C3.make_problem(seed=2)
    ring = topo.make_topology("ring", prob.n)
    lrs = C3.decreasing_steps(prob, 300)
    exact = cfg.dsgd_mean_square_decreasing(prob, ring.W_numpy(), lrs, (300,), noise_cov=np.zeros((prob.d, prob.d)))
    m = DSGD(lrs[0], ring)
    state, comm, oracle = m.init(torch.zeros(prob.d), prob), SimulatedComm(prob.n), Oracle(prob)
    for t in range(300):
        m.lr = float(lrs[t])
        state = m.step(state, oracle, comm, None)
    e = float(((state["X"].mean(0) - prob.x_star) ** 2).sum())
    assert abs(exact[300] - e) <= 1e-12 * e


def test_probed_gradient_tracking_map_reproduces_real_steps():
    """The probed affine map of gradient tracking (whose step returns its state keys in another order than
    init) must reproduce real iterations from an arbitrary state."""
    from hetlab.exact import flatten_state
    prob = C3.make_problem(seed=6)
    gt = GradientTracking(0.05, topo.make_topology("ring", prob.n))
    M, c, unflatten = method_affine_map(gt, prob)
    z = np.random.default_rng(0).standard_normal(M.shape[0])
    state, oracle, comm = unflatten(z), Oracle(prob), SimulatedComm(prob.n)
    for _ in range(30):
        state = gt.step(state, oracle, comm, None)
        z = M @ z + c
        assert np.abs(flatten_state(state)[0] - z).max() <= 1e-10 * (1 + np.abs(z).max())


def test_tree_messaging_refuses_a_graph_with_a_cycle():
    with pytest.raises(ValueError, match="tree"):
        TreeMessaging(topo.ring(8))
    with pytest.raises(ValueError, match="tree"):
        from hetlab.algorithms.gossip import RelaySGD
        RelaySGD(0.05, topo.torus(4))


def test_periodic_ring_is_refused_as_a_mixing_matrix():
    W = nx.to_numpy_array(topo.ring(8), nodelist=range(8)) / 2  # weight 1/2 on neighbours, 0 on self
    assert abs(spectral.rho(W) - 1.0) < 1e-12
    with pytest.raises(MixingMatrixError, match="consensus"):
        topo.validate_mixing(W)
    # an odd periodic ring does mix: its most negative eigenvalue is -cos(pi/n), not -1
    W9 = nx.to_numpy_array(topo.ring(9), nodelist=range(9)) / 2
    assert abs(spectral.rho(W9) - cfg.ring_rho(9, 0.0)) < 1e-12 < 1 - cfg.ring_rho(9, 0.0)
    topo.validate_mixing(W9)


# ------------------------------------------------------------------- closed forms vs library


@pytest.mark.parametrize("n", [5, 8, 9, 12])
@pytest.mark.parametrize("a", [0.0, 0.1, 1 / 3, 0.6])
def test_ring_rho_any_self_weight(n, a):
    W = a * np.eye(n) + (1 - a) / 2 * nx.to_numpy_array(topo.ring(n), nodelist=range(n))
    assert abs(spectral.rho(W) - cfg.ring_rho(n, a)) < 1e-12
    assert np.allclose(np.sort(np.linalg.eigvalsh(W)), np.sort(cfg.ring_eigenvalues(n, a)), atol=1e-12)


def test_ring_n4_has_two_eigenvalues_attaining_rho():
    lam = np.sort(np.linalg.eigvalsh(topo.make_topology("ring", 4).W_numpy()))
    assert np.allclose(lam, [-1 / 3, 1 / 3, 1 / 3, 1.0], atol=1e-14)
    assert abs(cfg.ring_rho(4) - 1 / 3) < 1e-15


@pytest.mark.parametrize("n", [4, 128])
def test_power_of_two_closed_forms_beyond_the_check(n):
    assert abs(topo.make_topology("hypercube", n).rho - cfg.hypercube_rho(n)) < 1e-12
    assert abs(spectral.rho(topo.static_exponential(n)) - cfg.static_exponential_rho(n)) < 1e-12
    assert topo.make_topology("one_peer_exponential", n).rho < 1e-14
    for k in range(int(math.log2(n))):
        assert abs(spectral.rho(topo.one_peer_exponential(n)[k]) - cfg.one_peer_step_rho(n, k)) < 1e-12


@pytest.mark.parametrize("m", [3, 5, 7])
def test_torus_odd_sides(m):
    assert abs(topo.make_topology("torus", m * m).rho - cfg.torus_rho(m)) < 1e-12


@pytest.mark.parametrize("n", [3, 5, 10])
def test_star_and_chain_other_sizes(n):
    assert abs(topo.make_topology("star", n).rho - cfg.star_rho(n)) < 1e-12
    assert abs(topo.make_topology("chain", n).rho - cfg.chain_rho(n)) < 1e-12


@pytest.mark.parametrize("rho, eps", [(0.5, 1e-3), (0.8047378541243649, 1e-6), (0.99, 1e-2), (0.0, 1e-9)])
def test_gossip_rounds_to_eps_is_the_first_power_below_eps(rho, eps):
    r = cfg.gossip_rounds_to_eps(rho, eps)
    assert rho ** r <= eps
    assert r == 1 or rho ** (r - 1) > eps


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
def test_dsgd_fixed_point_matches_the_probed_library_map(ordering):
    prob = C3.make_problem(seed=4)
    ring = topo.make_topology("ring", prob.n)
    M, c, unflatten = method_affine_map(DSGD(0.05, ring, ordering=ordering), prob)
    X_lib = unflatten(affine_fixed_point(M, c))["X"].numpy()
    assert np.abs(X_lib - cfg.dsgd_fixed_point(prob, ring.W_numpy(), 0.05, ordering)).max() < 1e-12
    M_cf, c_cf = cfg.dsgd_affine_map(prob, ring.W_numpy(), 0.05, ordering)
    assert np.abs(M_cf - M).max() < 1e-14 and np.abs(c_cf - c).max() < 1e-14


def test_gt_zero_init_from_a_consensual_start_never_moves():
    prob = C3.make_problem(seed=0)
    x0 = torch.linspace(-1, 1, prob.d, dtype=torch.float64)
    st, _ = C3.run_method(GradientTracking(0.05, topo.make_topology("ring", prob.n), Y0="zero"), prob, 50,
                          state=GradientTracking(0.05, topo.make_topology("ring", prob.n), Y0="zero").init(x0, prob))
    assert torch.equal(st["X"], x0.expand(prob.n, prob.d))
    assert np.abs(cfg.gt_zero_init_limit(prob, x0.expand(prob.n, prob.d).numpy()) - x0.numpy()).max() < 1e-12


@pytest.mark.parametrize("make_tree", [lambda: topo.star(7), lambda: topo.chain(5), lambda: topo.binary_tree(10),
                                       lambda: topo.bfs_spanning_tree(topo.torus(4))])
def test_relay_delays_match_library(make_tree):
    T = make_tree()
    assert np.array_equal(cfg.relay_delays(list(T.edges), T.number_of_nodes()), topo.tree_delays(T))


def test_relaysum_prediction_on_a_star_by_hand():
    # star with hub 0 and leaves 1, 2: leaves see each other with delay 1, the hub sees everyone at once
    delays = cfg.relay_delays([(0, 1), (0, 2)], 3)
    assert delays.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]
    Y = np.arange(2 * 3, dtype=float).reshape(2, 3, 1)  # y_k^t = 3t + k
    S = cfg.relaysum_prediction(Y, delays)
    assert S[0, :, 0].tolist() == [3.0, 1.0, 2.0]       # t = 0: leaves lack each other
    assert S[1, :, 0].tolist() == [12.0, 3 + 4 + 2, 3 + 1 + 5]
    assert cfg.relaysum_count_prediction(delays, 2).tolist() == [[3, 2, 2], [3, 3, 3]]


def test_chain_mean_delay_formula():
    for n in (2, 3, 8, 17):
        assert abs(cfg.chain_mean_delay(n) - topo.tree_delays(topo.chain(n)).mean()) < 1e-12

# ------------------------------------------------------------------------- mutation tests


def test_c1_fails_with_a_wrong_ring_formula(monkeypatch):
    monkeypatch.setattr(C1.cfg, "ring_rho", lambda n, a=1 / 3: (1 + 2 * math.cos(math.pi / n)) / 3)
    assert not C1.run().passed


def test_c1_fails_with_a_wrong_torus_formula(monkeypatch):
    # (1 + 4 cos(2 pi/m))/5 is the eigenvalue of the mode that varies along both axes, not the slowest one
    monkeypatch.setattr(C1.cfg, "torus_rho", lambda m: (1 + 4 * math.cos(2 * math.pi / m)) / 5)
    assert not C1.run().passed


def test_c1_fails_if_the_one_peer_product_were_not_j(monkeypatch):
    monkeypatch.setattr(C1.cfg, "one_peer_period_product", lambda n: np.eye(n))
    assert not C1.run().passed


def test_c3_fails_with_the_y0_zero_bug(monkeypatch):
    monkeypatch.setattr(C3, "GradientTracking", functools.partial(GradientTracking, Y0="zero"))
    assert not C3.run().passed


def test_c3_fails_if_the_prediction_uses_the_other_ordering(monkeypatch):
    real = cfg.dsgd_fixed_point
    monkeypatch.setattr(C3.cfg, "dsgd_fixed_point", lambda p, W, lr, ordering="atc": real(p, W, lr, "parallel"))
    assert not C3.run().passed


def test_c4_fails_with_same_step_messages(monkeypatch):
    monkeypatch.setattr(TreeMessaging, "relay", lambda self, Y, M: C4.same_step_relay(self, Y, M))
    assert not C4.run().passed


def test_c4_fails_if_delays_are_distances(monkeypatch):
    monkeypatch.setattr(C4.cfg, "relay_delays", lambda edges, n: cfg.tree_distances(edges, n))
    assert not C4.run().passed


def test_c5_fails_if_qg_divides_by_one_plus_beta(monkeypatch):
    monkeypatch.setattr(C5, "QGDSGDm", C5.QGDividedByOnePlusBeta)
    assert not C5.run().passed


def test_c5_fails_if_dsgdm_prediction_ignores_beta(monkeypatch):
    monkeypatch.setattr(C5.cfg, "dsgdm_fixed_point", lambda p, W, lr, beta: cfg.dsgd_fixed_point(p, W, lr))
    assert not C5.run().passed


def test_qg_library_step_is_the_training_code_form():
    """One QG step by hand (buffer from the model change including gossip) equals the library's."""
    prob = C3.make_problem(seed=5)
    ring = topo.make_topology("ring", prob.n)
    m = QGDSGDm(0.01, ring, beta=0.9)
    gen = torch.Generator().manual_seed(0)
    state = m.init(torch.zeros(prob.d), prob)
    state["X"] = torch.randn(prob.n, prob.d, generator=gen, dtype=torch.float64)
    state["M_hat"] = torch.randn(prob.n, prob.d, generator=gen, dtype=torch.float64)
    new = m.step(state, Oracle(prob), SimulatedComm(prob.n), None)
    W = ring.W()
    X_new = W @ (state["X"] - 0.01 * (0.9 * state["M_hat"] + prob.grad(state["X"])))
    M_new = 0.9 * state["M_hat"] + 0.1 * (state["X"] - X_new) / 0.01
    assert torch.allclose(new["X"], X_new, atol=1e-14) and torch.allclose(new["M_hat"], M_new, atol=1e-12)
