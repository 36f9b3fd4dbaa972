"""Tests of GradAlign / FedGA, local reshuffled SGD over client minibatches, the alignment closed forms,
the log-cosh problem and the alignment metrics.

Reductions to known methods (beta = 0 is FedAvg exactly, K = 1 and beta = 0 is GD), the displacement at the
round's start point (THEORY B4 pitfall 2), composition with server optimizers, the exact enumeration of the
orders against Monte Carlo (3 standard errors) and against one step for K = 1, and the closed forms
against autograd. Seeds are fixed and appear in the test names or ids.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetlab import closed_forms_alignment as ca
from hetlab.algorithms import (GD, FedAvg, FedGA, GradAlign, LocalReshuffledSGD, ServerMomentum,
                               ServerSGD)
from hetlab.algorithms import client_minibatch as cm
from hetlab.algorithms.gradalign import alignment_metrics
from hetlab.comm import SimulatedComm
from hetlab.exact import affine_fixed_point, mc_interval, method_affine_map
from hetlab.problems import GaussianNoiseOracle, Oracle, QuadraticProblem, random_quadratics
from hetlab.problems.logcosh import LogCoshRegression, random_logcosh
from hetlab.run import run

from conftest import run_rounds  # noqa: E402

DT = torch.float64


@pytest.fixture
def quad():
    return random_quadratics(5, 3, seed=3)


@pytest.fixture
def mb():
    return cm.random_client_minibatch_quadratics(3, 3, 3, spectrum=(0.5, 1.6), seed=4)


def _one_round(method, problem, x, oracle=None, seed=None):
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    state = method.init(torch.as_tensor(x, dtype=DT), problem)
    return method.step(state, oracle or Oracle(problem), SimulatedComm(problem.n), gen)

# ----------------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("participation", [None, 0.6])
def test_fedga_beta_zero_is_fedavg_exactly(quad, participation):
    noisy = GaussianNoiseOracle(quad, 0.3)
    for server in (ServerSGD(0.7), ServerMomentum(0.5, 0.8)):
        a = run_rounds(FedGA(0.1, 4, 0.0, server_opt=server, participation=participation), quad, 7, oracle=noisy,
                       seed=11)
        b = run_rounds(FedAvg(0.1, 4, server_opt=server, participation=participation), quad, 7, oracle=noisy, seed=11)
        assert torch.equal(a["x"], b["x"])


def test_gradalign_beta_zero_is_gd(quad):
    a = run_rounds(GradAlign(0.2, 0.0), quad, 25)
    b = run_rounds(GD(0.2), quad, 25)
    assert torch.allclose(a["x"], b["x"], rtol=0, atol=1e-15)


def test_gradalign_is_fedga_with_one_step(quad):
    x = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    for disp in ("paper", "flipped"):
        a = _one_round(GradAlign(0.1, 0.4, displacement=disp), quad, x)["x"]
        b = _one_round(FedGA(0.1, 1, 0.4, displacement=disp), quad, x)["x"]
        assert torch.equal(a, b)


def test_identical_clients_make_the_displacement_vanish():
    A = np.broadcast_to(np.diag([1.0, 2.0, 0.5]), (4, 3, 3)).copy()
    b = np.broadcast_to(np.array([1.0, -1.0, 0.5]), (4, 3)).copy()
    p = QuadraticProblem.from_minimizers(A, b)
    x = torch.tensor([2.0, 0.0, -1.0], dtype=DT)
    assert torch.allclose(_one_round(FedGA(0.1, 3, 5.0), p, x)["x"], _one_round(FedAvg(0.1, 3), p, x)["x"],
                          atol=1e-15, rtol=0)

# -------------------------------------------------------------------------- the displacement


def _manual_fedga_round(problem, x, lr, K, beta, sign=1.0):
    """FedGA by hand in NumPy: displacement from the gradients at x, K local GD steps, average."""
    A, c = problem.A.numpy(), problem.c.numpy()
    G = np.einsum("iab,b->ia", A, x) - c
    Y = x[None] + sign * beta * (G - G.mean(0))
    for _ in range(K):
        Y = Y - lr * (np.einsum("iab,ib->ia", A, Y) - c)
    return Y.mean(0)


@pytest.mark.parametrize("K, beta", [(1, 0.3), (4, 0.2), (10, 1.0)])
def test_fedga_round_matches_manual_computation(quad, K, beta):
    x = np.array([1.0, -2.0, 0.5])
    for sign, disp in ((1.0, "paper"), (-1.0, "flipped")):
        got = _one_round(FedGA(0.1, K, beta, displacement=disp), quad, x)["x"].numpy()
        np.testing.assert_allclose(got, _manual_fedga_round(quad, x, 0.1, K, beta, sign), rtol=0, atol=1e-14)


def test_displacement_uses_the_start_point_gradients_not_the_displaced_ones():
    """THEORY B4 pitfall 2: gradients at the displaced point give a different (wrong) round."""
    p = random_logcosh(6, 3, 4, seed=1)
    x = torch.tensor([0.5, -0.3, 1.0, 0.2], dtype=DT)
    method = GradAlign(0.1, 0.5)
    X = p.stack(x)
    X0 = method.displaced_starts(X, Oracle(p), SimulatedComm(p.n), None, p.weights, None)
    G = p.local_grads(x)
    assert torch.allclose(X0, X + 0.5 * (G - G.mean(0)), atol=1e-15, rtol=0)
    # the mean displacement is zero, so the pseudo-gradient is the mean local progress
    assert (X0 - X).mean(0).abs().max() < 1e-15
    G_wrong = p.grad(X0)
    X0_wrong = X + 0.5 * (G_wrong - G_wrong.mean(0))
    assert (X0_wrong - X0).abs().max() > 1e-3
    x1 = _one_round(method, p, x)["x"]
    assert torch.allclose(x1, x - 0.1 * p.grad(X0).mean(0), atol=1e-15, rtol=0)
    assert (x1 - (x - 0.1 * p.grad(X0_wrong).mean(0))).abs().max() > 1e-5


def test_displacement_gradients_full_or_oracle(quad):
    """'full' (default) displaces with the exact client gradients even under a noisy oracle; 'oracle' uses a draw."""
    noisy = GaussianNoiseOracle(quad, 1.0)
    X = quad.stack(torch.tensor([1.0, -0.5, 0.3], dtype=DT))
    comm, w = SimulatedComm(quad.n), quad.weights
    G = quad.grad(X)
    exact = X + 0.4 * (G - G.mean(0))
    full = FedGA(0.1, 2, 0.4).displaced_starts(X, noisy, comm, None, w, torch.Generator().manual_seed(0))
    assert torch.allclose(full, exact, atol=1e-15, rtol=0)
    draw = FedGA(0.1, 2, 0.4, displacement_grad="oracle").displaced_starts(X, noisy, comm, None, w,
                                                                          torch.Generator().manual_seed(0))
    assert (draw - exact).abs().max() > 1e-3
    assert (w @ (draw - X)).abs().max() < 1e-14
    with pytest.raises(ValueError, match="displacement_grad"):
        FedGA(0.1, 2, 0.4, displacement_grad="minibatch")


def test_partial_participation_displacements_have_zero_weighted_mean(quad):
    method = FedGA(0.1, 2, 0.5, participation=3)
    gen = torch.Generator().manual_seed(5)
    m, idx, w = method._select(quad, gen)
    X = SimulatedComm(quad.n).broadcast(torch.ones(3, dtype=DT), m)
    X0 = method.displaced_starts(X, Oracle(quad), SimulatedComm(quad.n), idx, w, gen)
    assert idx is not None and len(idx) == 3
    assert (w @ (X0 - X)).abs().max() < 1e-15


def test_gradalign_quadratic_identity_and_flipped_sign(quad):
    A, c = quad.A.numpy(), quad.c.numpy()
    x = np.array([2.0, 1.0, -1.0])
    plus = ca.gradalign_step(A, c, x, 0.05, 0.4)
    minus = ca.gradalign_step(A, c, x, 0.05, -0.4)
    got = _one_round(GradAlign(0.1, 0.4, server_opt=ServerSGD(0.5)), quad, x)["x"].numpy()  # gamma = 0.5 * 0.1
    got_f = _one_round(GradAlign(0.1, 0.4, displacement="flipped", server_opt=ServerSGD(0.5)), quad, x)["x"].numpy()
    np.testing.assert_allclose(got, plus, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got_f, minus, rtol=0, atol=1e-14)
    assert np.linalg.norm(got_f - plus) > 1e-3

# --------------------------------------------------------------------------- server optimizers


def test_fedga_composes_with_server_momentum(quad):
    lr, K, beta, sb = 0.1, 3, 0.3, 0.7
    mom = FedGA(lr, K, beta, server_opt=ServerMomentum(0.8, sb))
    plain = FedGA(lr, K, beta)  # server lr 1: x - x^+ is the pseudo-gradient
    x0 = torch.tensor([1.0, 2.0, -1.0], dtype=DT)
    state = mom.init(x0, quad)
    comm, oracle = SimulatedComm(quad.n), Oracle(quad)
    m = torch.zeros(3, dtype=DT)
    for _ in range(4):
        x = state["x"]
        delta = x - plain.step(plain.init(x, quad), oracle, comm, None)["x"]
        m = sb * m + delta
        state = mom.step(state, oracle, comm, None)
        assert torch.allclose(state["x"], x - 0.8 * m, atol=1e-14, rtol=0)
        assert torch.allclose(state["server_m"], m, atol=1e-14, rtol=0)
    # the server optimizer changes the path, not the fixed point
    M1, c1, u1 = method_affine_map(mom, quad)
    M2, c2, u2 = method_affine_map(plain, quad)
    x_mom = u1(affine_fixed_point(M1, c1))["x"].numpy()
    x_plain = u2(affine_fixed_point(M2, c2))["x"].numpy()
    np.testing.assert_allclose(x_mom, x_plain, rtol=0, atol=1e-12)


def test_gradalign_fixed_point_minimises_the_modified_loss(quad):
    M, c, unflatten = method_affine_map(GradAlign(0.1, 0.2), quad)
    x_fix = unflatten(affine_fixed_point(M, c))["x"].numpy()
    H, h = ca.alignment_modified_loss(quad.A.numpy(), quad.c.numpy(), 0.2)
    np.testing.assert_allclose(x_fix, ca.minimizer(H, h), rtol=0, atol=1e-12)

# ---------------------------------------------------------------------------------- validation


def test_validation_messages(quad, mb):
    with pytest.raises(ValueError, match="beta must be"):
        FedGA(0.1, 2, -0.1)
    with pytest.raises(ValueError, match="displacement"):
        FedGA(0.1, 2, 0.1, displacement="code")
    with pytest.raises(ValueError, match="local_steps"):
        FedGA(0.1, 0, 0.1)
    with pytest.raises(ValueError, match="minibatch_order"):
        FedGA(0.1, 3, 0.1, minibatch_order="sorted")
    with pytest.raises(ValueError, match="stability limit"):
        GradAlign(5.0, 0.1).init(torch.zeros(3, dtype=DT), quad)
    with pytest.raises(TypeError, match="minibatch structure"):
        FedGA(0.1, 3, 0.1, minibatch_order="exact").init(torch.zeros(3, dtype=DT), quad)
    with pytest.raises(ValueError, match="multiple"):
        FedGA(0.01, 4, 0.1, minibatch_order="exact").init(torch.zeros(3, dtype=DT), mb)
    with pytest.raises(ValueError, match="order"):
        LocalReshuffledSGD(0.1, order="sorted")
    with pytest.raises(TypeError, match="minibatch structure"):
        LocalReshuffledSGD(0.1).init(torch.zeros(3, dtype=DT), quad)
    with pytest.raises(ValueError, match="exact oracle"):
        _one_round(LocalReshuffledSGD(0.01), mb, np.zeros(3), oracle=GaussianNoiseOracle(mb, 0.1), seed=0)

# ------------------------------------------------------------------- client minibatch problems


def test_client_minibatch_problem_structure(mb):
    A, c = mb.A_batches, mb.c_batches
    assert mb.n == 3 and mb.K == mb.num_batches == 3 and mb.d == 3
    torch.testing.assert_close(mb.A, A.mean(1))
    x = torch.tensor([0.2, -0.4, 1.3], dtype=DT)
    X = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([2, 0, 2, 1])
    batches = torch.tensor([1, 2, 0, 1])
    want = torch.stack([A[i, k] @ X[r] - c[i, k] for r, (i, k) in enumerate(zip(idx.tolist(), batches.tolist()))])
    torch.testing.assert_close(mb.batch_grad(X, batches, idx), want, rtol=0, atol=1e-14)
    # client gradient = mean of its minibatch gradients
    torch.testing.assert_close(mb.local_grads(x), mb.batch_grads_at(x).mean(1), rtol=0, atol=1e-14)
    # variances agree with the closed forms and with the core identity
    An, cn = A.numpy(), c.numpy()
    assert mb.between_client_variance(x) == pytest.approx(ca.between_client_variance(An, cn, x.numpy()), rel=1e-13)
    assert mb.within_client_variance(x) == pytest.approx(ca.within_client_variance(An, cn, x.numpy()), rel=1e-13)
    Gb = mb.batch_grads_at(x)
    total = float((Gb - Gb.mean((0, 1))).pow(2).sum(-1).mean())
    assert total == pytest.approx(mb.between_client_variance(x) + mb.within_client_variance(x), rel=1e-12)
    assert mb.L >= mb.L_client - 1e-12
    # closed forms of hetlab.closed_forms work on it (client minimisers b_i are set)
    assert mb.b is not None and torch.allclose(mb.grad(mb.b), torch.zeros(3, 3, dtype=DT), atol=1e-12)


def test_from_problems_layout():
    probs = [random_quadratics(4, 2, seed=s) for s in range(3)]
    p = cm.ClientMinibatchQuadratics.from_problems(probs)
    for k, q in enumerate(probs):
        torch.testing.assert_close(p.A_batches[:, k], q.A)
        torch.testing.assert_close(p.c_batches[:, k], q.c)
    x = torch.tensor([0.3, -0.7], dtype=DT)
    torch.testing.assert_close(p.local_grads(x), torch.stack([q.local_grads(x) for q in probs]).mean(0))
    torch.testing.assert_close(p.global_loss(x), torch.stack([q.global_loss(x) for q in probs]).mean(0))
    with pytest.raises(ValueError, match="every minibatch problem"):
        cm.ClientMinibatchQuadratics.from_problems([probs[0], random_quadratics(3, 2, seed=0)])


def test_order_sequences():
    s = cm.all_order_sequences(3)
    assert s.shape == (6, 3) and len({tuple(r) for r in s.tolist()}) == 6
    s2 = cm.all_order_sequences(3, epochs=2)
    assert s2.shape == (36, 6) and len({tuple(r) for r in s2.tolist()}) == 36
    assert cm.num_order_sequences(3, 2) == 36
    for r in s2.tolist():
        assert sorted(r[:3]) == [0, 1, 2] and sorted(r[3:]) == [0, 1, 2]

# --------------------------------------------------------------------- exact expectation over orders


@pytest.mark.parametrize("epochs", [1, 2])
def test_exact_enumeration_equals_monte_carlo_mean(mb, epochs):
    x = np.array([1.0, -2.0, 0.5])
    lr = 0.1
    exact = _one_round(LocalReshuffledSGD(lr, epochs=epochs, order="exact"), mb, x)["x"].numpy()
    method = LocalReshuffledSGD(lr, epochs=epochs, order="random")
    state = method.init(torch.as_tensor(x), mb)
    comm, oracle, gen = SimulatedComm(mb.n), Oracle(mb), torch.Generator().manual_seed(123)
    draws = np.array([method.step(state, oracle, comm, gen)["x"].numpy() for _ in range(3000)])
    for j in range(3):
        _, lo, hi = mc_interval(draws[:, j])
        assert lo <= exact[j] <= hi, (j, exact[j], lo, hi)
    # the draws really differ between orders (the test is not vacuous)
    assert draws.std(0).max() > 1e-3


def test_exact_enumeration_by_brute_force(mb):
    """The stacked-copies enumeration equals an explicit loop over clients and all 3! orders."""
    import itertools
    x = np.array([0.4, 0.1, -1.2])
    lr = 0.07
    A, c = mb.A_batches.numpy(), mb.c_batches.numpy()
    ends = []
    for i in range(mb.n):
        acc = np.zeros(3)
        for perm in itertools.permutations(range(3)):
            y = x.copy()
            for k in perm:
                y = y - lr * (A[i, k] @ y - c[i, k])
            acc += y / 6
        ends.append(acc)
    got = _one_round(LocalReshuffledSGD(lr, order="exact"), mb, x)["x"].numpy()
    np.testing.assert_allclose(got, np.mean(ends, 0), rtol=0, atol=1e-14)


def test_k1_enumeration_is_one_gradient_step():
    base = random_quadratics(4, 3, seed=2)
    p = cm.ClientMinibatchQuadratics.from_problems([base])
    x = np.array([1.0, 0.5, -0.5])
    got = _one_round(LocalReshuffledSGD(0.2, order="exact"), p, x)["x"].numpy()
    want = x - 0.2 * base.global_grad(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_identical_minibatches_give_local_gd(quad):
    A = quad.A.unsqueeze(1).expand(-1, 3, -1, -1)
    c = quad.c.unsqueeze(1).expand(-1, 3, -1)
    p = cm.ClientMinibatchQuadratics(A, c)
    x = np.array([1.0, -1.0, 2.0])
    for order in cm.ORDERS:
        got = _one_round(LocalReshuffledSGD(0.1, order=order), p, x, seed=0)["x"]
        want = _one_round(FedAvg(0.1, 3), quad, x)["x"]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_fixed_order_differs_from_the_expectation(mb):
    x = np.array([1.0, -2.0, 0.5])
    a = _one_round(LocalReshuffledSGD(0.1, order="exact"), mb, x)["x"]
    b = _one_round(LocalReshuffledSGD(0.1, order="fixed"), mb, x)["x"]
    assert (a - b).abs().max() > 1e-4


def test_fedga_with_minibatches_matches_manual(mb):
    """FedGA's minibatch path: displacement from the client full gradients, then reshuffled passes."""
    x = np.array([0.5, -1.0, 1.5])
    lr, beta = 0.05, 0.2
    got = _one_round(FedGA(lr, 3, beta, minibatch_order="exact"), mb, x)["x"].numpy()
    G = mb.local_grads(torch.as_tensor(x)).numpy()
    X0 = x[None] + beta * (G - G.mean(0))
    Y = cm.reshuffled_local_steps(torch.as_tensor(X0), Oracle(mb), None, lr, order="exact")
    np.testing.assert_allclose(got, Y.numpy().mean(0), rtol=0, atol=1e-15)
    # beta = 0 is local reshuffled SGD
    a = _one_round(FedGA(lr, 6, 0.0, minibatch_order="exact"), mb, x)["x"]
    b = _one_round(LocalReshuffledSGD(lr, epochs=2, order="exact"), mb, x)["x"]
    assert torch.equal(a, b)

