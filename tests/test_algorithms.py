"""Algorithms on exact quadratics: closed-form fixed points (THEORY A1, A3, A4), equivalences,
server optimizers, partial participation, purity of ``step`` and input validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.linalg import matrix_power

from conftest import DT, rel_err, run_rounds
from hetlab import exact
from hetlab.algorithms import (GD, FedAvg, FedProx, LocalSGD, MinibatchSGD, Scaffold, ServerAdam,
                               ServerMomentum, ServerSGD, sample_clients)
from hetlab.comm import SimulatedComm
from hetlab.problems import (GaussianNoiseOracle, MinibatchOracle, Oracle, pl_family,
                             random_least_squares, random_quadratics)


# ------------------------------------------------------------------------------ closed forms
def _np(P):
    return P.A.numpy(), P.b.numpy(), P.weights.numpy()


def x_fedavg(P, eta, K):
    """THEORY A1: x_FA = (sum q_i Q_i)^-1 sum q_i Q_i b_i, Q_i = I - (I - eta A_i)^K."""
    A, b, q = _np(P)
    eye = np.eye(P.d)
    Q = [eye - matrix_power(eye - eta * A[i], K) for i in range(P.n)]
    return np.linalg.solve(sum(q[i] * Q[i] for i in range(P.n)), sum(q[i] * Q[i] @ b[i] for i in range(P.n)))


def qbar_fedavg(P, eta, K):
    A, _, q = _np(P)
    eye = np.eye(P.d)
    return sum(q[i] * (eye - matrix_power(eye - eta * A[i], K)) for i in range(P.n))


def x_fedprox(P, mu):
    """THEORY A3: x_FP = (sum q_i P_i)^-1 sum q_i P_i b_i, P_i = (A_i + mu I)^-1 A_i."""
    A, b, q = _np(P)
    Pm = [np.linalg.solve(A[i] + mu * np.eye(P.d), A[i]) for i in range(P.n)]
    return np.linalg.solve(sum(q[i] * Pm[i] for i in range(P.n)), sum(q[i] * Pm[i] @ b[i] for i in range(P.n)))


def gd_path(P, lr, steps, x0=None):
    """Plain gradient descent on f, computed by hand in numpy: [x_0, x_1, ..., x_steps]."""
    A, b, q = _np(P)
    Abar = np.einsum("i,ijk->jk", q, A)
    cbar = np.einsum("i,ijk,ik->j", q, A, b)
    x = np.zeros(P.d) if x0 is None else np.array(x0, dtype=float)
    out = [x.copy()]
    for _ in range(steps):
        x = x - lr * (Abar @ x - cbar)
        out.append(x.copy())
    return out


def _final_x(method, P, rounds, **kw):
    return run_rounds(method, P, rounds, **kw)["x"].numpy()


# ------------------------------------------------------------------------------ FedAvg (A1)
def test_fedavg_one_local_step_is_gd(a1_problem):
    P = a1_problem
    ref = gd_path(P, 0.1, 20)
    xs_fa, xs_gd = [], []
    run_rounds(FedAvg(0.1, 1, server_opt=ServerSGD(1.0)), P, 20, every=lambda r, s: xs_fa.append(s["x"].numpy()))
    run_rounds(GD(0.1), P, 20, every=lambda r, s: xs_gd.append(s["x"].numpy()))
    for r in range(20):
        np.testing.assert_allclose(xs_fa[r], ref[r + 1], rtol=0, atol=1e-13)
        np.testing.assert_allclose(xs_gd[r], ref[r + 1], rtol=0, atol=1e-13)
    assert np.linalg.norm(ref[20] - ref[0]) > 0.1  # the iterates did move


def test_fedavg_converges_to_closed_form_fixed_point(a1_problem):
    P = a1_problem
    eta, K = 0.1, 10
    xfa = x_fedavg(P, eta, K)
    x = _final_x(FedAvg(eta, K), P, 200)
    assert rel_err(x, xfa) <= 1e-12
    bias = np.linalg.norm(xfa - P.x_star.numpy())
    assert bias >= 1e-3  # THEORY A1 (ii): the bias is visibly nonzero (reference 0.0438)
    assert bias == pytest.approx(0.0438, abs=5e-4)
    verdict = exact.must_differ(bias, np.linalg.norm(_final_x(Scaffold(eta, K), P, 300) - P.x_star.numpy()))
    assert verdict["passed"]


def test_fedavg_fixed_point_independent_of_server_lr(a1_problem):
    P = a1_problem
    xfa = x_fedavg(P, 0.1, 10)
    x_half = _final_x(FedAvg(0.1, 10, server_opt=ServerSGD(0.5)), P, 400)
    x_one = _final_x(FedAvg(0.1, 10, server_opt=ServerSGD(1.0)), P, 200)
    assert rel_err(x_half, xfa) <= 1e-12 and rel_err(x_one, xfa) <= 1e-12
    assert np.linalg.norm(x_half - x_one) <= 1e-12


@pytest.mark.parametrize("case", ["K=1", "identical_hessians", "identical_minimisers"])
def test_fedavg_special_cases_have_no_bias(case):
    if case == "K=1":
        P, K = random_quadratics(8, 5, seed=0), 1
    elif case == "identical_hessians":
        P, K = random_quadratics(8, 5, hessian_heterogeneity=0.0, seed=0), 10
    else:
        P, K = random_quadratics(8, 5, minimizer_heterogeneity=0.0, common_minimizer=np.arange(5.0), seed=0), 10
    xs = P.x_star.numpy()
    assert np.linalg.norm(x_fedavg(P, 0.1, K) - xs) <= 1e-12
    rounds = 2000 if K == 1 else 300
    assert np.linalg.norm(_final_x(FedAvg(0.1, K), P, rounds) - xs) <= 1e-12
    if case != "identical_minimisers":
        assert P.zeta_star_sq > 1e-2  # heterogeneous, yet unbiased


def test_fedavg_affine_map_rate_and_fixed_point(a1_problem):
    """M1 on FedAvg: rho(M) = rho(I - eta_g Qbar) and the fixed point is x_FA (THEORY A1)."""
    P = a1_problem
    eta, K = 0.1, 10
    Qbar = qbar_fedavg(P, eta, K)
    for eta_g in (1.0, 0.5):
        M, c, unflatten = exact.method_affine_map(FedAvg(eta, K, server_opt=ServerSGD(eta_g)), P)
        np.testing.assert_allclose(M, np.eye(P.d) - eta_g * Qbar, rtol=0, atol=1e-13)
        rho = exact.spectral_radius(M)
        assert rho == pytest.approx(exact.spectral_radius(np.eye(P.d) - eta_g * Qbar), rel=1e-12)
        fp = unflatten(exact.affine_fixed_point(M, c))
        assert rel_err(fp["x"].numpy(), x_fedavg(P, eta, K)) <= 1e-12
    # eta_g = 1: rho(M) = rho(mean_i (I - eta A_i)^K)
    A, _, q = _np(P)
    Mref = sum(q[i] * matrix_power(np.eye(P.d) - eta * A[i], K) for i in range(P.n))
    M, _, _ = exact.method_affine_map(FedAvg(eta, K), P)
    assert exact.spectral_radius(M) == pytest.approx(exact.spectral_radius(Mref), rel=1e-12)
    assert exact.spectral_radius(M) == pytest.approx(0.372, abs=5e-3)  # THEORY A1 reference


def test_fedavg_empirical_rate_matches_spectral_radius(a1_problem):
    P = a1_problem
    xfa = x_fedavg(P, 0.1, 10)
    errs = []
    run_rounds(FedAvg(0.1, 10), P, 60, every=lambda r, s: errs.append(np.linalg.norm(s["x"].numpy() - xfa)))
    M, _, _ = exact.method_affine_map(FedAvg(0.1, 10), P)
    assert abs(exact.empirical_rate(errs) - exact.spectral_radius(M)) <= 2e-2


def test_local_sgd_alias():
    assert LocalSGD is FedAvg


# ------------------------------------------------------------------------------ SCAFFOLD (A4)
def _scaffold_local_iterates(prev, new, K, eta):
    """Every client's last local iterate y_i, read off option II's control update
    c_i^+ = c_i - c + (x - y_i) / (K eta)."""
    return prev["x"] - K * eta * (new["c_i"] - prev["c_i"] + prev["c"])


@pytest.mark.parametrize("warm", [True, False])
def test_scaffold_identical_hessians_is_gd(warm):
    """A4 (b): identical Hessians (n=6, d=4, K=5, R=20): the server model after round r equals
    K r steps of GD on f. With a warm start every client's local path *is* the GD path; with a
    cold start only the server model is (the map is linear with one common operator), while the
    clients' local iterates differ (THEORY A4 pitfall 3)."""
    P = random_quadratics(6, 4, hessian_heterogeneity=0.0, seed=3)
    eta, K, R = 0.1, 5, 20
    x0 = np.array([1.0, -2.0, 0.5, 3.0])
    ref = gd_path(P, eta, K * R, x0)
    meth = Scaffold(eta, K, option="II", warm_start=warm)
    comm, oracle = SimulatedComm(P.n), Oracle(P)
    state = meth.init(torch.as_tensor(x0), P)
    spreads = []
    for r in range(1, R + 1):
        new = meth.step(state, oracle, comm, None)
        assert rel_err(new["x"].numpy(), ref[K * r]) <= 1e-12
        Y = _scaffold_local_iterates(state, new, K, eta).numpy()
        spreads.append(max(rel_err(y, ref[K * r]) for y in Y))
        state = new
    assert np.linalg.norm(ref[K * R] - ref[0]) > 1.0
    if warm:
        assert max(spreads) <= 1e-11
    else:
        assert spreads[0] > 1e-2


