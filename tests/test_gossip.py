"""Gossip methods: exact reductions to simpler algorithms, pure gossip on time-varying topologies,
mean dynamics, purity of ``step`` and input validation.

Reductions checked (iterates equal to 1e-13, same generator seed, hence the same noise draws):

* D-SGD ``atc`` on the complete graph (W = J) *is* minibatch SGD: X+ = J(X - eta G) keeps every row at
  the average, also with gradient noise and heterogeneous data; with ``local_steps = K`` it is FedAvg.
* D-SGD ``parallel`` on W = J is **not** minibatch SGD in general: x_i+ = xbar - eta g_i(x_i), so the
  workers sit at xbar - eta (g_i - gbar) (last step's gradients) and the gradients are evaluated
  there. Its mean equals minibatch SGD exactly when the gradients are affine with one common Hessian
  (then mean_i g_i(x_i) = gbar(xbar)), and differs when the Hessians differ.
* Gradient tracking (DIGing) on identical data from a consensual start: if X^t = 1 x^T and
  Y^t = G(X^t), then X^{t+1} = X^t - eta G(X^t) is consensual again and
  Y^{t+1} = W Y^t + G(X^{t+1}) - G(X^t) = G(X^{t+1}); so Y = G(X) forever, the DIGing update
  X+ = WX - eta Y becomes the *parallel* D-SGD update X+ = WX - eta G(X), and since the models stay
  consensual (W1 = 1) it also equals ATC D-SGD and GD. Holds for any identical f (quadratic or not).
* DSGDm and QG-DSGDm with beta = 0 are ATC D-SGD; RelaySGD on a 2-node tree is exact averaging.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from conftest import DT
from hetlab import measures
from hetlab.algorithms import (DSGD, GD, DSGDMomentum, FedAvg, GradientTracking, MinibatchSGD, QGDSGDm,
                               RelaySGD)
from hetlab.comm import SimulatedComm
from hetlab.problems import (CubicQuarticProblem, GaussianNoiseOracle, Oracle, QuadraticProblem,
                             random_quadratics)
from hetlab.topology import Topology, chain, make_topology, ring, static_exponential

TOL = 1e-13


class ZeroOracle(Oracle):
    """Zero gradients: one step of a gossip method is then pure gossip."""

    def grad(self, X, idx=None, generator=None):
        return torch.zeros_like(X)


def _trajectory(method, problem, steps, *, oracle=None, seed=0, x0=None, X0=None):
    """Stacked worker models (or the server model, as one row) after every step: ``[steps + 1, rows, d]``."""
    oracle = oracle if oracle is not None else Oracle(problem)
    gen = torch.Generator().manual_seed(seed)
    comm = SimulatedComm(problem.n)
    x0 = torch.zeros(problem.d, dtype=DT) if x0 is None else torch.as_tensor(x0, dtype=DT)
    state = method.init(x0, problem)
    if X0 is not None:
        state["X"] = torch.as_tensor(X0, dtype=DT).clone()

    def models(s):
        X = method.worker_models(s)
        return (X if X is not None else method.model(s)[None]).numpy().copy()

    out = [models(state)]
    for _ in range(steps):
        state = method.step(state, oracle, comm, gen)
        out.append(models(state))
    return np.array(out), state


def _max_gap(A, B):
    """Largest difference between two trajectories, relative to their size (``[steps + 1, rows, d]``)."""
    return float(np.abs(A - B).max() / max(1.0, np.abs(B).max()))


def _identical_hessian_problem(n=8, d=4, seed=0):
    return random_quadratics(n, d, hessian_heterogeneity=0.0, seed=seed)


def _identical_data_problem(n=8, d=4, seed=0):
    """All f_i equal: one Hessian and one minimiser for every worker."""
    P = random_quadratics(1, d, seed=seed)
    A = P.A.numpy().repeat(n, 0)
    b = np.random.default_rng(seed).standard_normal(d)[None].repeat(n, 0)
    return QuadraticProblem.from_minimizers(A, b)


def _identical_quartic(n=8, d=4, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Q = (U * rng.uniform(0.5, 2.0, d)) @ U.T
    return CubicQuarticProblem(0.5 * (Q + Q.T), rng.standard_normal((3, d)), rng.uniform(0.5, 1.5, 3), degree=4, n=n)


# ------------------------------------------------------------------------------ W = J reductions


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("noisy", [False, True])
def test_dsgd_atc_on_complete_graph_is_minibatch_sgd(seed, noisy):
    prob = random_quadratics(8, 5, seed=seed)  # heterogeneous Hessians and minimisers
    oracle = GaussianNoiseOracle(prob, 0.5) if noisy else Oracle(prob)
    x0 = np.random.default_rng(seed).standard_normal(5)
    K = make_topology("complete", 8)
    tr_d, _ = _trajectory(DSGD(0.1, K, "atc"), prob, 100, oracle=oracle, seed=seed, x0=x0)
    tr_m, _ = _trajectory(MinibatchSGD(0.1), prob, 100, oracle=oracle, seed=seed, x0=x0)
    assert _max_gap(tr_d, np.broadcast_to(tr_m, tr_d.shape)) <= TOL  # every worker row = the minibatch iterate
    if noisy:  # the comparison is not vacuous: the noise moved the iterates away from GD
        tr_gd, _ = _trajectory(GD(0.1), prob, 100, x0=x0)
        assert np.abs(tr_m - tr_gd).max() > 1e-2


@pytest.mark.parametrize("K", [2, 5])
def test_dsgd_atc_with_local_steps_on_complete_graph_is_fedavg(K):
    prob = random_quadratics(6, 3, seed=2)
    oracle = GaussianNoiseOracle(prob, 0.3)
    tr_d, _ = _trajectory(DSGD(0.05, make_topology("complete", 6), "atc", local_steps=K), prob, 40, oracle=oracle, seed=4)
    tr_f, _ = _trajectory(FedAvg(0.05, K), prob, 40, oracle=oracle, seed=4)
    assert _max_gap(tr_d, np.broadcast_to(tr_f, tr_d.shape)) <= TOL


@pytest.mark.parametrize("noisy", [False, True])
def test_dsgd_parallel_on_complete_graph_mean_is_minibatch_sgd_for_a_common_hessian(noisy):
    prob = _identical_hessian_problem(seed=3)  # minimisers differ, Hessians do not
    oracle = GaussianNoiseOracle(prob, 0.5) if noisy else Oracle(prob)
    K = make_topology("complete", 8)
    tr_d, st = _trajectory(DSGD(0.1, K, "parallel"), prob, 100, oracle=oracle, seed=7)
    tr_m, _ = _trajectory(MinibatchSGD(0.1), prob, 100, oracle=oracle, seed=7)
    assert _max_gap(tr_d.mean(1), tr_m[:, 0]) <= TOL
    # ... but the workers are not in consensus: x_i - xbar = -eta (g_i - gbar) of the last step
    assert measures.consensus_distance_sq(st["X"]) > 1e-4


def test_dsgd_parallel_on_complete_graph_worker_offsets():
    prob = random_quadratics(8, 3, seed=5)
    method = DSGD(0.1, make_topology("complete", 8), "parallel")
    rng = np.random.default_rng(5)
    state = method.init(torch.zeros(3, dtype=DT), prob)
    state["X"] = torch.as_tensor(rng.standard_normal((8, 3)))
    G = prob.grad(state["X"]).numpy()
    new = method.step(state, Oracle(prob), SimulatedComm(8), None)["X"].numpy()
    xbar = state["X"].numpy().mean(0)
    assert np.abs(new - (xbar - 0.1 * G)).max() <= TOL
    assert np.abs((new - new.mean(0)) + 0.1 * (G - G.mean(0))).max() <= TOL


def test_dsgd_parallel_on_complete_graph_differs_from_minibatch_with_heterogeneous_hessians():
    prob = random_quadratics(8, 5, seed=0)
    tr_d, _ = _trajectory(DSGD(0.1, make_topology("complete", 8), "parallel"), prob, 100)
    tr_m, _ = _trajectory(MinibatchSGD(0.1), prob, 100)
    assert np.abs(tr_d.mean(1) - tr_m[:, 0]).max() > 1e-4


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
def test_dsgd_on_identical_data_is_gd_on_any_graph(ordering):
    prob = _identical_data_problem(seed=1)
    x0 = np.ones(4)
    tr_d, _ = _trajectory(DSGD(0.1, make_topology("ring", 8), ordering), prob, 200, x0=x0)
    tr_g, _ = _trajectory(GD(0.1), prob, 200, x0=x0)
    assert _max_gap(tr_d, np.broadcast_to(tr_g, tr_d.shape)) <= TOL


# ------------------------------------------------------------------------------ gradient tracking


@pytest.mark.parametrize("topo", ["ring", "exponential", "one_peer_exponential"])
@pytest.mark.parametrize("make_problem", [_identical_data_problem, _identical_quartic], ids=["quadratic", "quartic"])
def test_gradient_tracking_on_identical_data_is_dsgd(topo, make_problem):
    prob = make_problem(seed=2)
    T = make_topology(topo, 8)
    x0 = 0.5 * np.ones(prob.d)
    lr = 0.05
    tr_gt, st = _trajectory(GradientTracking(lr, T), prob, 200, x0=x0)
    tr_par, _ = _trajectory(DSGD(lr, T, "parallel"), prob, 200, x0=x0)
    tr_atc, _ = _trajectory(DSGD(lr, T, "atc"), prob, 200, x0=x0)
    tr_gd, _ = _trajectory(GD(lr), prob, 200, x0=x0)
    assert _max_gap(tr_gt, tr_par) <= TOL
    assert _max_gap(tr_gt, tr_atc) <= TOL
    assert _max_gap(tr_gt, np.broadcast_to(tr_gd, tr_gt.shape)) <= TOL
    # the tracker is the local gradient itself
    assert np.abs(st["Y"].numpy() - prob.grad(st["X"]).numpy()).max() <= TOL
    assert np.abs(tr_gt[-1] - tr_gt[0]).max() > 0.1  # the iterates did move


def test_gradient_tracking_is_not_dsgd_from_a_non_consensual_start():
    prob = _identical_data_problem(seed=2)
    T = make_topology("ring", 8)
    X0 = np.random.default_rng(0).standard_normal((8, 4))
    tr_gt, _ = _trajectory(GradientTracking(0.05, T), prob, 50, X0=X0)
    tr_par, _ = _trajectory(DSGD(0.05, T, "parallel"), prob, 50, X0=X0)
    assert np.abs(tr_gt - tr_par).max() > 1e-3


# ------------------------------------------------------------------------------ momentum, relay


@pytest.mark.parametrize("Method", [DSGDMomentum, QGDSGDm])
def test_momentum_methods_with_beta_zero_are_dsgd_atc(Method):
    prob = random_quadratics(8, 4, seed=1)
    oracle = GaussianNoiseOracle(prob, 0.5)
    T = make_topology("ring", 8)
    tr_m, _ = _trajectory(Method(0.05, T, beta=0.0), prob, 100, oracle=oracle, seed=3)
    tr_d, _ = _trajectory(DSGD(0.05, T, "atc"), prob, 100, oracle=oracle, seed=3)
    assert _max_gap(tr_m, tr_d) <= TOL
    tr_b, _ = _trajectory(Method(0.05, T, beta=0.5), prob, 100, oracle=oracle, seed=3)
    assert np.abs(tr_b - tr_d).max() > 1e-3  # beta matters


@pytest.mark.parametrize("noisy", [False, True])
def test_relaysgd_on_two_nodes_is_exact_averaging(noisy):
    prob = random_quadratics(2, 3, seed=4)
    oracle = GaussianNoiseOracle(prob, 0.5) if noisy else Oracle(prob)
    tree = nx.path_graph(2)
    tr_r, _ = _trajectory(RelaySGD(0.1, tree), prob, 60, oracle=oracle, seed=1)
    tr_m, _ = _trajectory(MinibatchSGD(0.1), prob, 60, oracle=oracle, seed=1)
    tr_d, _ = _trajectory(DSGD(0.1, make_topology("complete", 2), "atc"), prob, 60, oracle=oracle, seed=1)
    assert _max_gap(tr_r, np.broadcast_to(tr_m, tr_r.shape)) <= TOL
    assert _max_gap(tr_r, tr_d) <= TOL


@pytest.mark.parametrize("tree", [chain(6), nx.balanced_tree(2, 2), nx.star_graph(4)], ids=["chain6", "binary7", "star5"])
def test_relaysgd_is_the_delayed_uniform_average(tree):
    """RelaySum identity (THEORY C4a) on RelaySGD's own iterates: with y^t = x^t - eta grad(x^t),
    x_i^{t+1} = (1/n) [sum_{k: tau_ik <= t} y_k^{t - tau_ik} + (n - #{k: tau_ik <= t}) y_i^t],
    tau_ik = max(d(i, k) - 1, 0); from t = diam - 1 on, every worker averages all n models uniformly."""
    from hetlab.topology import tree_delays
    n = tree.number_of_nodes()
    prob = random_quadratics(n, 2, seed=0)
    lr = 0.05
    X0 = np.random.default_rng(1).standard_normal((n, 2))
    tr, _ = _trajectory(RelaySGD(lr, tree), prob, 12, X0=X0)
    Y = np.array([x - lr * prob.grad(torch.as_tensor(x)).numpy() for x in tr])
    tau = tree_delays(tree)
    for t in range(12):
        for i in range(n):
            heard = tau[i] <= t
            want = (Y[t - tau[i][heard], np.nonzero(heard)[0]].sum(0) + (n - heard.sum()) * Y[t, i]) / n
            assert np.abs(tr[t + 1, i] - want).max() <= TOL
    assert np.all(tau <= nx.diameter(tree) - 1)


# ------------------------------------------------------------------------------ time-varying topology


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
@pytest.mark.parametrize("n", [4, 8, 16])
def test_one_peer_exponential_pure_gossip_reaches_exact_consensus_in_one_period(ordering, n):
    prob = random_quadratics(n, 3, seed=0)
    T = make_topology("one_peer_exponential", n)
    tau = T.period
    rng = np.random.default_rng(n)
    X_int = rng.integers(-50, 51, size=(n, 3)).astype(float)  # averages of integers over 2^tau: exact
    tr, _ = _trajectory(DSGD(0.1, T, ordering), prob, tau, oracle=ZeroOracle(prob), X0=X_int)
    assert measures.consensus_distance_sq(torch.as_tensor(tr[-1])) == 0.0
    assert np.array_equal(tr[-1], np.broadcast_to(X_int.mean(0), (n, 3)))
    assert measures.consensus_distance_sq(torch.as_tensor(tr[-2])) > 0  # not one step earlier
    X_float = rng.standard_normal((n, 3))
    tr, _ = _trajectory(DSGD(0.1, T, ordering), prob, tau, oracle=ZeroOracle(prob), X0=X_float)
    assert measures.consensus_distance_sq(torch.as_tensor(tr[-1])) <= 1e-30
    # a vanishing step size is pure gossip too (eta * g is below half an ulp of the models)
    tr, _ = _trajectory(DSGD(1e-300, T, ordering), prob, tau, X0=X_int)
    assert measures.consensus_distance_sq(torch.as_tensor(tr[-1])) == 0.0


def test_dsgd_on_one_peer_exponential_converges_in_mean():
    """With a common Hessian the mean of D-SGD is GD on f (any W): it reaches x_star, while the
    heterogeneous minimisers keep the workers apart."""
    prob = _identical_hessian_problem(n=8, d=3, seed=6)
    T = make_topology("one_peer_exponential", 8)
    tr, st = _trajectory(DSGD(0.1, T, "atc"), prob, 600)
    assert np.abs(tr[-1].mean(0) - prob.x_star.numpy()).max() <= 1e-10
    assert measures.consensus_distance_sq(st["X"]) > 1e-4
    assert st["round"] == 600


@pytest.mark.parametrize("ordering", ["atc", "parallel"])
@pytest.mark.parametrize("topo", ["ring", "exponential", "one_peer_exponential", "star"])
def test_mean_dynamics_of_dsgd(ordering, topo):
    """Every doubly stochastic W keeps xbar+ = xbar - eta mean_i g_i(x_i) (ATC: gradients at x_i too)."""
    prob = random_quadratics(8, 3, seed=1)
    T = make_topology(topo, 8)
    method = DSGD(0.1, T, ordering)
    rng = np.random.default_rng(2)
    state = method.init(torch.zeros(3, dtype=DT), prob)
    for r in range(5):
        state["X"] = torch.as_tensor(rng.standard_normal((8, 3)))
        state["round"] = r
        new = method.step(state, Oracle(prob), SimulatedComm(8), None)
        want = state["X"].numpy().mean(0) - 0.1 * prob.grad(state["X"]).numpy().mean(0)
        assert np.abs(new["X"].numpy().mean(0) - want).max() <= TOL


def test_dsgd_mean_on_common_hessian_is_gd_for_any_graph():
    prob = _identical_hessian_problem(seed=4)
    x0 = np.ones(4)
    for topo in ("ring", "star", "exponential"):
        for ordering in ("atc", "parallel"):
            tr, _ = _trajectory(DSGD(0.1, make_topology(topo, 8), ordering), prob, 100, x0=x0)
            tr_g, _ = _trajectory(GD(0.1), prob, 100, x0=x0)
            assert _max_gap(tr.mean(1), tr_g[:, 0]) <= 1e-12


# ------------------------------------------------------------------------------ purity, errors


@pytest.mark.parametrize("make", [
    lambda T: DSGD(0.05, T, "atc"), lambda T: DSGD(0.05, T, "parallel"), lambda T: DSGDMomentum(0.05, T),
    lambda T: QGDSGDm(0.05, T), lambda T: GradientTracking(0.05, T), lambda T: RelaySGD(0.05, chain(6)),
])
def test_step_does_not_modify_its_input(make):
    prob = random_quadratics(6, 3, seed=0)
    method = make(make_topology("ring", 6))
    state = method.init(torch.ones(3, dtype=DT), prob)
    state = method.step(state, Oracle(prob), SimulatedComm(6), None)
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    method.step(state, GaussianNoiseOracle(prob, 1.0), SimulatedComm(6), torch.Generator().manual_seed(0))
    for k, v in before.items():
        assert torch.equal(state[k], v) if isinstance(v, torch.Tensor) else state[k] == v


def test_topology_size_must_match_the_problem():
    prob = random_quadratics(8, 3, seed=0)
    x0 = torch.zeros(3, dtype=DT)
    for method in (DSGD(0.1, make_topology("ring", 6)), DSGDMomentum(0.1, make_topology("ring", 6)),
                   QGDSGDm(0.1, make_topology("ring", 6)), GradientTracking(0.1, make_topology("ring", 6))):
        with pytest.raises(ValueError, match="6 nodes but the problem has 8 workers"):
            method.init(x0, prob)
    with pytest.raises(ValueError, match="6 nodes but the problem has 8 workers"):
        RelaySGD(0.1, chain(6)).init(x0, prob)


def test_non_uniform_problem_weights_are_rejected():
    prob = random_quadratics(6, 3, weights=np.arange(1.0, 7.0), seed=0)
    x0 = torch.zeros(3, dtype=DT)
    for method in (DSGD(0.1, make_topology("ring", 6)), GradientTracking(0.1, make_topology("ring", 6)),
                   RelaySGD(0.1, chain(6))):
        with pytest.raises(ValueError, match="uniform"):
            method.init(x0, prob)


def test_bad_hyperparameters():
    T = make_topology("ring", 6)
    with pytest.raises(ValueError, match="ordering"):
        DSGD(0.1, T, ordering="gossip-first")
    with pytest.raises(ValueError, match="parallel"):
        DSGD(0.1, T, ordering="parallel", local_steps=2)
    with pytest.raises(ValueError, match="local_steps"):
        DSGD(0.1, T, local_steps=0)
    for M in (DSGDMomentum, QGDSGDm):
        for beta in (-0.1, 1.0):
            with pytest.raises(ValueError, match="beta"):
                M(0.1, T, beta=beta)
    with pytest.raises(ValueError, match="Y0"):
        GradientTracking(0.1, T, Y0="ones")
    prob = random_quadratics(6, 3, spectrum=(0.5, 2.0), seed=0)
    with pytest.raises(ValueError, match="stability limit"):
        DSGD(1.5, T).init(torch.zeros(3, dtype=DT), prob)  # 1.5 * L >= 2
    DSGD(1.5, T, check_stability=False).init(torch.zeros(3, dtype=DT), prob)


def test_relaysgd_needs_a_tree():
    with pytest.raises(ValueError, match="needs a tree"):
        RelaySGD(0.1, ring(6))
    with pytest.raises(ValueError, match="needs a tree"):
        RelaySGD(0.1, nx.complete_graph(4))


def test_directed_and_time_varying_topologies_are_accepted():
    prob = random_quadratics(8, 3, seed=0)
    for T in (Topology.from_matrix(static_exponential(8), "exp", symmetric=False),
              make_topology("one_peer_exponential", 8)):
        tr, _ = _trajectory(DSGD(0.05, T, "atc"), prob, 20)
        assert np.all(np.isfinite(tr))