# ---------------------------------------------------------------------------------- closed forms


def _autograd_modified_grad(p: cm.ClientMinibatchQuadratics, x, a, b, w):
    xt = torch.as_tensor(x, dtype=DT).clone().requires_grad_(True)
    Gb = torch.einsum("nkij,j->nki", p.A_batches, xt) - p.c_batches
    Gi = Gb.mean(1)
    g = Gi.mean(0)
    vb = ((Gi - g) ** 2).sum(1).mean()
    vw = ((Gb - Gi[:, None]) ** 2).sum(2).mean()
    F = p.global_loss(xt) + a * (g @ g) + b * vb + w * vw
    (gr,) = torch.autograd.grad(F, xt)
    return gr.numpy()


@pytest.mark.parametrize("coefs", [(0.0, 0.0, 0.0), (0.3, 0.0, 0.0), (0.0, -0.7, 0.0), (0.0, 0.0, 0.4),
                                   (0.1, 0.2, -0.3)])
def test_modified_loss_gradient_matches_autograd(mb, coefs):
    H, h = ca.modified_loss(mb.A_batches.numpy(), mb.c_batches.numpy(), *coefs)
    for x in (np.zeros(3), np.array([1.0, -2.0, 0.5])):
        np.testing.assert_allclose(H @ x - h, _autograd_modified_grad(mb, x, *coefs), rtol=0, atol=1e-12)