@pytest.mark.parametrize("option", ["I", "II"])
@pytest.mark.parametrize("warm", [True, False])
def test_scaffold_converges_to_x_star(a1_problem, option, warm):
    P = a1_problem
    x = _final_x(Scaffold(0.1, 10, option=option, warm_start=warm), P, 300)
    assert np.linalg.norm(x - P.x_star.numpy()) <= 1e-10


def test_scaffold_affine_map_conserves_invariant_and_fixed_point_is_x_star(a1_problem):
    """M1 on SCAFFOLD. The flattened state (x, c, c_i) carries the redundant server control c, and
    the round map conserves c - sum_i q_i c_i exactly, so the full-state map has eigenvalue 1.
    On the invariant set (c = sum_i q_i c_i, i.e. the state (x, c_i)) it contracts to x = x_star."""
    P = a1_problem
    n, d = P.n, P.d
    meth = Scaffold(0.1, 10)
    M, c, unflatten = exact.method_affine_map(meth, P)
    template = meth.init(torch.zeros(d, dtype=DT), P)
    # linear functional l(z) = c - sum_i q_i c_i on the flattened state (keys in insertion order)
    offs, off = {}, 0
    for k, v in template.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            offs[k] = off
            off += v.numel()
    assert off == M.shape[0] == d + d + n * d
    ell = np.zeros((d, off))
    ell[:, offs["c"]:offs["c"] + d] = np.eye(d)
    for i in range(n):
        ell[:, offs["c_i"] + i * d:offs["c_i"] + (i + 1) * d] = -P.weights[i].item() * np.eye(d)
    np.testing.assert_allclose(ell @ M, ell, atol=1e-12)  # conserved for every state
    np.testing.assert_allclose(ell @ c, 0.0, atol=1e-12)
    assert exact.spectral_radius(M) == pytest.approx(1.0, abs=1e-9)

    # the reduced map on (x, c_i), with c = sum_i q_i c_i
    comm, oracle = SimulatedComm(n), Oracle(P)

    def reduced(z):
        x, ci = torch.as_tensor(z[:d]), torch.as_tensor(z[d:]).reshape(n, d)
        st = {"x": x, "round": 0, "c_i": ci, "c": P.weights @ ci}
        new = meth.step(st, oracle, comm, None)
        return np.concatenate([new["x"].numpy(), new["c_i"].reshape(-1).numpy()])

    Mr, cr = exact.affine_map(reduced, d + n * d)
    assert exact.spectral_radius(Mr) < 0.9
    fp = exact.affine_fixed_point(Mr, cr)
    assert np.linalg.norm(fp[:d] - P.x_star.numpy()) <= 1e-12
    np.testing.assert_allclose(fp[d:].reshape(n, d), P.local_grads(P.x_star).numpy(), atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "skewed"])
