"""Tests of hetlab.flows (affine and coupling flows, latent perturbations, replica training) and check G3."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import proofs_check
from hetlab import flows as fl
from hetlab.flows import (AffineFlow, CouplingFlow, IdentityFlow, accuracy, cross_entropy, gaussian_mixture_2d,
                          init_mlp, latent_adversarial_linear, latent_pgd, linear_margin_drop, logistic_loss,
                          mlp_logits, random_latent_perturbation, train_classifier)

DT = torch.float64


def _gaussian_data(n=300, d=4, k=None, seed=0):
    rng = np.random.default_rng(seed)
    k = d if k is None else k
    A = rng.standard_normal((d, k))
    m = rng.standard_normal(d)
    return torch.as_tensor(m + rng.standard_normal((n, k)) @ A.T), m, A


# ---------------------------------------------------------------------------------------- AffineFlow


def test_affine_fit_is_mean_and_cholesky_of_mle_covariance():
    X, _, _ = _gaussian_data()
    f = AffineFlow.from_data(X)
    S = np.cov(X.numpy().T, bias=True)
    assert f.k == f.D == 4
    assert np.allclose(f.mu.numpy(), X.numpy().mean(0), atol=1e-14)
    assert np.allclose(np.triu(f.L.numpy(), 1), 0)
    assert np.allclose(f.covariance.numpy(), S, atol=1e-12)


def test_affine_log_prob_equals_scipy_gaussian():
    X, _, _ = _gaussian_data(seed=1)
    f = AffineFlow.from_data(X)
    ref = stats.multivariate_normal(X.numpy().mean(0), np.cov(X.numpy().T, bias=True)).logpdf(X.numpy()[:20])
    assert np.allclose(f.log_prob(X[:20]).numpy(), ref, atol=1e-11)
    # the eigen-factor is another square root: same density
    fe = AffineFlow.from_data(X, factor="eigh")
    assert np.allclose(fe.log_prob(X[:20]).numpy(), ref, atol=1e-11)


def test_affine_round_trip_exact():
    X, _, _ = _gaussian_data(seed=2)
    f = AffineFlow.from_data(X)
    assert torch.linalg.vector_norm(f.decode(f.encode(X)) - X, dim=-1).max() < 1e-12
    z = torch.randn(50, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert torch.linalg.vector_norm(f.encode(f.decode(z)) - z, dim=-1).max() < 1e-12


def test_degenerate_gaussian_rank_manifold_and_pseudo_density():
    X, m, A = _gaussian_data(n=200, d=6, k=2, seed=3)
    f = AffineFlow.from_data(X)
    assert f.k == 2
    # the fitted manifold is the true affine span: decoded points and the projector agree with A
    z = torch.randn(100, 2, dtype=DT, generator=torch.Generator().manual_seed(1)) * 3
    assert fl.distance_to_subspace(f.decode(z), m, A).max() < 1e-12
    Q, _ = np.linalg.qr(A)
    assert np.allclose(f.projector.numpy(), Q @ Q.T, atol=1e-12)
    assert torch.linalg.vector_norm(f.decode(f.encode(X)) - X, dim=-1).max() < 1e-12
    # density on the manifold = scipy's degenerate Gaussian (pseudo-determinant, allow_singular)
    S = np.cov(X.numpy().T, bias=True)
    ref = stats.multivariate_normal(X.numpy().mean(0), S, allow_singular=True).logpdf(X.numpy()[:10])
    assert np.allclose(f.log_prob(X[:10]).numpy(), ref, atol=1e-8)


def test_encode_projects_off_manifold_points_and_distance():
    X, m, A = _gaussian_data(n=100, d=5, k=2, seed=4)
    f = AffineFlow.from_data(X)
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(A)
    normal = rng.standard_normal(5)
    normal -= Q @ (Q.T @ normal)
    normal /= np.linalg.norm(normal)
    x_off = X[:3] + 0.7 * torch.as_tensor(normal)
    assert np.allclose(f.distance_to_manifold(x_off).numpy(), 0.7, atol=1e-12)
    assert torch.allclose(f.decode(f.encode(x_off)), X[:3], atol=1e-12)
    # perturb keeps the off-manifold residual, decode(encode(.)) drops it
    d = torch.ones(3, 2, dtype=DT)
    assert torch.allclose(f.perturb(x_off, d), f.decode(f.encode(x_off) + d) + 0.7 * torch.as_tensor(normal))


def test_explicit_rank_is_pca_and_errors():
    X, _, _ = _gaussian_data(n=100, d=5, k=3, seed=5)
    f2 = AffineFlow.from_data(X, rank=2)
    lam = np.sort(np.linalg.eigvalsh(np.cov(X.numpy().T, bias=True)))[::-1]
    assert np.allclose(np.linalg.svd(f2.L.numpy(), compute_uv=False) ** 2, lam[:2], rtol=1e-10)
    with pytest.raises(ValueError, match="too large"):
        AffineFlow.from_data(X, rank=4)
    with pytest.raises(ValueError, match="full column rank"):
        AffineFlow(torch.zeros(3), torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]))
    with pytest.raises(ValueError, match="shape"):
        AffineFlow(torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="factor"):
        AffineFlow.from_data(X, factor="qr")


# ----------------------------------------------------------------------- closed-form latent adversary


def test_latent_adversary_linear_is_best_direction_and_factor_invariant():
    X, _, _ = _gaussian_data(n=200, d=5, k=3, seed=6)
    f = AffineFlow.from_data(X)
    rng = np.random.default_rng(1)
    w = torch.as_tensor(rng.standard_normal(5))
    y = torch.tensor([1.0, -1.0, 1.0])
    eps = 0.4
    d = latent_adversarial_linear(f, y, w, eps)
    assert np.allclose(torch.linalg.vector_norm(d, dim=-1).numpy(), eps)
    drop = -(y[:, None] * ((f.decode(f.encode(X[:3]) + d) - X[:3]))) @ w   # margin decrease
    assert np.allclose(drop.numpy(), linear_margin_drop(f, w, eps), atol=1e-12)
    # no random direction of the same norm lowers the margin more (brute force)
    U = random_latent_perturbation((20000, 3), eps, torch.Generator().manual_seed(0))
    assert float((-(U @ f.L.T) @ w).max()) <= linear_margin_drop(f, w, eps) + 1e-12
    # another square root L Q of Sigma gives the same decoded perturbation -eps y Sigma w / sqrt(w' Sigma w)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    f2 = AffineFlow(f.mu, f.L @ torch.as_tensor(Q))
    S = f.covariance
    pred = -eps * y[:, None] * (S @ w) / torch.sqrt(w @ S @ w)
    assert torch.allclose(latent_adversarial_linear(f2, y, w, eps) @ f2.L.T, pred, atol=1e-12)
    assert torch.allclose(d @ f.L.T, pred, atol=1e-12)


def test_latent_pgd_matches_closed_form_and_identity_flow_is_input_pgd():
    X, _, _ = _gaussian_data(n=100, d=4, k=2, seed=7)
    f = AffineFlow.from_data(X)
    w = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=DT)
    x = X[:10]
    y = torch.where(torch.arange(10) % 2 == 0, 1.0, -1.0).to(DT)
    loss = lambda xa, yy: logistic_loss(yy * (xa @ w))  # noqa: E731
    _, d = latent_pgd(f, loss, x, y, 0.3, steps=100)
    assert torch.allclose(d, latent_adversarial_linear(f, y, w, 0.3), atol=1e-12)
    _, d_in = latent_pgd(IdentityFlow(), loss, x, y, 0.3, steps=100)
    assert torch.allclose(d_in, -0.3 * y[:, None] * w / torch.linalg.vector_norm(w), atol=1e-12)
    # per-sample radii
    r = torch.linspace(0.1, 1.0, 10, dtype=DT)
    _, d_r = latent_pgd(f, loss, x, y, r, steps=100)
    assert np.allclose(torch.linalg.vector_norm(d_r, dim=-1).numpy(), r.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="per-sample eps"):
        latent_pgd(f, loss, x, y, r[:3])
    with pytest.raises(ValueError, match="L\\^T w = 0"):
        latent_adversarial_linear(f, y, torch.as_tensor(np.eye(4)[0] * 0.0), 0.1)
    with pytest.raises(ValueError, match="-1 or \\+1"):
        latent_adversarial_linear(f, torch.zeros(3), w, 0.1)


def test_latent_pgd_increases_loss_monotonically_for_a_linear_score():
    X, _, _ = _gaussian_data(n=50, d=3, seed=8)
    f = AffineFlow.from_data(X)
    w = torch.tensor([1.0, 2.0, -1.0], dtype=DT)
    y = torch.ones(50, dtype=DT)
    _, _, hist = latent_pgd(f, lambda xa, yy: logistic_loss(yy * (xa @ w)), X, y, 0.5, steps=10,
                            return_history=True)
    assert (hist[1:] - hist[:-1]).min() >= -1e-15
    assert hist.shape == (11, 50)


# ------------------------------------------------------------------------------------ CouplingFlow


def _random_coupling(seed=0, dim=2, dtype=DT, base=None):
    cf = CouplingFlow(dim, n_layers=4, hidden=8, base=base, seed=seed, dtype=dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # move the zero-initialised last layers so that the flow is not the identity
        for layer in cf.layers:
            last = layer.net[-1]
            last.weight.copy_(0.5 * torch.randn(last.weight.shape, generator=gen, dtype=dtype))
            last.bias.copy_(0.5 * torch.randn(last.bias.shape, generator=gen, dtype=dtype))
    return cf


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_coupling_round_trip_and_logdet(dim):
    cf = _random_coupling(dim=dim)
    x = torch.randn(200, dim, dtype=DT, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        z, ld = cf.encode_with_logdet(x)
        assert torch.linalg.vector_norm(cf.decode(z) - x, dim=-1).max() < 1e-12
        zz = torch.randn(200, dim, dtype=DT, generator=torch.Generator().manual_seed(3)) * 2
        assert torch.linalg.vector_norm(cf.encode(cf.decode(zz)) - zz, dim=-1).max() < 1e-12
    for i in range(4):
        J = torch.autograd.functional.jacobian(cf.encode, x[i])
        assert abs(float(torch.linalg.slogdet(J)[1] - ld[i])) < 1e-12


def test_coupling_identity_at_init_and_with_base():
    X, _, _ = _gaussian_data(n=100, d=2, seed=9)
    base = AffineFlow.from_data(X)
    cf = CouplingFlow(2, base=base)
    with torch.no_grad():
        assert torch.allclose(cf.encode(X), base.encode(X), atol=1e-14)
        assert torch.allclose(cf.log_prob(X), base.log_prob(X), atol=1e-12)


def test_coupling_density_integrates_to_one():
    X, _, _ = _gaussian_data(n=100, d=2, seed=10)
    cf = _random_coupling(seed=3, base=AffineFlow.from_data(X))
    g = torch.linspace(-14, 14, 561, dtype=DT)
    h = float(g[1] - g[0])
    G = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = float(cf.log_prob(G).exp().sum()) * h * h
    assert abs(mass - 1) < 2e-3


def test_coupling_fit_lowers_nll_on_a_mixture_and_float32():
    X, _, _ = gaussian_mixture_2d(300, [[-2.0, 0.0], [2.0, 0.0]], [np.eye(2) * 0.2] * 2, seed=0)
    cf = CouplingFlow(2, n_layers=4, hidden=16, base=AffineFlow.from_data(X), seed=0)
    hist = cf.fit(X, steps=80, lr=2e-2)
    assert hist[-1] < hist[0] - 0.3
    cf32 = CouplingFlow(2, n_layers=2, hidden=4, dtype=torch.float32)
    z = cf32.encode(X.float())
    assert z.dtype == torch.float32
    assert torch.allclose(cf32.decode(z), X.float(), atol=1e-5)
    with pytest.raises(ValueError, match="dim >= 2"):
        CouplingFlow(1)
    with pytest.raises(ValueError, match="shape"):
        cf.fit(torch.zeros(10, 3, dtype=DT))


def test_coupling_flow_seeded_initialisation_is_reproducible():
    a, b = CouplingFlow(3, seed=4), CouplingFlow(3, seed=4)
    c = CouplingFlow(3, seed=5)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


# ------------------------------------------------------------------------------ replica training


def test_mlp_logits_match_torch_modules():
    params = init_mlp([3, 5, 4], replicas=2, seed=0)
    X = torch.randn(2, 7, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    for r in range(2):
        net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
        with torch.no_grad():
            net[0].weight.copy_(params[0][r].T), net[0].bias.copy_(params[1][r])
            net[2].weight.copy_(params[2][r].T), net[2].bias.copy_(params[3][r])
        assert torch.allclose(mlp_logits(params, X)[r], net(X[r]), atol=1e-14)
    y = torch.tensor([[0, 1, 2, 3, 0, 1, 2]] * 2)
    ref = torch.nn.functional.cross_entropy(mlp_logits(params, X)[0], y[0], reduction="none")
    assert torch.allclose(cross_entropy(mlp_logits(params, X), y)[0], ref, atol=1e-14)


def test_replicas_train_independently():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, 12, 2, dtype=DT, generator=gen)
    y = (X[..., 0] > 0).long()
    flow = AffineFlow.from_data(X.reshape(-1, 2))
    aug = fl.latent_adversarial_augmenter(flow, 0.3, steps=2)
    joint = train_classifier(init_mlp([2, 6, 2], 3, seed=1), X, y, steps=30, lr=1e-2, augment=aug)
    for r in range(3):
        single = [p[r:r + 1].detach().clone().requires_grad_() for p in init_mlp([2, 6, 2], 3, seed=1)]
        single = train_classifier(single, X[r:r + 1], y[r:r + 1], steps=30, lr=1e-2, augment=aug)
        for pj, ps in zip(joint, single):
            assert torch.allclose(pj[r], ps[0], atol=1e-12)
    acc = accuracy(joint, X[0], y[0])
    assert acc.shape == (3,) and float(acc.min()) >= 0


def test_random_augmenter_norm_and_mixture_sampler():
    X, y, comp = gaussian_mixture_2d(4000, [[0.0, 0.0], [5.0, 5.0]], [np.eye(2), np.eye(2) * 0.5],
                                     weights=[0.25, 0.75], labels=[1, 0], seed=0)
    assert set(y.tolist()) == {0, 1} and torch.equal(y, 1 - comp)
    frac = float((comp == 1).double().mean())
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 4000)
    assert np.allclose(X[comp == 1].mean(0).numpy(), [5, 5], atol=0.1)
    f = AffineFlow.from_data(X)
    aug = fl.latent_random_augmenter(f, 0.7, torch.Generator().manual_seed(0))
    Xa = aug(None, X[:10], y[:10])
    assert np.allclose(torch.linalg.vector_norm(f.encode(Xa) - f.encode(X[:10]), dim=-1).numpy(), 0.7)


# --------------------------------------------------------------------- class flows and calibration


def test_class_affine_flows_stay_in_each_class_span():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, 12, 5, dtype=DT, generator=gen)
    y = torch.tensor([[0, 1, 2] * 4] * 3)
    ca = fl.ClassAffineFlows(X, y, 3)
    assert ca.k == 3                                  # 4 points per class span a 3-dim affine subspace
    d = random_latent_perturbation((3, 12, 3), 2.0, gen)
    Xp = ca.perturb(X, d)
    for r in range(3):
        for c in range(3):
            pts = X[r][y[r] == c]
            span = (pts[1:] - pts[0]).T                # the affine span of the class's points
            assert fl.distance_to_subspace(Xp[r][y[r] == c], pts[0], span).max() < 1e-12
            ref = AffineFlow.from_data(pts, rank=3, factor="eigh")
            assert torch.allclose(ca.encode(X)[r][y[r] == c], ref.encode(pts), atol=1e-12)
    assert torch.allclose(ca.encode(ca.decode(d)), d, atol=1e-12)
    assert torch.allclose(ca.decode(ca.encode(X)), X, atol=1e-12)
    # leading dimensions (several draws) broadcast
    assert ca.perturb(X.expand(2, *X.shape), d.expand(2, *d.shape)).shape == (2, 3, 12, 5)
    with pytest.raises(ValueError, match="at least two points"):
        fl.ClassAffineFlows(X, torch.tensor([[0] * 11 + [1]] * 3), 2)
    with pytest.raises(ValueError, match="bound to its training points"):
        ca.encode(X[:, :5])


def test_calibrate_eps():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, dtype=DT, generator=gen)
    assert abs(fl.calibrate_eps(IdentityFlow(), X, 0.7, gen) - 0.7) < 1e-14
    iso = AffineFlow(torch.zeros(3), 2.5 * torch.eye(3, dtype=DT))
    assert abs(fl.calibrate_eps(iso, X, 0.7, gen) - 0.7 / 2.5) < 1e-14
    cf = _random_coupling(dim=3, seed=2)
    eps = fl.calibrate_eps(cf, X, 0.5, gen)
    with torch.no_grad():   # fresh draws: the mean displacement is r up to Monte Carlo error
        U = random_latent_perturbation((400, 20, 3), eps, gen)
        m = float(torch.linalg.vector_norm(cf.decode(cf.encode(X) + U) - X, dim=-1).mean())
    assert abs(m - 0.5) < 0.05


# ------------------------------------------------------------------------------------- check G3


def test_g3_passes_and_controls_fail():
    res = proofs_check.run_check("G3", seed=0)
    assert res.passed, [c.name for c in res.criteria if not c.ok]
    assert all(not c.holds for c in res.negative_controls)


def test_g3_fails_with_a_wrong_sign_closed_form(monkeypatch):
    mod = proofs_check.get("G3")
    monkeypatch.setattr(mod, "latent_adversarial_linear", lambda flow, y, w, eps: -fl.latent_adversarial_linear(
        flow, y, w, eps))
    assert not mod.run(seed=0).passed


def test_g3_fails_if_the_decoder_leaves_the_manifold(monkeypatch):
    mod = proofs_check.get("G3")
    orig = AffineFlow.decode

    def leaky(self, z):   # a decoder with a tiny off-manifold component
        x = orig(self, z)
        return x + 1e-9 * torch.ones_like(x)
    monkeypatch.setattr(AffineFlow, "decode", leaky)
    assert not mod.run(seed=0).passed
