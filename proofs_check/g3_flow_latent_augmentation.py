"""G3 `flow_latent_augmentation`: latent perturbations of an exactly invertible flow stay on the data manifold."""
from __future__ import annotations

import numpy as np
import torch

from hetlab.flows import (AffineFlow, CouplingFlow, IdentityFlow, distance_to_subspace, gaussian_mixture_2d,
                          latent_adversarial_linear, latent_pgd, logistic_loss, random_latent_perturbation)

from ._base import CheckResult, Criterion, Timer

ID = "G3"
NAME = "flow_latent_augmentation"
CLAIM = ("For data on a k-dim affine subspace of R^D and the closed-form affine flow x = mu + L z (rank k), decoded "
         "latent perturbations stay on the subspace exactly, while the input-space adversary of the same norm "
         "leaves it by r ||(I-P)w||/||w||. For a linear classifier w the worst latent perturbation of norm eps is "
         "-eps y L^T w/||L^T w|| (found by latent PGD), it lowers the margin by eps sqrt(w^T Sigma w), and the "
         "decoded perturbation -eps y Sigma w / sqrt(w^T Sigma w) does not depend on the square root L. The "
         "closed-form fit is the Gaussian MLE; a RealNVP coupling flow trained on a 2-D mixture inverts exactly, "
         "its log-determinant is exact, and its latent adversary is eps(u0 + eps u1) + O(eps^3) with u0 = "
         "-J^T w/||J^T w|| (J = dx/dz) and u1 from the Hessian (residual slope 2; u0 alone: slope 1).")
SOURCE = ("Yuksel, Stich, Jaggi, Chavdarova 2021 (ICCV), arXiv 2108.07958: latent perturbations of a normalizing flow "
          "as data augmentation, adversarial ones adapted to the classifier (abstract level); Dinh et al. 2017 "
          "(RealNVP coupling layers); Stutz et al. 2019 (input-space adversaries leave the manifold). The analytic "
          "case (degenerate Gaussian, closed-form latent adversary, factor invariance, distances) is derived here "
          "and verified numerically")

D, K, N_DATA, N_PTS, EPS = 6, 3, 200, 40, 0.5
# normalised PGD with step eps/2 from a random start: once on the sphere, the component orthogonal to the
# optimum shrinks by eps/(eps + eps/2) = 2/3 per step, so 100 steps reach (2/3)^100 ~ 2e-18 (rounding level)
PGD_STEPS = 100
MIX_MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5], [0.0, -2.5]]
MIX_COVS = [[[1.5, 0.0], [0.0, 0.1]], [[1.5, 0.0], [0.0, 0.1]], [[0.1, 0.0], [0.0, 1.0]], [[0.1, 0.0], [0.0, 1.0]]]
LIN_EPS = [0.002, 0.001, 0.0005, 0.00025]  # the asymptotic window of the nonlinear flow's expansion