@pytest.mark.parametrize("option", ["I", "II"])
def test_scaffold_partial_participation_invariant_and_convergence(weights, option):
    q = None if weights == "uniform" else np.random.default_rng(1).uniform(0.5, 2.0, 8)
    P = random_quadratics(8, 5, seed=0, weights=q)
    selected = []

    def check(r, s):
        inv = (s["c"] - P.weights @ s["c_i"]).norm().item()
        assert inv <= 1e-12, f"invariant c = sum q_i c_i broken at round {r}: {inv:.3g}"
        selected.append(s["c_i"].clone())

    state = run_rounds(Scaffold(0.1, 5, option=option, participation=0.5), P, 400, seed=7, every=check)
    # sampling really was partial: some client controls stayed unchanged in a round
    assert any((a == b).all(1).any() for a, b in zip(selected, selected[1:10]))
    assert np.linalg.norm(state["x"].numpy() - P.x_star.numpy()) <= 1e-10


def test_scaffold_partial_participation_server_lr_keeps_fixed_point():
    P = random_quadratics(8, 5, seed=0, weights=np.random.default_rng(2).uniform(0.5, 2.0, 8))
    x = _final_x(Scaffold(0.05, 5, server_opt=ServerSGD(0.7), participation=3), P, 800, seed=3)
    assert np.linalg.norm(x - P.x_star.numpy()) <= 1e-10


