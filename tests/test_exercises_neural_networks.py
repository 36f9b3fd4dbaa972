"""Tests of the exercise answers of the chapter "From quadratics to neural networks".

The answers live in ``book/solutions/neural_networks.py`` (plain NumPy and PyTorch autograd, no hetlab).
Each test checks an answer against an *independent* computation with hetlab: the parameter count and
memory estimate of its ``NNProblem``, its stacked gradient paths, its Dirichlet partitioner sampled many
times, its ``FedAvg`` round driven to its fixed point (and finite differences of its gradients), its
``DSGD`` iterated to its fixed point and the exact stationary moments of its probed affine map. Each
section also shows that a wrong formula, written in the test, is caught by the same comparison.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import neural_networks as sol  # noqa: E402

from hetlab.algorithms import DSGD, FedAvg  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.data import dirichlet, label_histogram, load_digits_dataset, pad_clients  # noqa: E402
from hetlab.exact import mc_interval  # noqa: E402
from hetlab.measures import consensus_distance_sq  # noqa: E402
from hetlab.models import logistic, mlp, small_cnn  # noqa: E402
from hetlab.problems import NNProblem, Oracle, QuadraticProblem  # noqa: E402
from hetlab.topology import make_topology  # noqa: E402

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny kernels: one thread is faster, and the machine may be shared (restored afterwards)."""
    from threadpoolctl import threadpool_limits
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def _synthetic(n, m, shape, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.rand(n, m, *shape, generator=g, dtype=DT)
    Y = torch.randint(0, classes, (n, m), generator=g)
    counts = torch.randint(max(1, m // 2), m + 1, (n,), generator=g)
    counts[0] = m
    return Z, Y, counts

# ----------------------------------------------------------------------------------- nn-ex-params


@pytest.mark.parametrize("sizes", [[64, 16, 10], [64, 32, 10], [784, 100, 50, 10], [5, 3], [7, 1, 1, 4]])
def test_mlp_param_count_equals_the_problem_dimension(sizes):
    Z, Y, c = _synthetic(3, 4, (sizes[0],), classes=sizes[-1])
    assert NNProblem(mlp(sizes), Z, Y, c, dtype=DT).d == sol.mlp_param_count(sizes)


@pytest.mark.parametrize("in_ch, classes, side, width",
                         [(1, 10, 8, 16), (1, 10, 28, 16), (3, 10, 32, 8), (2, 5, 12, 4)])
def test_small_cnn_param_count_equals_the_problem_dimension(in_ch, classes, side, width):
    Z, Y, c = _synthetic(2, 3, (in_ch, side, side), classes=classes)
    prob = NNProblem(small_cnn(in_ch, classes, side=side, width=width), Z, Y, c, dtype=DT)
    assert prob.d == sol.small_cnn_param_count(in_ch, classes, side=side, width=width)


@pytest.mark.parametrize("dtype, bytes_per", [(torch.float32, 4), (torch.float64, 8)])
@pytest.mark.parametrize("tensors", [3, 4])
def test_stacked_state_bytes_equal_the_memory_estimate(dtype, bytes_per, tensors):
    Z, Y, c = _synthetic(7, 5, (64,))
    prob = NNProblem(mlp([64, 16, 10]), Z, Y, c, dtype=dtype)
    assert prob.memory_estimate(4, state_tensors=tensors)["parameters"] == \
        sol.stacked_state_bytes(7, sol.mlp_param_count([64, 16, 10]), tensors, bytes_per)


def test_mutation_param_count_without_biases_is_caught():
    sizes = [64, 16, 10]
    Z, Y, c = _synthetic(2, 3, (64,))
    no_bias = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))      # a wrong count: weights only
    assert NNProblem(mlp(sizes), Z, Y, c, dtype=DT).d != no_bias

# ------------------------------------------------------------------------------------- nn-ex-loop


@pytest.mark.parametrize("activation, lam", [("relu", 0.0), ("tanh", 0.3)])
def test_loop_equals_both_stacked_paths(activation, lam):
    Z, Y, c = _synthetic(5, 9, (12,))
    net = mlp([12, 7, 10], activation=activation)
    probs = {p: NNProblem(copy.deepcopy(net), Z, Y, c, lam=lam, dtype=DT, path=p) for p in ("mlp", "vmap")}
    X = probs["mlp"].initial_point(1) + 0.2 * torch.randn(5, probs["mlp"].d, generator=torch.Generator().manual_seed(2),
                                                          dtype=DT)
    G = sol.per_client_grads(net, Z, Y, c, X, lam=lam)
    for p in probs.values():
        assert torch.allclose(G, p.grad(X), rtol=0, atol=1e-12)


def test_loop_equals_the_vmap_path_for_a_cnn_on_digits():
    X, y = load_digits_dataset()
    Z, Y, c = pad_clients(X, y, dirichlet(y, 4, 0.5, seed=0, min_size=5))
    Z = Z.reshape(4, Z.shape[1], 1, 8, 8)
    net = small_cnn(1, 10, side=8, width=4)
    prob = NNProblem(net, Z, Y, c, dtype=DT)
    Xs = prob.initial_point(0) + 0.05 * torch.randn(4, prob.d, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert prob.path == "vmap"
    assert torch.allclose(sol.per_client_grads(net, Z, Y, c, Xs), prob.grad(Xs), rtol=0, atol=1e-12)


def test_mutation_loop_averaging_the_padding_is_caught():
    Z, Y, c = _synthetic(4, 8, (6,))
    net = mlp([6, 5, 10])
    prob = NNProblem(copy.deepcopy(net), Z, Y, c, dtype=DT)
    X = prob.stack(prob.initial_point(0))
    m_max = torch.full_like(c, Z.shape[1])                       # wrong: every client averaged over m_max rows
    wrong = sol.per_client_grads(net, Z, Y, m_max, X)
    right = sol.per_client_grads(net, Z, Y, c, X)
    assert torch.allclose(right, prob.grad(X), rtol=0, atol=1e-12)
    assert (wrong - prob.grad(X)).abs().max() > 1e-3

# -------------------------------------------------------------------------------- nn-ex-dirichlet

N_PER_CLASS, N_CLASSES, N_CLIENTS, DRAWS = 4000, 5, 10, 80


def _collision_samples(alpha, seed=0):
    """sum_k (H_kc / N_c)^2 for every class of DRAWS draws of hetlab's dirichlet partitioner."""
    labels = np.repeat(np.arange(N_CLASSES), N_PER_CLASS)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(DRAWS):
        H = label_histogram(labels, dirichlet(labels, N_CLIENTS, alpha, seed=rng, min_size=0), N_CLASSES)
        out.extend(((H / H.sum(0)) ** 2).sum(0))
    return np.array(out)


# |sum (H/N)^2 - sum p^2| <= 2/N + n/N^2 since |H - N p| <= 1 (rounded cumulative boundaries)
ROUNDING = 2.0 / N_PER_CLASS + N_CLIENTS / N_PER_CLASS ** 2


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_same_client_probability_by_monte_carlo_over_the_partitioner(alpha):
    mean, lo, hi = mc_interval(_collision_samples(alpha))
    pred = sol.same_client_probability(alpha, N_CLIENTS)
    assert lo - ROUNDING <= pred <= hi + ROUNDING, (lo, pred, hi)
    assert abs(sol.effective_clients_per_class(alpha, N_CLIENTS) * pred - 1) < 1e-15


def test_same_client_probability_limits_and_the_empirical_helper():
    assert abs(sol.same_client_probability(1e9, 20) - 1 / 20) < 1e-8
    assert abs(sol.same_client_probability(1e-9, 20) - 1) < 1e-7
    labels = np.repeat(np.arange(3), 50)
    parts = dirichlet(labels, 6, 0.3, seed=4)
    H = label_histogram(labels, parts, 3)
    direct = [sum((np.sum(labels[p] == c) / 50) ** 2 for p in parts) for c in range(3)]
    assert np.allclose(sol.empirical_same_client_probability(H), direct, rtol=0, atol=1e-15)


def test_mutation_dirichlet_formulas_are_caught():
    samples = _collision_samples(1.0, seed=1)
    mean, lo, hi = mc_interval(samples)
    assert lo - ROUNDING <= sol.same_client_probability(1.0, N_CLIENTS) <= hi + ROUNDING
    for wrong in (1.0 / (1.0 + N_CLIENTS * 1.0),            # the (1 + alpha) numerator forgotten
                  1.0 / N_CLIENTS,                           # the IID value
                  (1.0 + 1.0) / (N_CLIENTS * (1.0 + 1.0))):  # Var p without the 1/n^2 of the mean
        assert not (lo - ROUNDING <= wrong <= hi + ROUNDING)

# ------------------------------------------------------------------------------------- nn-ex-bias

LAM, K_B = 0.1, 5


@pytest.fixture(scope="module")
def logistic_setting():
    X, y = load_digits_dataset()
    Z, Y, c = pad_clients(X, y, dirichlet(y, 8, 0.5, seed=3, min_size=20))
    prob = NNProblem(logistic(64, 10), Z, Y, c, lam=LAM, dtype=DT)
    q = prob.weights.numpy()
    x_star, G, H = sol.logistic_optimum(Z, Y, c, q, LAM, 10)
    return prob, q, x_star, G, H, sol.local_eigh(H)


def test_logistic_optimum_gradients_and_hessians_against_hetlab(logistic_setting):
    prob, q, x_star, G, H, _ = logistic_setting
    xs = torch.as_tensor(x_star)
    assert float(prob.global_grad(xs).norm()) < 1e-10
    assert np.abs(G - prob.local_grads(xs).numpy()).max() < 1e-12
    # Hessian-vector products by central differences of hetlab's gradients
    rng = np.random.default_rng(0)
    h = 1e-5
    for i in (0, 5):
        V = rng.standard_normal((6, prob.d))
        Xp = torch.as_tensor(x_star + h * V)
        Xm = torch.as_tensor(x_star - h * V)
        idx = torch.full((6,), i, dtype=torch.long)
        fd = ((prob.grad(Xp, idx) - prob.grad(Xm, idx)) / (2 * h)).numpy()
        assert np.abs(fd - V @ H[i]).max() < 1e-7 * (1 + np.abs(fd).max())


def _hetlab_fedavg_fixed_point(prob, lr, K, x_start, Qbar):
    """The fixed point of hetlab's FedAvg round (Delta = 0 to round-off); Qbar only preconditions."""
    meth, orc, comm = FedAvg(lr, K), Oracle(prob), SimulatedComm(prob.n)
    x = torch.as_tensor(x_start)
    for _ in range(60):
        delta = (x - meth.step(meth.init(x, prob), orc, comm, None)["x"]).numpy()
        if np.linalg.norm(delta) < 1e-14 * np.linalg.norm(x_start):
            return x.numpy()
        x = x - torch.as_tensor(np.linalg.solve(Qbar, delta))
    raise AssertionError("the preconditioned iteration did not reach FedAvg's fixed point")


@pytest.fixture(scope="module")
def fedavg_biases(logistic_setting):
    prob, q, x_star, G, H, eig = logistic_setting
    out = {}
    for lr in (0.04, 0.02):
        off = sol.fedavg_offset_quadratic(H, G, q, lr, K_B, eig=eig)
        Qbar = sol.fedavg_jacobian_quadratic(H, q, lr, K_B, eig=eig)
        out[lr] = (_hetlab_fedavg_fixed_point(prob, lr, K_B, x_star + off, Qbar) - x_star, off)
    return out


def _rel(measured, predicted):
    return np.linalg.norm(measured - predicted) / np.linalg.norm(measured)


def test_fedavg_bias_of_a_one_layer_network_follows_the_quadratic_model(fedavg_biases, logistic_setting):
    prob, q, x_star, G, H, _ = logistic_setting
    errs = [_rel(*fedavg_biases[lr]) for lr in (0.04, 0.02)]
    assert errs[1] < 0.03 and 0.4 < errs[1] / errs[0] < 0.6          # O(eta) relative error: halves with eta
    first = [_rel(fedavg_biases[lr][0], sol.fedavg_offset_first_order(H, G, q, lr, K_B)) for lr in (0.04, 0.02)]
    assert first[1] < 0.05 and first[1] < 0.75 * first[0]
    assert np.linalg.norm(fedavg_biases[0.02][0]) > 0.01              # a real bias, not round-off


def test_quadratic_model_is_exact_for_quadratics():
    rng = np.random.default_rng(1)
    n, d = 5, 4
    A = np.array([(lambda M: M @ M.T + 0.3 * np.eye(d))(rng.standard_normal((d, d))) for _ in range(n)])
    A /= np.linalg.eigvalsh(A).max()
    B = rng.standard_normal((n, d))
    prob = QuadraticProblem.from_minimizers(A, B)
    xs = prob.x_star.numpy()
    G = prob.local_grads(prob.x_star).numpy()
    q = prob.weights.numpy()
    for lr, K in ((0.3, 3), (0.1, 10)):
        off = sol.fedavg_offset_quadratic(A, G, q, lr, K)
        x = _hetlab_fedavg_fixed_point(prob, lr, K, xs, sol.fedavg_jacobian_quadratic(A, q, lr, K))
        assert np.abs(x - xs - off).max() < 1e-12


def test_mutation_first_order_bias_with_K_instead_of_K_minus_1_is_caught(fedavg_biases, logistic_setting):
    prob, q, x_star, G, H, _ = logistic_setting
    Abar = np.einsum("i,ijk->jk", q, H)
    v = np.einsum("i,ijk,ik->j", q, H, G)
    errs = [_rel(fedavg_biases[lr][0], 0.5 * K_B * lr * np.linalg.solve(Abar, v)) for lr in (0.04, 0.02)]
    assert errs[1] > 0.15 and errs[1] > 0.75 * errs[0]               # does not vanish with eta
    # and the limit "plain average of the local minimisers b_i" (long local runs, Q_i -> I) is far off
    b = np.array([x_star - np.linalg.solve(Hi, gi) for Hi, gi in zip(H, G)])
    assert _rel(fedavg_biases[0.02][0], q @ b - x_star) > 1.0

# -------------------------------------------------------------------------------- nn-ex-consensus


def _shared_hessian_problem(n=16, d=4, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    A = Q @ np.diag(np.linspace(0.2, 3.0, d)) @ Q.T
    B = rng.standard_normal((n, d))
    return A, B, QuadraticProblem.from_minimizers(np.broadcast_to(A, (n, d, d)).copy(), B)


@pytest.mark.parametrize("topology", ["ring", "torus", "complete", "hypercube"])
def test_heterogeneity_term_equals_hetlab_dsgd_fixed_point(topology):
    A, B, prob = _shared_hessian_problem()
    topo = make_topology(topology, 16)
    meth = DSGD(0.1, topo)
    st, orc, comm = meth.init(torch.zeros(4, dtype=DT), prob), Oracle(prob), SimulatedComm(16)
    for _ in range(2500):
        st = meth.step(st, orc, comm, None)
    xi2 = consensus_distance_sq(st["X"])
    G = prob.local_grads(st["X"].mean(0)).numpy()
    pred = sol.dsgd_consensus_quasi_static(topo.W_numpy(), G, A, 0.1)
    assert pred["noise"] == 0.0
    assert abs(xi2 - pred["total"]) <= 1e-10 * max(pred["total"], 1e-12) + 1e-14


@pytest.mark.parametrize("topology", ["ring", "torus"])
def test_noise_term_equals_hetlab_exact_stationary_moments(topology):
    from proofs_check.c7_critical_consensus_distance import library_stationary
    A, B, _ = _shared_hessian_problem(seed=1)
    n, d, s2, eta = 16, 4, 0.7, 0.1
    W = make_topology(topology, n).W_numpy()
    _, xi2, _, _ = library_stationary(W, np.broadcast_to(A, (n, d, d)).copy(), B, eta=eta, s2=s2)
    G = A @ (B.mean(0) - B).T                                          # grad f_i(x*) = A (x* - b_i), x* = mean b
    pred = sol.dsgd_consensus_quasi_static(W, G.T, A, eta, [np.sqrt(s2) * np.eye(d)] * n)
    assert abs(xi2 - pred["total"]) <= 1e-9 * pred["total"]
    assert pred["noise"] > 0.05 * pred["total"]                        # both terms matter here


def test_identity_hessian_reduces_to_the_consensus_chapter():
    from hetlab import closed_forms_consensus as cfc
    rng = np.random.default_rng(2)
    n, d = 16, 3
    B = rng.standard_normal((n, d))
    for name in ("ring", "torus"):
        W = make_topology(name, n).W_numpy()
        G = B.mean(0) - B                                              # grad f_i(x*) with A = I
        pred = sol.dsgd_consensus_quasi_static(W, G, np.eye(d), 0.05)["total"]
        assert abs(pred - cfc.stationary_consensus_sq(W, B, 0.05, "atc")) < 1e-12 * pred


def test_mutations_of_the_consensus_formula_are_caught():
    from proofs_check.c7_critical_consensus_distance import library_stationary
    A, B, _ = _shared_hessian_problem(seed=1)
    n, d, s2, eta = 16, 4, 0.7, 0.1
    W = make_topology("ring", n).W_numpy()
    _, xi2, _, _ = library_stationary(W, np.broadcast_to(A, (n, d, d)).copy(), B, eta=eta, s2=s2)
    G = (A @ (B.mean(0) - B).T).T
    lam, U = np.linalg.eigh(W)
    ev, V = np.linalg.eigh(A)
    lj, Um = lam[:-1, None], U[:, :-1]                                  # drop lambda = 1 (the largest)
    Gh = (Um.T @ G) @ V
    no_curv = ((eta * lj / (1 - lj)) ** 2 * Gh ** 2).sum() / n + (eta ** 2 * lj ** 2 * s2 / (1 - lj ** 2)).sum() * d / n
    phi_par = lj - eta * ev                                             # the parallel ordering's coefficients
    parallel = ((eta / (1 - phi_par)) ** 2 * Gh ** 2).sum() / n + (eta ** 2 * s2 / (1 - phi_par ** 2)).sum() / n
    right = sol.dsgd_consensus_quasi_static(W, G, A, eta, [np.sqrt(s2) * np.eye(d)] * n)["total"]
    assert abs(right - xi2) <= 1e-9 * xi2
    for wrong in (no_curv, parallel):
        assert abs(wrong - xi2) > 0.02 * xi2