def test_named_modified_losses(mb):
    A, c = mb.A_batches.numpy(), mb.c_batches.numpy()
    eta, K = 0.01, 3

    def same(l1, l2):
        np.testing.assert_allclose(l1[0], l2[0], atol=1e-15)
        np.testing.assert_allclose(l1[1], l2[1], atol=1e-15)

    same(ca.local_sgd_modified_loss(A, c, eta, K), ca.modified_loss(A, c, eta / 4, -(K - 1) * eta / 4, eta / 4))
    same(ca.local_sgd_modified_loss(A, c, eta, K, vb_sign=1), ca.modified_loss(A, c, eta / 4, (K - 1) * eta / 4, eta / 4))
    same(ca.sgd_modified_loss(A, c, eta), ca.modified_loss(A, c, eta / 4, eta / 4, eta / 4))
    same(ca.fedga_modified_loss(A, c, eta, K, K * eta / 2), ca.sgd_modified_loss(A, c, eta))
    same(ca.fedga_modified_loss(A, c, eta, K, 0.0), ca.local_sgd_modified_loss(A, c, eta, K))
    same(ca.alignment_modified_loss(A, c, 0.2), ca.modified_loss(A, c, 0.0, 0.1, 0.0))
    # client-level arrays are K = 1: V_w vanishes
    Ac, cc = mb.A.numpy(), mb.c.numpy()
    assert ca.within_client_variance(Ac, cc, np.ones(3)) == 0.0
    same(ca.modified_loss(Ac, cc, 0.0, 0.0, 5.0), ca.modified_loss(Ac, cc))
    with pytest.raises(ValueError, match="expected A"):
        ca.modified_loss(np.zeros((2, 3)), np.zeros(2))
    ok, lam = ca.is_positive_definite(np.diag([1.0, -0.5]))
    assert not ok and lam == -0.5