# ------------------------------------------------------------------------------ FedProx (A3)
@pytest.mark.parametrize("mu", [0.1, 1.0, 10.0])
def test_fedprox_exact_fixed_point(a1_problem, mu):
    P = a1_problem
    xfp = x_fedprox(P, mu)
    rounds = {0.1: 150, 1.0: 200, 10.0: 1000}[mu]
    assert rel_err(_final_x(FedProx(mu), P, rounds), xfp) <= 1e-11
    assert np.linalg.norm(xfp - P.x_star.numpy()) > 1e-3
    M, c, unflatten = exact.method_affine_map(FedProx(mu), P)
    assert rel_err(unflatten(exact.affine_fixed_point(M, c))["x"].numpy(), xfp) <= 1e-12


def test_fedprox_inexact_solver_has_another_fixed_point(a1_problem):
    P = a1_problem
    mu = 1.0
    meth = FedProx(mu, solver="steps", lr=0.1, local_steps=5)
    M, c, unflatten = exact.method_affine_map(meth, P)
    assert exact.spectral_radius(M) < 1
    fp_steps = unflatten(exact.affine_fixed_point(M, c))["x"].numpy()
    assert np.linalg.norm(fp_steps - x_fedprox(P, mu)) > 1e-3
    # the run converges to the affine fixed point of the inexact method
    assert rel_err(_final_x(meth, P, 400), fp_steps) <= 1e-11
    # closed form of the inexact solver: K steps on f_i + mu/2 |y - x|^2 from y = x give
    # y_K = x - Q_i (x - b_i'), an affine map; its fixed point is what M1 returned
    A, b, q = _np(P)
    eye = np.eye(P.d)
    T = [matrix_power(eye - 0.1 * (A[i] + mu * eye), 5) for i in range(P.n)]
    S = [np.linalg.solve(A[i] + mu * eye, A[i]) for i in range(P.n)]  # y-fixed point weight on b_i
    # one local solve maps x to y = T x + (I - T) (A + mu)^-1 (A b + mu x)
    Mx = sum(q[i] * (T[i] + (eye - T[i]) @ np.linalg.solve(A[i] + mu * eye, mu * eye)) for i in range(P.n))
    cx = sum(q[i] * (eye - T[i]) @ S[i] @ b[i] for i in range(P.n))
    np.testing.assert_allclose(M, Mx, rtol=0, atol=1e-13)
    np.testing.assert_allclose(c, cx, rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------ server optimizers
@pytest.mark.parametrize("server", [ServerMomentum(1.0, 0.5), ServerMomentum(0.5, 0.9, nesterov=True),
                                    ServerAdam(0.01, beta2=0.999)], ids=["momentum", "nesterov", "adam"])
def test_server_optimizers_compose_with_fedavg(a1_problem, server):
    P = a1_problem
    xfa = x_fedavg(P, 0.1, 10)
    rounds = 1200 if isinstance(server, ServerAdam) else 300
    state = run_rounds(FedAvg(0.1, 10, server_opt=server), P, rounds)
    assert rel_err(state["x"].numpy(), xfa) <= 1e-9  # the server optimizer does not remove the bias
    assert any(k.startswith("server_") for k in state)


@pytest.mark.parametrize("server", [ServerMomentum(0.5, 0.5), ServerAdam(0.01, beta2=0.999)], ids=["momentum", "adam"])
def test_server_optimizers_compose_with_scaffold(a1_problem, server):
    P = a1_problem
    rounds = 1200 if isinstance(server, ServerAdam) else 300
    x = _final_x(Scaffold(0.1, 10, server_opt=server), P, rounds)
    assert np.linalg.norm(x - P.x_star.numpy()) <= 1e-10


def test_server_momentum_update_rule():
    x = torch.tensor([1.0, 2.0], dtype=DT)
    d1, d2 = torch.tensor([0.5, -1.0], dtype=DT), torch.tensor([0.1, 0.2], dtype=DT)
    opt = ServerMomentum(0.3, 0.9)
    s = opt.init(x)
    x1, s = opt.update(x, d1, s)
    x2, s = opt.update(x1, d2, s)
    torch.testing.assert_close(x2, x - 0.3 * d1 - 0.3 * (0.9 * d1 + d2))
    nest = ServerMomentum(0.3, 0.9, nesterov=True)
    y1, _ = nest.update(x, d1, nest.init(x))
    torch.testing.assert_close(y1, x - 0.3 * (d1 + 0.9 * d1))


def test_server_adam_update_rule():
    x = torch.tensor([1.0, -2.0], dtype=DT)
    d = torch.tensor([0.5, -0.25], dtype=DT)
    opt = ServerAdam(0.1, 0.9, 0.99, 1e-8)
    x1, s = opt.update(x, d, opt.init(x))
    # first bias-corrected Adam step is lr * sign(delta) (up to eps)
    torch.testing.assert_close(x1, x - 0.1 * d / (d.abs() + 1e-8), rtol=1e-14, atol=1e-14)
    assert float(s["server_t"]) == 1.0


@pytest.mark.parametrize("kw", [dict(lr=0.0), dict(lr=1.0, beta=1.0)])
def test_server_optimizer_validation(kw):
    with pytest.raises(ValueError):
        ServerMomentum(**kw)
    with pytest.raises(ValueError):
        ServerSGD(0.0)
    with pytest.raises(ValueError):
        ServerAdam(0.1, beta1=1.0)


# ------------------------------------------------------------------------------ partial participation
def _fedavg_path(P, seed, rounds=15):
    xs = []
    run_rounds(FedAvg(0.1, 3, participation=0.5), P, rounds, seed=seed, every=lambda r, s: xs.append(s["x"].clone()))
    return torch.stack(xs)


def test_fedavg_partial_participation_reproducible(a1_problem):
    a, b, c = (_fedavg_path(a1_problem, s) for s in (5, 5, 6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    full = []
    run_rounds(FedAvg(0.1, 3), a1_problem, 15, every=lambda r, s: full.append(s["x"].clone()))
    assert not torch.allclose(a, torch.stack(full))


def test_sample_clients():
    g = torch.Generator().manual_seed(0)
    assert sample_clients(5, 5, g) is None
    counts = torch.zeros(6)
    for _ in range(600):
        idx = sample_clients(6, 2, g)
        assert len(set(idx.tolist())) == 2 and torch.equal(idx, idx.sort().values)
        counts[idx] += 1
    assert counts.min() > 150  # every client is sampled (uniformly, ~200 times each)


@pytest.mark.parametrize("make", [lambda: FedAvg(0.1, 3, participation=2), lambda: FedProx(1.0, participation=2),
                                  lambda: Scaffold(0.1, 3, participation=2)], ids=["fedavg", "fedprox", "scaffold"])
def test_partial_participation_is_unbiased(monkeypatch, make):
    """The mean of one round over every client subset S (|S| = 2, weights n/m q_i) equals the
    full-participation round (skewed client weights)."""
    from itertools import combinations

    import hetlab.algorithms.base as base_mod
    P = random_quadratics(5, 3, seed=1, weights=[1.0, 2.0, 3.0, 1.0, 0.5])
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    comm, oracle = SimulatedComm(P.n), Oracle(P)
    part = make()
    full = make()
    full.participation = None
    ref = full.step(full.init(x0, P), oracle, comm, None)["x"]
    subsets = list(combinations(range(P.n), 2))
    acc = torch.zeros(3, dtype=DT)
    for S in subsets:
        monkeypatch.setattr(base_mod, "sample_clients", lambda n, m, g, S=S: torch.tensor(S))
        acc += part.step(part.init(x0, P), oracle, comm, None)["x"]
    torch.testing.assert_close(acc / len(subsets), ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("make", [lambda: FedAvg(0.1, 3, participation=0.5),
                                  lambda: FedProx(1.0, participation=0.5),
                                  lambda: Scaffold(0.1, 3, participation=0.5)], ids=["fedavg", "fedprox", "scaffold"])
def test_translation_equivariance(make):
    """Shifting every local minimiser and x0 by v shifts every iterate by v (same seed), also under
    partial participation with skewed weights: the server must aggregate sum_S w_i (x - y_i), whose
    weights need not sum to one, not x - sum_S w_i y_i."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0.3, 3.0, 8)
    P = random_quadratics(8, 4, seed=5, weights=q)
    v = np.array([3.0, -2.0, 1.0, 5.0])
    Pv = random_quadratics(8, 4, seed=5, weights=q, common_minimizer=v)
    np.testing.assert_allclose(Pv.b.numpy(), P.b.numpy() + v, atol=1e-14)
    x0 = np.array([0.5, 0.5, -1.0, 0.0])
    a, b = [], []
    run_rounds(make(), P, 30, x0=x0, seed=2, every=lambda r, s: a.append(s["x"].numpy()))
    run_rounds(make(), Pv, 30, x0=x0 + v, seed=2, every=lambda r, s: b.append(s["x"].numpy()))
    for xa, xb in zip(a, b):
        np.testing.assert_allclose(xb - v, xa, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ minibatch SGD
def test_minibatch_sgd_with_exact_oracle_is_gd(a1_problem):
    P = a1_problem
    ref = gd_path(P, 0.2, 25)
    a = []
    run_rounds(MinibatchSGD(0.2, batches=10), P, 25, every=lambda r, s: a.append(s["x"].numpy()))
    for r in range(25):
        np.testing.assert_allclose(a[r], ref[r + 1], rtol=0, atol=1e-13)


def test_minibatch_sgd_noise_is_averaged():
    """With Gaussian noise, the one-round update variance is lr^2 sigma^2 / (n B) (uniform q, full participation)."""
    P = random_quadratics(4, 3, seed=2)
    sigma, lr, B = 1.0, 0.1, 5
    meth = MinibatchSGD(lr, batches=B)
    oracle = GaussianNoiseOracle(P, sigma)
    comm = SimulatedComm(P.n)
    x0 = torch.zeros(3, dtype=DT)
    st = meth.init(x0, P)
    mean = GD(lr).step(st, Oracle(P), comm, None)["x"]
    g = torch.Generator().manual_seed(0)
    sq = np.array([float(((meth.step(st, oracle, comm, g)["x"] - mean) ** 2).sum()) for _ in range(6000)])
    assert exact.mc_agrees(sq, lr ** 2 * sigma ** 2 / (P.n * B), rel_tol=0.05)


def test_gd_ignores_stochastic_oracle(a1_problem):
    P = a1_problem
    a = run_rounds(GD(0.1), P, 5, oracle=GaussianNoiseOracle(P, 1.0), seed=0)["x"]
    b = run_rounds(GD(0.1), P, 5)["x"]
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------ purity of step
def _snapshot(state):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


METHODS = {
    "fedavg": lambda: FedAvg(0.1, 3),
    "fedavg_partial_momentum": lambda: FedAvg(0.1, 3, server_opt=ServerMomentum(0.5, 0.5), participation=0.5),
    "fedavg_adam": lambda: FedAvg(0.1, 3, server_opt=ServerAdam(0.01)),
    "fedprox_exact": lambda: FedProx(1.0),
    "fedprox_steps": lambda: FedProx(1.0, solver="steps", lr=0.1, local_steps=3),
    "scaffold": lambda: Scaffold(0.1, 3),
    "scaffold_partial_I": lambda: Scaffold(0.1, 3, option="I", participation=0.5),
    "minibatch_sgd": lambda: MinibatchSGD(0.1, batches=2, participation=0.5),
    "gd": lambda: GD(0.1),
}


@pytest.mark.parametrize("make", METHODS.values(), ids=METHODS.keys())
def test_step_does_not_modify_input_state(a1_problem, make):
    P = a1_problem
    meth = make()
    oracle = Oracle(P) if isinstance(meth, FedProx) and meth.solver == "exact" else GaussianNoiseOracle(P, 0.5)
    comm = SimulatedComm(P.n)
    g = torch.Generator().manual_seed(0)
    state = meth.init(torch.ones(P.d, dtype=DT), P)
    state = meth.step(state, oracle, comm, g)  # a non-trivial state (momenta, controls)
    before = _snapshot(state)
    new = meth.step(state, oracle, comm, g)
    assert state.keys() == before.keys()
    for k, v in before.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(state[k], v), k
        else:
            assert state[k] == v, k
    assert new["round"] == state["round"] + 1
    assert not torch.equal(new["x"], state["x"])


# ------------------------------------------------------------------------------ validation
def test_step_size_past_stability_limit_raises(a1_problem):
    P = a1_problem
    lr = 2.01 / P.L
    for meth in (FedAvg(lr, 2), Scaffold(lr, 2), FedProx(0.5, solver="steps", lr=2.0 / (P.L + 0.5), local_steps=2)):
        with pytest.raises(ValueError, match="stability"):
            meth.init(torch.zeros(P.d, dtype=DT), P)
    with pytest.raises(ValueError, match="stability"):
        MinibatchSGD(2.01 / P.L_global).init(torch.zeros(P.d, dtype=DT), P)
    FedAvg(1.99 / P.L, 2).init(torch.zeros(P.d, dtype=DT), P)  # just below is fine
    FedAvg(3.0 / P.L, 2, check_stability=False).init(torch.zeros(P.d, dtype=DT), P)
    with pytest.raises(ValueError, match="positive"):
        FedAvg(0.0, 2).init(torch.zeros(P.d, dtype=DT), P)


def test_bad_local_steps_and_options():
    with pytest.raises(ValueError, match="local_steps"):
        FedAvg(0.1, 0)
    with pytest.raises(ValueError, match="local_steps"):
        Scaffold(0.1, 0)
    with pytest.raises(ValueError, match="option"):
        Scaffold(0.1, 2, option="III")
    assert Scaffold(0.1, 2, option="ii").option == "II"
    with pytest.raises(ValueError, match="solver"):
        FedProx(1.0, solver="newton")
    with pytest.raises(ValueError, match="lr"):
        FedProx(1.0, solver="steps")
    with pytest.raises(ValueError, match="mu"):
        FedProx(0.0)
    with pytest.raises(ValueError, match="batches"):
        MinibatchSGD(0.1, batches=0)


@pytest.mark.parametrize("participation", [0, 0.0, 1.5, -0.5, 9])
def test_bad_participation(a1_problem, participation):
    P = a1_problem
    meth = FedAvg(0.1, 2, participation=participation)
    st = meth.init(torch.zeros(P.d, dtype=DT), P)
    with pytest.raises(ValueError, match="participation"):
        meth.step(st, Oracle(P), SimulatedComm(P.n), torch.Generator())


def test_wrong_x0_shape(a1_problem):
    for meth in (FedAvg(0.1, 2), Scaffold(0.1, 2), FedProx(1.0), GD(0.1)):
        with pytest.raises(ValueError, match=r"x0 must have shape \[5\]"):
            meth.init(torch.zeros(4, dtype=DT), a1_problem)


def test_fedprox_exact_needs_prox():
    P = pl_family(4, seed=0)
    with pytest.raises(TypeError, match="proximal"):
        FedProx(1.0).init(torch.zeros(1, dtype=DT), P)
    # the inexact solver works on any problem
    x = run_rounds(FedProx(1.0, solver="steps", lr=0.05, local_steps=3), P, 100, x0=[2.5])["x"]
    assert abs(float(x)) < 1e-10  # unshifted PL family: common minimiser 0, no bias


def test_fedprox_exact_rejects_stochastic_oracle(a1_problem):
    P = a1_problem
    with pytest.raises(ValueError, match="exact"):
        run_rounds(FedProx(1.0), P, 1, oracle=GaussianNoiseOracle(P, 1.0))


def test_fedavg_on_least_squares_with_minibatch_oracle():
    """Local SGD with a minibatch oracle runs on a padded finite-sum problem and gets close to x_star."""
    P = random_least_squares(4, 10, 3, counts=[10, 6, 8, 5], lam=0.1, seed=0)
    errs = []
    run_rounds(FedAvg(0.05, 5), P, 150, oracle=MinibatchOracle(P, 2),
               every=lambda r, s: errs.append(float((s["x"] - P.x_star).norm())))
    assert np.isfinite(errs).all()
    assert np.mean(errs[-20:]) < 0.2 * float(P.x_star.norm())