def degenerate_gaussian(seed: int, n: int = N_DATA, dim: int = D, k: int = K):
    """``(X [n, dim], m, A)``: samples m + A g, g ~ N(0, I_k), on the affine subspace m + range(A)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((dim, k))
    m = rng.standard_normal(dim)
    X = m + rng.standard_normal((n, k)) @ A.T
    return torch.as_tensor(X), torch.as_tensor(m), torch.as_tensor(A)


def gaussian_mle_gradient(X: torch.Tensor, mu: torch.Tensor, Lc: torch.Tensor) -> tuple[float, float]:
    """(mean NLL, max |gradient|) of the Gaussian N(mu, Lc Lc^T) (Lc lower triangular) on X, by autograd,
    computed from scratch (not with hetlab.flows)."""
    mu = mu.clone().requires_grad_(True)
    Lt = torch.tril(Lc).clone().requires_grad_(True)
    Z = torch.linalg.solve_triangular(Lt, (X - mu).T, upper=False)
    nll = 0.5 * (Z * Z).sum(0).mean() + torch.log(Lt.diagonal().abs()).sum() + 0.5 * X.shape[1] * np.log(2 * np.pi)
    g_mu, g_L = torch.autograd.grad(nll, (mu, Lt))
    return float(nll.detach()), float(max(g_mu.abs().max(), torch.tril(g_L).abs().max()))


def run(seed: int = 0) -> CheckResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up would dominate
    try:
        with Timer() as t:
            crit, data = _run(seed)
    finally:
        torch.set_num_threads(threads)
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed, data=data)


def _run(seed: int):
    dt = torch.float64
    # ---------------------------------------------------------------- (i) the degenerate Gaussian
    X, m_true, A_true = degenerate_gaussian(seed)
    flow = AffineFlow.from_data(X)
    rng = np.random.default_rng(seed + 1)
    w = torch.as_tensor(rng.standard_normal(D))
    b = 0.3
    x = X[:N_PTS]
    teacher = x @ torch.as_tensor(rng.standard_normal(D))       # labels of a random teacher, balanced
    y = torch.where(teacher > teacher.median(), 1.0, -1.0).to(dt)
    z = flow.encode(x)
    roundtrip = float(torch.linalg.vector_norm(flow.decode(z) - x, dim=-1).max())
    z_rand = torch.as_tensor(rng.standard_normal((N_PTS, K)))
    roundtrip_z = float(torch.linalg.vector_norm(flow.encode(flow.decode(z_rand)) - z_rand, dim=-1).max())
    gen = torch.Generator().manual_seed(seed)
    d_rand = random_latent_perturbation((N_PTS, K), EPS, gen)
    d_star = latent_adversarial_linear(flow, y, w, EPS)
    x_lat_rand = flow.decode(z + d_rand)
    x_lat_adv = flow.decode(z + d_star)
    dist_lat_rand = distance_to_subspace(x_lat_rand, m_true, A_true)
    dist_lat_adv = distance_to_subspace(x_lat_adv, m_true, A_true)
    # the input-space adversary with the same Euclidean norm r = ||L delta*|| (constant over points)
    r = float(torch.linalg.vector_norm(flow.L @ d_star[0]))
    loss = lambda xa, yy: logistic_loss(yy * (xa @ w + b))  # noqa: E731
    d0 = random_latent_perturbation((N_PTS, D), 0.5 * r, gen)
    x_in_adv, d_in = latent_pgd(IdentityFlow(), loss, x, y, r, steps=PGD_STEPS, delta0=d0)
    d_in_pred = -r * y[:, None] * w / torch.linalg.vector_norm(w)
    Pw = flow.projector @ w
    dist_in_pred = r * float(torch.linalg.vector_norm(w - Pw) / torch.linalg.vector_norm(w))
    dist_in = distance_to_subspace(x_in_adv, m_true, A_true)
    # ---------------------------------------------------------------- (ii) latent PGD vs the closed form
    d0 = random_latent_perturbation((N_PTS, K), 0.5 * EPS, gen)
    x_pgd, d_pgd, hist = latent_pgd(flow, loss, x, y, EPS, steps=PGD_STEPS, delta0=d0, return_history=True)
    err_dir = float(torch.linalg.vector_norm(d_pgd - d_star, dim=-1).max())
    margin = y * (x @ w + b)
    a_norm = float(torch.linalg.vector_norm(flow.L.T @ w))
    inc_pred = logistic_loss(margin - EPS * a_norm) - logistic_loss(margin)
    inc_pgd = hist[-1] - logistic_loss(margin)
    err_inc = float(((inc_pgd - inc_pred).abs() / inc_pred.abs()).max())
    # control: the "Jacobian-free" latent direction L^+ w (the latent coordinates of the input-space attack)
    Lp_w = flow.encode(flow.mu + w)
    d_naive = -EPS * y[:, None] * Lp_w / torch.linalg.vector_norm(Lp_w)
    inc_naive = logistic_loss(margin + y * ((flow.decode(z + d_naive) - x) @ w)) - logistic_loss(margin)
    err_naive = float(((inc_naive - inc_pred).abs() / inc_pred.abs()).max())
    # factor invariance: L Q (Q orthogonal) is another square root of Sigma; decoded perturbation unchanged
    Qr, _ = torch.linalg.qr(torch.as_tensor(rng.standard_normal((K, K))))
    flow_rot = AffineFlow(flow.mu, flow.L @ Qr)
    Xc = X - X.mean(0)
    Sigma = Xc.T @ Xc / X.shape[0]                      # the sample covariance, from the data directly
    dx_pred = -EPS * y[:, None] * (Sigma @ w) / torch.sqrt(w @ Sigma @ w)
    dx_chol = flow.decode(z + d_star) - x
    dx_rot = flow_rot.decode(flow_rot.encode(x) + latent_adversarial_linear(flow_rot, y, w, EPS)) - x
    err_fac = float(max(torch.linalg.vector_norm(dx_chol - dx_pred, dim=-1).max(),
                        torch.linalg.vector_norm(dx_rot - dx_pred, dim=-1).max()))
    # full-rank case: the closed-form Cholesky fit is the Gaussian MLE
    X4, _, _ = degenerate_gaussian(seed + 2, n=N_DATA, dim=4, k=4)
    flow4 = AffineFlow.from_data(X4)
    nll4, grad4 = gaussian_mle_gradient(X4, flow4.mu, flow4.L)
    S4 = torch.cov(X4.T, correction=0)
    nll4_pred = 0.5 * (4 * np.log(2 * np.pi) + float(torch.logdet(S4)) + 4)
    nll4_flow = float(-flow4.log_prob(X4).mean())
    # ---------------------------------------------------------------- (iii) the coupling flow, 2-D mixture
    Xm, _, _ = gaussian_mixture_2d(256, MIX_MEANS, MIX_COVS, seed=seed)
    Xm_test, _, _ = gaussian_mixture_2d(1000, MIX_MEANS, MIX_COVS, seed=seed + 100)
    gauss = AffineFlow.from_data(Xm)
    cf = CouplingFlow(2, n_layers=4, hidden=16, base=gauss, seed=seed)
    nll_hist = cf.fit(Xm, steps=60, lr=2e-2, seed=seed)
    for p in cf.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        zt = cf.encode(Xm_test)
        rt_x = float(torch.linalg.vector_norm(cf.decode(zt) - Xm_test, dim=-1).max())
        zr = torch.randn(1000, 2, generator=gen, dtype=dt) * 1.5
        rt_z = float(torch.linalg.vector_norm(cf.encode(cf.decode(zr)) - zr, dim=-1).max())
        nll_cf = float(-cf.log_prob(Xm_test).mean())
        nll_gauss = float(-gauss.log_prob(Xm_test).mean())
        _, ld = cf.encode_with_logdet(Xm_test[:5])
    ld_ad = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(cf.encode, Xm_test[i]))[1]
                         for i in range(5)])
    err_ld = float((ld - ld_ad).abs().max())
    # nonlinear flow: minimise h(d) = y w^T decode(z + d) over ||d|| = eps. With a = grad h(0), H = hess h(0),
    # u0 = -a/||a|| and P = I - u0 u0^T, the minimiser is eps (u0 + eps u1 + O(eps^2)), u1 = -P H u0/||a||
    # (stationarity a + eps H u = mu u on the sphere, mu = -||a|| + O(eps), projected with P)
    w2 = torch.tensor([1.0, -0.7], dtype=dt)
    loss2 = lambda xa, yy: logistic_loss(yy * (xa @ w2 + 0.2))  # noqa: E731
    xs = Xm_test[:6]
    ys = torch.where(xs @ w2 + 0.2 > 0, 1.0, -1.0).to(dt)
    zs = cf.encode(xs)
    U0, U1 = [], []
    for i in range(len(xs)):
        h = lambda d: ys[i] * (cf.decode(zs[i] + d) @ w2)  # noqa: E731
        a = torch.autograd.functional.jacobian(h, torch.zeros(2, dtype=dt))
        H = torch.autograd.functional.hessian(h, torch.zeros(2, dtype=dt))
        u0 = -a / torch.linalg.vector_norm(a)
        U0.append(u0)
        U1.append(-(H @ u0 - (u0 @ H @ u0) * u0) / torch.linalg.vector_norm(a))
    U0, U1 = torch.stack(U0), torch.stack(U1)
    ne, npt = len(LIN_EPS), len(xs)
    eps_t = torch.tensor(LIN_EPS, dtype=dt).repeat_interleave(npt)
    _, d_nl = latent_pgd(cf, loss2, xs.repeat(ne, 1), ys.repeat(ne), eps_t, steps=PGD_STEPS)
    res1 = torch.linalg.vector_norm(d_nl / eps_t[:, None] - U0.repeat(ne, 1), dim=-1).reshape(ne, npt).numpy()
    res2 = torch.linalg.vector_norm(d_nl / eps_t[:, None] - U0.repeat(ne, 1) - eps_t[:, None] * U1.repeat(ne, 1),
                                    dim=-1).reshape(ne, npt).numpy()
    le = np.log(LIN_EPS)
    slopes1 = np.array([np.polyfit(le, np.log(res1[:, j]), 1)[0] for j in range(npt)])
    slopes2 = np.array([np.polyfit(le, np.log(res2[:, j]), 1)[0] for j in range(npt)])

    crit = [
        Criterion("(i) decoded latent perturbations (random + adversarial): max distance to the true subspace",
                  float(max(dist_lat_rand.max(), dist_lat_adv.max())), 0.0, 1e-12, "<="),
        Criterion("(i) detected manifold dimension = k = 3", flow.k, K, 0.0, "abs"),
        Criterion("(i) round trip: max ||decode(encode(x)) - x|| on the data", roundtrip, 0.0, 1e-12, "<="),
        Criterion("(i) round trip: max ||encode(decode(z)) - z||", roundtrip_z, 0.0, 1e-12, "<="),
        Criterion("(i) input-space PGD (same norm r) = closed form -r y w/||w||",
                  float(torch.linalg.vector_norm(d_in - d_in_pred, dim=-1).max()), 0.0, 1e-10, "<="),
        Criterion("(i) its distance to the subspace = r ||(I-P)w||/||w|| (relative, max over points)",
                  float((dist_in - dist_in_pred).abs().max() / dist_in_pred), 0.0, 1e-10, "<="),
        Criterion("(ii) latent PGD (100 steps, random start) = -eps y L^T w/||L^T w||", err_dir, 0.0, 1e-10, "<="),
        Criterion("(ii) loss increase = softplus(-(m - eps sqrt(w'Sw))) - softplus(-m) (max relative error)",
                  err_inc, 0.0, 1e-10, "<="),
        Criterion("(ii) decoded adversary = -eps y S w/sqrt(w'Sw) for L and for L Q (factor invariance)",
                  err_fac, 0.0, 1e-12, "<="),
        Criterion("full rank: closed-form fit is the MLE, max |grad NLL|", grad4, 0.0, 1e-10, "<="),
        Criterion("full rank: mean NLL = (D log 2pi + log det S + D)/2", nll4_flow, nll4_pred, 1e-12, "rel"),
        Criterion("(iii) coupling flow: max ||decode(encode(x)) - x|| (1000 test points)", rt_x, 0.0, 1e-12, "<="),
        Criterion("(iii) coupling flow: max ||encode(decode(z)) - z|| (1000 latent draws)", rt_z, 0.0, 1e-12, "<="),
        Criterion("(iii) coupling flow: log-det = log|det autograd Jacobian|", err_ld, 0.0, 1e-12, "<="),
        Criterion("(iii) trained coupling flow beats the Gaussian on held-out NLL by >= 0.1 nats",
                  nll_gauss - nll_cf, None, 0.1, ">="),
        Criterion("(iii) nonlinear flow: latent PGD = eps(u0 + eps u1), residual slope 2 (worst of 6 points)",
                  float(slopes2[np.argmax(np.abs(slopes2 - 2))]), 2.0, 0.15, "abs"),
        # negative controls
        Criterion("[control] input-space adversary of the same norm stays on the manifold (distance <= 1e-8)",
                  float(dist_in.max()), 0.0, 1e-8, "<=", negative=True),
        Criterion("[control] Jacobian-free latent direction L^+ w attains the closed-form loss increase",
                  err_naive, 0.0, 1e-6, "<=", negative=True),
        Criterion("[control] Jacobian-only direction u0 = -J^T w/||J^T w|| has residual slope 2 (best of 6 points)",
                  float(slopes1[np.argmin(np.abs(slopes1 - 2))]), 2.0, 0.15, "abs", negative=True),
    ]
    data = {"dist_lat_rand": dist_lat_rand.numpy(), "dist_lat_adv": dist_lat_adv.numpy(),
            "dist_in": dist_in.numpy(), "dist_in_pred": dist_in_pred, "r": r, "pgd_loss": hist.numpy(),
            "inc_pred": inc_pred.numpy(), "lin_eps": np.array(LIN_EPS), "res1": res1, "res2": res2,
            "nll_hist": np.array(nll_hist), "nll_cf": nll_cf, "nll_gauss": nll_gauss, "err_dir": err_dir,
            "margin_drop": EPS * a_norm}
    return crit, data


def figure(result: CheckResult, ax=None):
    """Distance to the data manifold of decoded latent perturbations (rounding level) against the
    input-space adversary of the same norm (on its closed-form value)."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    floor = 1e-17
    i = np.arange(len(d["dist_in"]))
    ax.semilogy(i, np.maximum(d["dist_lat_rand"], floor), "o", ms=3, label="decoded random latent perturbation")
    ax.semilogy(i, np.maximum(d["dist_lat_adv"], floor), "s", ms=3, label="decoded latent adversary")
    ax.semilogy(i, d["dist_in"], "^", ms=3, label="input-space adversary, same norm")
    ax.axhline(d["dist_in_pred"], color="k", lw=0.8, ls="--", label=r"predicted $r\|(I-P)w\|/\|w\|$")
    ax.set_xlabel("data point")
    ax.set_ylabel("distance to the data manifold")
    ax.set_ylim(floor / 2, 10)
    ax.set_title(f"G3: latent PGD vs closed form {d['err_dir']:.1e}")
    ax.legend(frameon=False, fontsize=7, loc="center right")
    return ax
