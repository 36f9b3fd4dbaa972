"""Tests of ``hetlab.core_subnetwork`` (alternating core / full training) and of check G2.

The library side: the core bases, the quadratic with a core subspace and its closed forms, the gradient
implementation of the alternating scheme against the matrix product of its two affine maps, the
small-step limit, and the stacked low-rank-core MLP against a plain single-network loop. The check side:
its verdict and controls, another seed, and mutation tests (a wrong product order, an unmasked core step, a
wrong small-step weight) that must make it fail.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import proofs_check
from hetlab import exact
from hetlab.core_subnetwork import (AlternatingCoreTraining, CoreQuadratic, LowRankCoreMLP, block_core,
                                    cycle_affine_map, cycle_fixed_point, cycle_rate, first_order_rate, joint_lambda,
                                    linear_model_problem, low_rank_core, random_core_quadratic, schedule_masks,
                                    train_lowrank_core_mlp, unvec, vec)

G2 = proofs_check.get("G2")


def _orth(rng, m, r):
    return np.linalg.qr(rng.standard_normal((m, r)))[0]


# ------------------------------------------------------------------------------------ the core

def test_block_core_and_validation():
    E = block_core(5, 2)
    assert E.shape == (5, 2) and np.array_equal(E.T @ E, np.eye(2))
    assert np.array_equal(E @ np.array([3.0, 4.0]), [3, 4, 0, 0, 0])
    for bad in (0, 5, 7):
        with pytest.raises(ValueError, match="proper"):
            block_core(5, bad)


def test_low_rank_core_is_the_vec_of_U0_C_V0T():
    rng = np.random.default_rng(1)
    U0, V0 = _orth(rng, 6, 2), _orth(rng, 4, 3)
    E = low_rank_core(U0, V0)
    assert E.shape == (24, 6)
    assert np.abs(E.T @ E - np.eye(6)).max() < 1e-14
    C = rng.standard_normal((2, 3))
    assert np.abs(E @ vec(C) - vec(U0 @ C @ V0.T)).max() < 1e-14
    W = rng.standard_normal((6, 4))
    assert np.array_equal(unvec(vec(W), (6, 4)), W)
    with pytest.raises(ValueError, match="orthonormal"):
        low_rank_core(2 * U0, V0)


def test_core_quadratic_validation():
    E = block_core(3, 1)
    with pytest.raises(ValueError, match="positive definite"):
        CoreQuadratic(np.diag([1.0, 0.0, 2.0]), np.ones(3), E)
    with pytest.raises(ValueError, match="symmetric"):
        CoreQuadratic(np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]), np.ones(3), E)
    with pytest.raises(ValueError, match="b must"):
        CoreQuadratic(np.eye(3), np.ones(2), E)
    with pytest.raises(ValueError, match="proper core"):
        CoreQuadratic(np.eye(3), np.ones(3), np.eye(3))


def test_linear_model_problem_matches_the_matrix_loss():
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((30, 5)), rng.standard_normal((30, 3))
    prob = linear_model_problem(X, Y, _orth(rng, 5, 2), _orth(rng, 3, 2), reg=0.1)
    W = rng.standard_normal((5, 3))
    direct = 0.5 / 30 * np.sum((X @ W - Y) ** 2) + 0.05 * np.sum(W ** 2)
    const = 0.5 / 30 * np.sum(Y ** 2)                         # f drops the constant term
    assert abs(prob.f(vec(W)) + const - direct) < 1e-12
    G = X.T @ (X @ W - Y) / 30 + 0.1 * W
    assert np.abs(prob.grad(vec(W)) - vec(G)).max() < 1e-12


def test_closed_forms_are_stationary_points():
    prob = random_core_quadratic(7, 3, seed=3)
    assert np.abs(prob.grad(prob.x_star)).max() < 1e-12
    # the core trained alone: the gradient of f_core(u) = E^T grad f(E u) vanishes
    assert np.abs(prob.E.T @ prob.grad(prob.embed(prob.u_core_star))).max() < 1e-12
    assert prob.f_core_star <= prob.f_split(prob.x_star) + 1e-15
    lam = 0.3
    x = prob.joint_minimizer(lam)
    P = prob.P
    g = (1 - lam) * P @ prob.grad(P @ x) + lam * prob.grad(x)   # gradient of (1-lam) f(Px) + lam f(x)
    assert np.abs(g).max() < 1e-12
    assert np.abs(prob.joint_minimizer(1.0) - prob.x_star).max() < 1e-12
    with pytest.raises(ValueError, match="lam"):
        prob.joint_minimizer(0.0)


# ------------------------------------------------------------------------------------ the scheme

def test_core_step_moves_only_the_core_and_uses_the_masked_model():
    prob = random_core_quadratic(6, 2, seed=4)
    alg = AlternatingCoreTraining(0.3, 1, 1)
    x = np.random.default_rng(0).standard_normal(6)
    y = alg.core_step(prob, x)
    assert np.abs((np.eye(6) - prob.P) @ (y - x)).max() == 0.0          # rest untouched
    u = prob.split(x)
    assert np.abs(prob.split(y) - (u - 0.3 * (prob.H_core @ u - prob.b_core))).max() < 1e-14


def test_single_phase_schedules():
    prob = random_core_quadratic(6, 2, seed=5)
    eta = 0.8 / prob.L
    x0 = np.random.default_rng(1).standard_normal(6)
    # q = 0: the core trained alone inside the full model, the rest stays at x0's rest
    x = AlternatingCoreTraining(eta, 1, 0).run(prob, x0, 600)[-1]
    assert np.abs(prob.split(x) - prob.u_core_star).max() < 1e-10
    assert np.abs((np.eye(6) - prob.P) @ (x - x0)).max() == 0.0
    # p = 0: gradient descent on the full model
    assert np.abs(AlternatingCoreTraining(eta, 0, 1).run(prob, x0, 600)[-1] - prob.x_star).max() < 1e-10


@pytest.mark.parametrize("p, q, lr_frac, core_frac", [(1, 1, 0.5, 0.5), (3, 2, 0.9, 0.4), (2, 5, 1.5, 1.0)])
def test_cycle_map_is_the_product_of_the_two_affine_maps(p, q, lr_frac, core_frac):
    prob = random_core_quadratic(7, 3, seed=6)
    eta, eta_c = lr_frac / prob.L, core_frac / prob.L
    alg = AlternatingCoreTraining(eta, p, q, lr_core=eta_c)
    M_imp, c_imp = exact.affine_map(lambda x: alg.cycle(prob, x), prob.d)
    M, c = cycle_affine_map(prob, eta, p, q, lr_core=eta_c)
    assert np.abs(M_imp - M).max() < 1e-12 and np.abs(c_imp - c).max() < 1e-12
    # the other order: q full steps, then p core steps
    M2, c2 = cycle_affine_map(prob, eta, p, q, lr_core=eta_c, order="full_first")

    def reversed_cycle(x):
        for _ in range(q):
            x = alg.full_step(prob, x)
        for _ in range(p):
            x = alg.core_step(prob, x)
        return x

    M2_imp, c2_imp = exact.affine_map(reversed_cycle, prob.d)
    assert np.abs(M2_imp - M2).max() < 1e-12 and np.abs(c2_imp - c2).max() < 1e-12
    # same spectrum (rho(AB) = rho(BA)), different fixed points
    assert abs(exact.spectral_radius(M2) - exact.spectral_radius(M)) < 1e-12
    assert np.linalg.norm(cycle_fixed_point(prob, eta, p, q, eta_c) -
                          cycle_fixed_point(prob, eta, p, q, eta_c, order="full_first")) > 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_real_spectrum_and_bound_for_small_steps(seed):
    prob = random_core_quadratic(8, 3, seed=seed, spectrum=(0.1, 3.0))
    rng = np.random.default_rng(seed)
    p, q = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    eta = rng.uniform(0.1, 1.0) / prob.L
    M, _ = cycle_affine_map(prob, eta, p, q)
    ev = np.linalg.eigvals(M)
    assert np.abs(ev.imag).max() < 1e-8 and ev.real.min() > -1e-12
    assert exact.spectral_radius(M) <= np.max(np.abs(1 - eta * np.linalg.eigvalsh(prob.H))) ** q + 1e-12
    assert cycle_rate(prob, eta, p, q) == exact.spectral_radius(M)


def test_small_step_limit_with_different_core_step_size():
    prob = random_core_quadratic(6, 2, seed=7)
    p, q, ratio = 2, 3, 0.5                      # eta_c = ratio * eta
    lam = joint_lambda(1.0, p, q, ratio)
    assert abs(lam - q / (p * ratio + q)) < 1e-15
    x_lam = prob.joint_minimizer(lam)
    d = [np.linalg.norm(cycle_fixed_point(prob, e, p, q, ratio * e) - x_lam) for e in (0.02, 0.01, 0.005)]
    assert 1.8 < d[0] / d[1] < 2.2 and 1.8 < d[1] / d[2] < 2.2     # O(eta)
    res = [abs(cycle_rate(prob, e, p, q, ratio * e) - first_order_rate(prob, e, p, q, ratio * e))
           for e in (0.02, 0.01, 0.005)]
    assert 3.5 < res[0] / res[1] < 4.5 and 3.5 < res[1] / res[2] < 4.5     # O(eta^2)


def test_errors_on_bad_arguments():
    prob = random_core_quadratic(4, 2, seed=0)
    with pytest.raises(ValueError, match="positive finite"):
        AlternatingCoreTraining(0.0)
    with pytest.raises(ValueError, match="not both zero"):
        AlternatingCoreTraining(0.1, 0, 0)
    with pytest.raises(ValueError, match="order"):
        cycle_affine_map(prob, 0.1, 1, 1, order="sideways")
    with pytest.raises(ValueError, match="does not contract"):
        cycle_fixed_point(prob, 2.5 / prob.L, 1, 1)
    with pytest.raises(ValueError, match="does not contract"):      # q = 0: the rest never moves
        cycle_fixed_point(prob, 0.5 / prob.L, 1, 0)
    with pytest.raises(FloatingPointError, match="diverged"):
        AlternatingCoreTraining(5.0 / prob.L, 1, 1).run(prob, np.ones(4), 2000)


# ------------------------------------------------------------------------ the network illustration

def test_schedule_masks():
    assert schedule_masks("core", 4).tolist() == [0, 0, 0, 0]
    assert schedule_masks("full", 3).tolist() == [1, 1, 1]
    assert schedule_masks((2, 1), 7).tolist() == [0, 0, 1, 0, 0, 1, 0]
    with pytest.raises(ValueError):
        schedule_masks((0, 0), 3)


def test_lowrank_mlp_core_network_and_core_step():
    torch.manual_seed(0)
    net = LowRankCoreMLP([3, 4], d_in=7, width=6, classes=3, rank=2)
    X, y = torch.randn(20, 7, dtype=torch.float64), torch.randint(0, 3, (20,))
    p = {k: v[0] for k, v in net.params.items()}
    h = torch.relu(X @ (p["U"] @ p["V"].T) + p["b1"])
    assert torch.allclose(net.logits(X, torch.zeros(2))[0], h @ p["W2"] + p["b2"], atol=1e-13)
    h_full = torch.relu(X @ (p["U"] @ p["V"].T + p["S"]) + p["b1"])
    assert torch.allclose(net.logits(X, torch.ones(2))[0], h_full @ p["W2"] + p["b2"], atol=1e-13)
    S_before = net.params["S"].clone()
    U_before = net.params["U"].clone()
    net.step(X, y, torch.tensor([0.0, 1.0]), lr=0.1)
    assert torch.equal(net.params["S"][0], S_before[0])           # core step: S untouched
    assert not torch.equal(net.params["S"][1], S_before[1])       # full step moves S
    assert not torch.equal(net.params["U"][0], U_before[0])
    with pytest.raises(ValueError, match="rank"):
        LowRankCoreMLP([0], d_in=7, width=6, classes=3, rank=6)


@pytest.mark.parametrize("mask", [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
def test_lowrank_mlp_manual_gradients_equal_autograd(mask):
    net = LowRankCoreMLP([0, 1, 2], d_in=5, width=7, classes=4, rank=2)
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(25, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (25,), generator=g)
    mask = torch.tensor(mask)
    params = {k: v.clone().requires_grad_(True) for k, v in net.params.items()}
    auto = torch.autograd.grad(net.losses(X, y, mask, params).sum(), [params[k] for k in net.names])
    manual = net.grads(X, y, mask)
    for k, a in zip(net.names, auto):
        assert torch.allclose(manual[k], a, atol=1e-13, rtol=0), k
    # the loss is the library's cross-entropy
    ref = torch.stack([torch.nn.functional.cross_entropy(z, y) for z in net.logits(X, mask)])
    assert torch.allclose(net.losses(X, y, mask), ref, atol=1e-14)


def test_stacked_training_equals_a_single_network_loop():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    Xt, yt = rng.standard_normal((15, 5)), rng.integers(0, 3, 15)
    out = train_lowrank_core_mlp(X, y, Xt, yt, ["core", (2, 1)], seeds=[11, 12], steps=9, lr=0.2, width=6, rank=2,
                                 eval_every=3)
    assert out["steps"].tolist() == [0, 3, 6, 9]
    # an independent loop: one network (seed 12), plain autograd, the 2:1 schedule
    net = LowRankCoreMLP([12], 5, 6, 3, 2)
    params = {k: v[0].clone().requires_grad_(True) for k, v in net.params.items()}
    Xtt, ytt = torch.as_tensor(X), torch.as_tensor(y)
    for t in range(9):
        full = t % 3 == 2
        W1 = params["U"] @ params["V"].T + (params["S"] if full else 0.0)
        z = torch.relu(Xtt @ W1 + params["b1"]) @ params["W2"] + params["b2"]
        loss = torch.nn.functional.cross_entropy(z, ytt)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        with torch.no_grad():
            for (k, v), g in zip(params.items(), grads):
                if g is not None:
                    v -= 0.2 * g
    with torch.no_grad():
        z_core = torch.relu(Xtt @ (params["U"] @ params["V"].T) + params["b1"]) @ params["W2"] + params["b2"]
        core_loss = float(torch.nn.functional.cross_entropy(z_core, ytt))
    assert abs(out["alternate 2:1"]["core_loss"][1, -1] - core_loss) < 1e-12
    # the core-alone runs never touch S, so their full-model loss differs from the core loss
    assert np.all(out["core"]["full_loss"][:, -1] != out["core"]["core_loss"][:, -1])


# ---------------------------------------------------------------------------------------- check G2

@pytest.fixture(scope="module")
def res_g2():
    return G2.run(seed=0)


def test_g2_passes_and_controls_fail(res_g2):
    assert res_g2.passed
    assert len(res_g2.negative_controls) >= 3
    assert all(not c.holds for c in res_g2.negative_controls)
    assert res_g2.headline.name.startswith("(a) block: measured per-cycle contraction")
    d = res_g2.data["block"]
    # (c) the ordering of the three core losses, from the closed forms
    assert d["f_core_alone"] < d["f_split_alt"] < d["f_split_full"]


def test_g2_other_seed():
    assert G2.run(seed=3).passed


def test_g2_figures(res_g2):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    G2.figure(res_g2)
    G2.figure_tradeoff(res_g2)
    plt.close("all")


def test_g2_mutation_wrong_product_order(monkeypatch):
    real = G2.cycle_affine_map

    def swapped(prob, eta, p, q, lr_core=None, order="core_first"):
        return real(prob, eta, p, q, lr_core, "full_first" if order == "core_first" else "core_first")

    monkeypatch.setattr(G2, "cycle_affine_map", swapped)
    assert not G2.run(seed=0).passed


def test_g2_mutation_unmasked_core_step(monkeypatch):
    """A core step that evaluates the gradient of the *full* model (no mask) is block-coordinate GD on f."""
    def unmasked(self, problem, x):
        return x - self.lr_core * (problem.P @ problem.grad(x))

    monkeypatch.setattr(AlternatingCoreTraining, "core_step", unmasked)
    assert not G2.run(seed=0).passed


def test_g2_mutation_wrong_first_order_rate(monkeypatch):
    real = G2.first_order_rate
    monkeypatch.setattr(G2, "first_order_rate", lambda prob, eta, p, q, lr_core=None: real(prob, eta, q, p, lr_core))
    assert not G2.run(seed=0).passed