# ------------------------------------------------------------------------------------- log-cosh


def test_logcosh_gradients_hessians_and_minimiser():
    p = random_logcosh(6, 3, 4, seed=0)
    X = torch.randn(6, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    Xr = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.loss(Xr).sum(), Xr)
    torch.testing.assert_close(p.grad(X), g, rtol=0, atol=1e-14)
    for i in range(6):
        H = torch.autograd.functional.hessian(lambda v: p.loss(v[None], torch.tensor([i]))[0], X[i])
        torch.testing.assert_close(p.hessians(X)[i], H, rtol=0, atol=1e-13)
    x = X[0]
    np.testing.assert_allclose(p.local_grads(x).numpy(), ca.logcosh_grads(p.Z.numpy(), p.y.numpy(), x.numpy()),
                               rtol=0, atol=1e-14)
    assert float(p.global_grad(p.x_star).norm()) < 1e-12
    assert p.mu_local > 0 and p.L > 0 and p.mu == 0.0
    # overflow-free loss at huge residuals
    big = p.loss(torch.full((6, 4), 1e3, dtype=DT))
    assert torch.isfinite(big).all()
    with pytest.raises(ValueError, match="shape"):
        LogCoshRegression(np.zeros((2, 3)), np.zeros(2))

# ------------------------------------------------------------------------------------- metrics


def test_alignment_metrics_in_the_run_loop(quad):
    hist, _ = run(FedGA(0.1, 3, 0.15), quad, 5, metrics=alignment_metrics, progress=False, seed=0)
    rec = hist.records[-1]
    for key in ("suboptimality", "dist_to_opt", "gradient_variance", "mean_pairwise_cosine", "V_b",
                "gradalign_variance", "gradalign_normalized_variance"):
        assert key in rec and math.isfinite(rec[key]), key
    x0 = torch.zeros(3, dtype=DT)
    G = quad.local_grads(x0)
    first = hist.records[0]
    assert first["V_b"] == pytest.approx(float(((G - G.mean(0)) ** 2).sum(1).mean()), rel=1e-13)
    assert first["V_b"] == first["gradient_variance"]
    cos = np.array([[float(G[i] @ G[j] / (G[i].norm() * G[j].norm())) for j in range(5)] for i in range(5)])
    assert first["mean_pairwise_cosine"] == pytest.approx((cos.sum() - 5) / 20, rel=1e-12)
    assert first["gradalign_variance"] == pytest.approx(float((G - G.mean(0)).norm(dim=1).mean()), rel=1e-13)
