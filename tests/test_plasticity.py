"""Tests of ``hetlab.plasticity`` (regularizers against loss of plasticity, exact deep-linear quantities) and of
check G1 (``proofs_check/g1_spectral_regularization_plasticity.py``).

Closed forms are compared with torch autograd, with brute-force computations (Jacobians, sorting, SVD) and with
the library's own iterations; the check is run with its verdicts and controls by name, another seed, and
mutations (a regularizer that does nothing, the wrong sign, a wrong closed form) that must make it fail.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import proofs_check
from hetlab import plasticity as pl
from hetlab.data import load_digits_dataset

G1 = proofs_check.get("G1")
DT = torch.float64


def _rand_layers(rng, shapes):
    return [rng.standard_normal(s) for s in shapes]


# ------------------------------------------------------------------------------------------- regularizers
@pytest.mark.parametrize("k", [1.0, 2.0, 3.0])
def test_spectral_regularizer_value_and_gradient(k):
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((5, 3)), rng.standard_normal((4, 5)) * 0.3]
    val = pl.spectral_regularizer([torch.tensor(W) for W in Ws], k)
    brute = sum((np.linalg.svd(W, compute_uv=False)[0] ** k - 1) ** 2 for W in Ws)
    assert abs(float(val) - brute) < 1e-12
    for W in Ws:
        Wt = torch.tensor(W, requires_grad=True)
        g_auto = torch.autograd.grad(pl.spectral_regularizer([Wt], k), Wt)[0].numpy()
        scale = np.abs(g_auto).max()
        assert np.abs(pl.regularizer_grad("spectral", W, k=k) - g_auto).max() < 1e-13 * scale
        # the torch path of the closed form agrees with the NumPy one
        assert np.abs(pl.regularizer_grad("spectral", torch.tensor(W), k=k).numpy() - g_auto).max() < 1e-13 * scale


def test_spectral_target_and_stack():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((3, 4, 4))
    Wt = torch.tensor(W, requires_grad=True)
    val = sum(pl.spectral_regularizer([Wt[i]], 2.0, target=0.7) for i in range(3))
    g_auto = torch.autograd.grad(val, Wt)[0].numpy()
    assert np.abs(pl.regularizer_grad("spectral", W, k=2.0, target=0.7) - g_auto).max() < 1e-12


@pytest.mark.parametrize("kind", ["wasserstein", "l2_init", "l2"])
def test_other_regularizers_gradients_match_autograd(kind):
    rng = np.random.default_rng(2)
    W, W0 = rng.standard_normal((2, 6, 7)), rng.standard_normal((2, 6, 7))
    Wt = torch.tensor(W, requires_grad=True)
    val = pl.regularizer_value(kind, [Wt[0], Wt[1]], [torch.tensor(W0[0]), torch.tensor(W0[1])])
    g_auto = torch.autograd.grad(val, Wt)[0].numpy()
    assert np.abs(pl.regularizer_grad(kind, W, W0) - g_auto).max() < 1e-12
    assert np.abs(pl.regularizer_grad(kind, torch.tensor(W), torch.tensor(W0)).numpy() - g_auto).max() < 1e-12


def test_wasserstein_is_at_most_l2_init_and_blind_to_permutations():
    rng = np.random.default_rng(3)
    W0 = rng.standard_normal((8, 8))
    for _ in range(20):
        W = rng.standard_normal((8, 8))
        w2 = float(pl.wasserstein_init_regularizer([torch.tensor(W)], [torch.tensor(W0)]))
        l2 = float(pl.l2_init_regularizer([torch.tensor(W)], [torch.tensor(W0)]))
        assert w2 <= l2 + 1e-12                       # sorted matching is the optimal coupling
        # brute force on a 2 x 2 block: the minimum over all couplings of the four entries
        a, b = W[:2, :2].ravel(), W0[:2, :2].ravel()
        best = min(np.sum((a - b[list(p)]) ** 2) for p in itertools.permutations(range(4)))
        assert abs(float(pl.wasserstein_init_regularizer([torch.tensor(W[:2, :2])], [torch.tensor(W0[:2, :2])]))
                   - best) < 1e-12
    perm = rng.permutation(8)
    assert float(pl.wasserstein_init_regularizer([torch.tensor(W0[:, perm])], [torch.tensor(W0)])) == 0.0
    assert float(pl.l2_init_regularizer([torch.tensor(W0[:, perm])], [torch.tensor(W0)])) > 0


def test_augment_bias_and_errors():
    W, b = torch.zeros(3, 4), torch.ones(3)
    assert pl.augment_bias(W, b).shape == (3, 5) and torch.equal(pl.augment_bias(W, None), W)
    with pytest.raises(ValueError, match="bias"):
        pl.augment_bias(W, torch.ones(4))
    with pytest.raises(ValueError, match="unknown regularizer"):
        pl.regularizer_grad("spectrall", np.eye(2))
    with pytest.raises(ValueError, match="initial weights"):
        pl.regularizer_grad("l2_init", np.eye(2))
    with pytest.raises(ValueError, match="initial weights"):
        pl.regularizer_value("wasserstein", [torch.eye(2)])
    with pytest.raises(ValueError, match="exponent"):
        pl.spectral_regularizer([torch.eye(2)], k=-1)
    with pytest.raises(ValueError, match="layers must match"):
        pl.l2_init_regularizer([torch.eye(2)], [torch.eye(3)])


# ------------------------------------------------------------------------------------------- deep linear
SHAPES = [(5, 3), (4, 5), (2, 4)]   # rectangular: 3 -> 5 -> 4 -> 2


def test_gradients_and_kernel_match_autograd_rectangular():
    rng = np.random.default_rng(4)
    Ws = _rand_layers(rng, SHAPES)
    M = rng.standard_normal((2, 3))
    Wt = [torch.tensor(W, requires_grad=True) for W in Ws]
    loss = 0.5 * ((Wt[2] @ Wt[1] @ Wt[0] - torch.tensor(M)) ** 2).sum()
    assert abs(loss.item() - pl.deep_linear_loss(Ws, M)) < 1e-12
    for ga, gc in zip(torch.autograd.grad(loss, Wt), pl.deep_linear_grads(Ws, M)):
        assert np.abs(ga.numpy() - gc).max() < 1e-12
    jac = torch.autograd.functional.jacobian(lambda *w: (w[2] @ w[1] @ w[0]).reshape(-1),
                                             tuple(torch.tensor(W) for W in Ws))
    J = torch.cat([j.reshape(6, -1) for j in jac], dim=1).numpy()
    assert np.abs(J @ J.T - pl.ntk_matrix(Ws)).max() < 1e-12


def test_balanced_factorization_and_closed_form_spectrum():
    rng = np.random.default_rng(5)
    for L in (1, 2, 3, 5):
        M = rng.standard_normal((4, 4))
        Ws = pl.balanced_factorization(M, L, rng)
        assert np.abs(pl.end_to_end(Ws) - M).max() < 1e-12
        assert all(np.abs(D).max() < 1e-12 for D in pl.imbalance(Ws))
        lam = pl.balanced_ntk_eigenvalues(np.linalg.svd(M, compute_uv=False), L)
        assert np.abs(pl.ntk_eigenvalues(Ws) - lam).max() < 1e-11 * lam.max()


def test_imbalance_changes_at_second_order_in_the_step():
    """Gradient flow conserves D_j; GD over a fixed time horizon changes it by O(lr) (O(lr^2) per step)."""
    rng = np.random.default_rng(6)
    Ws0 = [pl.random_rotation(4, rng) * 0.9 for _ in range(3)]
    M = rng.standard_normal((4, 4)) * 0.5
    changes = []
    for lr in (0.02, 0.01, 0.005):
        Ws = [W.copy() for W in Ws0]
        D0 = pl.imbalance(Ws)
        for _ in range(int(round(1.0 / lr))):        # time horizon 1
            Ws = [W - lr * g for W, g in zip(Ws, pl.deep_linear_grads(Ws, M))]
        changes.append(max(np.abs(a - b).max() for a, b in zip(pl.imbalance(Ws), D0)))
    slopes = np.diff(np.log(changes)) / np.diff(np.log([0.02, 0.01, 0.005]))
    assert np.all(np.abs(slopes - 1.0) < 0.1), slopes


def test_bounds_hold_at_random_points_and_are_attained():
    rng = np.random.default_rng(7)
    for _ in range(50):
        Ws = [rng.standard_normal((3, 3)) * rng.uniform(0.3, 2.0) for _ in range(3)]
        b = pl.plasticity_bounds(Ws)
        lam = pl.ntk_eigenvalues(Ws)
        assert lam[0] >= b["lam_min_lower"] - 1e-12 and lam[-1] <= b["lam_max_upper"] + 1e-12
        assert np.all(b["sigma_min"] >= b["sigma_min_floor"] - 1e-12)
    # scalar layers: every bound is an equality (K = sum_j prod_(i != j) w_i^2)
    w = [np.array([[1.3]]), np.array([[0.4]]), np.array([[2.0]])]
    b = pl.plasticity_bounds(w)
    assert abs(b["lam_max_upper"] - pl.ntk_eigenvalues(w)[0]) < 1e-12
    assert np.abs(b["sigma_min_floor"] - b["sigma_min"]).max() < 1e-12


def test_kappa_bound_and_local_rate():
    assert pl.kappa_bound(3, 1.0, 0.3) == pytest.approx(3 / (2 * 0.09))
    assert pl.gd_local_rate([0.0, 1e-18, 0.5, 2.0], 0.1) == pytest.approx(0.95)
    assert pl.gd_local_rate([1.0, 30.0], 0.1) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        pl.kappa_bound(1, 1.0, 0.3)
    with pytest.raises(ValueError):
        pl.gd_local_rate([1.0], 0.0)


def test_even_permutations():
    rng = np.random.default_rng(8)
    perms = pl.even_permutations(4, 12, rng)
    assert len({tuple(p) for p in perms}) == 12 and tuple(perms[0]) == (0, 1, 2, 3)
    assert all(np.linalg.det(np.eye(4)[:, p]) > 0 for p in perms)
    with pytest.raises(ValueError, match="only 12"):
        pl.even_permutations(4, 13, rng)


def test_continual_deep_linear_equals_plain_gd_loop():
    rng = np.random.default_rng(9)
    M0, targets, W_init = G1.instance(3)
    out = pl.continual_deep_linear(targets[:2], W_init, ("none",), lr=0.04, tol=1e-6, max_iter=20000)
    Ws = [W.copy() for W in W_init]
    for t, M in enumerate(targets[:2]):
        it = 0
        while np.linalg.norm(pl.end_to_end(Ws) - M) > 1e-6:
            Ws = [W - 0.04 * g for W, g in zip(Ws, pl.deep_linear_grads(Ws, M))]
            it += 1
        assert it == out["iters"][0, t]
        assert np.abs(np.stack(Ws) - out["weights"][0, t]).max() < 1e-13
        lam = pl.ntk_eigenvalues(Ws)
        assert out["local_rate"][0, t] == pytest.approx(pl.gd_local_rate(lam, 0.04), abs=1e-14)
    assert rng is not None


def test_continual_deep_linear_regularized_runs_and_errors():
    M0, targets, W_init = G1.instance(0)
    out = pl.continual_deep_linear(targets[:2], W_init, ("none", "spectral", "l2", "l2_init", "wasserstein"),
                                   strength={"spectral": 0.5, "l2": 0.05, "l2_init": 0.05, "wasserstein": 0.05},
                                   lr=0.04, tol=1e-8, max_iter=3000)
    names = list(out["regularizers"])
    # the spectral run fits the task exactly and pins every layer's top singular value at one
    assert out["residual"][names.index("spectral")].max() < 1e-8
    assert np.abs(out["sigma_max"][names.index("spectral")] - 1).max() < 1e-6
    # weight decay and L2-to-init leave a bias: the residual does not reach the tolerance
    assert out["residual"][names.index("l2")].min() > 1e-3 and out["iters"][names.index("l2")].min() == 3000
    with pytest.raises(ValueError, match="unknown regularizer"):
        pl.continual_deep_linear(targets, W_init, ("spectra",))
    with pytest.raises(ValueError, match="once"):
        pl.continual_deep_linear(targets, W_init, ("none", "none"))
    with pytest.raises(ValueError, match="square"):
        pl.continual_deep_linear(targets, [np.ones((4, 3))], ("none",))
    with pytest.raises(ValueError, match="lr > 0"):
        pl.continual_deep_linear(targets, W_init, ("none",), lr=-1)


def test_blow_up_is_reported_not_raised():
    M0, targets, W_init = G1.instance(0)
    out = pl.continual_deep_linear(targets[:2], W_init, ("none",), lr=3.0, max_iter=200)
    assert out["iters"][0, 0] == -1 and np.isnan(out["sigma_min"][0, 0]).all()


# ------------------------------------------------------------------------------------------- MLP
def test_mlp_backprop_matches_autograd():
    rng = np.random.default_rng(10)
    Ws = [torch.tensor(rng.standard_normal((3, 6, 9)) * 0.5), torch.tensor(rng.standard_normal((3, 4, 7)) * 0.5)]
    Xb, yb = torch.tensor(rng.standard_normal((3, 8, 5))), torch.tensor(rng.integers(0, 4, (3, 5)))
    loss, grads = pl.mlp_loss_grads(Ws, Xb, yb, 4)
    Wt = [W.clone().requires_grad_() for W in Ws]
    logits, _ = pl.mlp_forward(Wt, Xb)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2).reshape(-1, 4), yb.reshape(-1), reduction="none")
    ce = ce.reshape(3, 5).mean(1)
    assert torch.allclose(ce, loss, atol=1e-14)
    for g_auto, g in zip(torch.autograd.grad(ce.sum(), Wt), grads):
        assert torch.allclose(g_auto, g, atol=1e-13)


@pytest.fixture(scope="module")
def digits_small():
    X, y = load_digits_dataset()
    return X[:300], y[:300]


def test_continual_mlp_is_paired_across_regularizers(digits_small):
    X, y = digits_small
    perms = [np.arange(64), np.random.default_rng(0).permutation(64)]
    kw = dict(hidden=(16,), lr=0.1, steps_per_task=20, batch=8, seeds=(0, 1), window=5, dtype=DT)
    alone = pl.continual_mlp(X, y, perms, {"none": 0.0}, **kw)
    together = pl.continual_mlp(X, y, perms, {"none": 0.0, "spectral": 1e-2, "wasserstein": 1e-2}, **kw)
    for key in ("final_loss", "train_acc", "sigma_max"):
        assert np.array_equal(alone["none"][key], together["none"][key])
    # zero strength is no regularization
    zero = pl.continual_mlp(X, y, perms, {"spectral": 0.0}, **kw)
    assert np.array_equal(zero["spectral"]["final_loss"], alone["none"]["final_loss"])
    assert not np.array_equal(together["spectral"]["final_loss"], alone["none"]["final_loss"])
    assert together["none"]["final_loss"].shape == (2, 2) and together["none"]["sigma_max"].shape == (2, 2, 2)


def test_continual_mlp_spectral_step_uses_power_iteration(digits_small):
    """A strong spectral term (power-iteration gradient) holds the top singular value of [W | b] near one, where the
    unregularized network grows it well past one."""
    X, y = digits_small
    out = pl.continual_mlp(X, y, [np.arange(64)], {"none": 0.0, "spectral": 5.0}, hidden=(16,), lr=0.02,
                           steps_per_task=400, batch=8, seeds=(0,), power_iterations=3, window=5, dtype=DT)
    assert np.abs(out["spectral"]["sigma_max"] - 1).max() < 0.1
    assert out["none"]["sigma_max"].min() > 1.5


def test_continual_mlp_errors(digits_small):
    X, y = digits_small
    with pytest.raises(ValueError, match="unknown regularizer"):
        pl.continual_mlp(X, y, [np.arange(64)], {"spectral_product": 1.0})
    with pytest.raises(ValueError, match="permutation"):
        pl.continual_mlp(X, y, [np.zeros(64, dtype=int)], {"none": 0.0}, steps_per_task=1, window=1)
    with pytest.raises(ValueError, match="window"):
        pl.continual_mlp(X, y, [np.arange(64)], steps_per_task=3, window=5)
    with pytest.raises(FloatingPointError, match="diverged"):
        pl.continual_mlp(X * 1e3, y, [np.arange(64)], {"none": 0.0}, lr=50.0, steps_per_task=30, window=5)


# ------------------------------------------------------------------------------------------- check G1
@pytest.fixture(scope="module")
def res_g1():
    return G1.run(seed=0)


def test_g1_passes_and_controls_fail(res_g1):
    assert res_g1.passed, [c.name for c in res_g1.criteria if not c.ok]
    assert len(res_g1.negative_controls) >= 3
    assert all(not c.holds for c in res_g1.negative_controls)
    assert res_g1.criterion(next(c.name for c in res_g1.criteria if c.name.startswith("[control] no regularizer: "
                                                                                      "slowdown"))).measured > 2


def test_g1_passes_for_another_seed():
    assert G1.run(seed=5).passed


def test_g1_figure(res_g1):
    import matplotlib
    matplotlib.use("Agg")
    ax = G1.figure(res_g1)
    assert ax.get_yscale() == "log" and len(ax.lines) >= 4


def test_g1_fails_if_the_spectral_regularizer_does_nothing(monkeypatch):
    real = pl.regularizer_grad
    monkeypatch.setattr(pl, "regularizer_grad",
                        lambda kind, W, W0=None, k=2.0, target=1.0:
                        0 * W if kind == "spectral" and target == 1.0 else real(kind, W, W0, k, target))
    res = G1.run(seed=0)
    assert not res.passed
    assert not res.criterion(res.positives[0].name).holds        # sigma_min falls below the floor


def test_g1_fails_with_the_wrong_sign(monkeypatch):
    real = pl.regularizer_grad
    monkeypatch.setattr(pl, "regularizer_grad",
                        lambda kind, W, W0=None, k=2.0, target=1.0:
                        -real(kind, W, W0, k, target) if kind == "spectral" and target == 1.0
                        else real(kind, W, W0, k, target))
    assert not G1.run(seed=0).passed


def test_g1_fails_with_a_wrong_closed_form_spectrum(monkeypatch):
    real = pl.balanced_ntk_eigenvalues
    monkeypatch.setattr(pl, "balanced_ntk_eigenvalues", lambda s, L: real(np.asarray(s) ** 1.05, L))
    res = G1.run(seed=0)
    assert not res.passed
    bad = [c.name for c in res.criteria if not c.ok]
    assert bad == [c.name for c in res.criteria if "closed form" in c.name]
