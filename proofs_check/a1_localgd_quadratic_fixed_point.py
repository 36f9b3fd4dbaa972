"""A1 `localgd_quadratic_fixed_point`: FedAvg (local GD) converges linearly to a biased fixed point."""
from __future__ import annotations

import numpy as np

from hetlab import closed_forms as cf
from hetlab.algorithms import FedAvg, ServerSGD
from hetlab.exact import (affine_fixed_point, empirical_rate, method_affine_map, slowest_mode_rate,
                          spectral_radius)
from hetlab.problems import random_quadratics

from ._base import CheckResult, Criterion, Timer, iterate

ID = "A1"
NAME = "localgd_quadratic_fixed_point"
CLAIM = ("On heterogeneous quadratics, local GD / FedAvg converges linearly, at rate rho(I - eta_g Qbar), "
         "to x_FA = (sum Q_i)^-1 sum Q_i b_i with Q_i = I - (I - eta A_i)^K, which differs from x_star "
         "unless K = 1, the Hessians or the minimisers coincide; the server step does not move it.")
SOURCE = ("Charles & Konecny 2020/2021; Malinovsky et al. 2020; Pathak & Wainwright 2020 "
          "(THEORY.md A1, derived and verified)")

N, D, LR, K, ROUNDS = 8, 5, 0.1, 10, 3000


def _fixed_point_error(problem, lr, K, server_lr=1.0):
    """||x_FA - x_star|| with x_FA read off the *implementation* by probing (M1)."""
    M, c, unflatten = method_affine_map(FedAvg(lr, K, ServerSGD(server_lr)), problem)
    xfa = unflatten(affine_fixed_point(M, c))["x"].numpy()
    return xfa, M, unflatten


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob = random_quadratics(N, D, spectrum=(0.5, 2.0), seed=seed)
        xs_star = prob.x_star.numpy()
        x_fa = cf.fedavg_fixed_point(prob, LR, K)
        rho = cf.fedavg_contraction(prob, LR, K)
        xfa_probe, M, unflatten = _fixed_point_error(prob, LR, K)
        xfa_half, _, _ = _fixed_point_error(prob, LR, K, server_lr=0.5)
        traj, _ = iterate(FedAvg(LR, K), prob, ROUNDS)
        err_fa = np.linalg.norm(traj - x_fa, axis=1)
        err_star = np.linalg.norm(traj - xs_star, axis=1)
        # THEORY's window [1e-10, 1e-2] from x0 = 0 (reported) can still be pre-asymptotic when the top
        # eigenvalues of M cluster (seed 3: 0.299 against 0.347); the rate criterion therefore measures
        # the implementation along its slowest mode, where every round is asymptotic (M4)
        try:
            rate_from_zero = empirical_rate(err_fa, 1e-10, 1e-2)
        except ValueError:
            rate_from_zero = float("nan")
        rate = slowest_mode_rate(FedAvg(LR, K), prob, M, xfa_probe, unflatten)
        special = {}
        for label, p, kk in [
            ("K=1", prob, 1),
            ("identical Hessians", random_quadratics(N, D, hessian_heterogeneity=0.0, seed=seed), K),
            ("identical minimisers", random_quadratics(N, D, minimizer_heterogeneity=0.0,
                                                       common_minimizer=np.ones(D), seed=seed), K),
        ]:
            xp, _, _ = _fixed_point_error(p, LR, kk)
            special[label] = float(np.linalg.norm(xp - p.x_star.numpy()))
        bias = float(np.linalg.norm(x_fa - xs_star))
        crit = [
            Criterion("final iterate vs closed-form x_FA (relative)",
                      err_fa[-1] / max(np.linalg.norm(x_fa), 1e-300), 0.0, 1e-12, "<="),
            Criterion("bias ||x_FA - x_star|| is visible", bias, None, 1e-3, ">="),
            Criterion("probed (M1) fixed point of the implementation = closed form",
                      np.linalg.norm(xfa_probe - x_fa), 0.0, 1e-12, "<="),
            Criterion("probed spectral radius = rho(I - Qbar)", spectral_radius(M), rho, 1e-10, "abs"),
            Criterion("measured per-round rate along the slowest mode = rho(M)", rate, rho, 1e-6, "abs"),
            Criterion("server step 0.5 leaves the fixed point unchanged",
                      np.linalg.norm(xfa_half - x_fa), 0.0, 1e-12, "<="),
        ]
        crit += [Criterion(f"special case {k}: x_FA = x_star", v, 0.0, 1e-12, "<=") for k, v in special.items()]
        crit += [
            # negative controls: what the theorem says is false must be detected as false
            Criterion("[control] FedAvg iterate reaches x_star (heterogeneous A_i and b_i)",
                      err_star[-1], 0.0, 1e-12, "<=", negative=True),
            Criterion("[control] x_FA equals the mean of local minimisers b_bar (pitfall 1)",
                      np.linalg.norm(x_fa - prob.b.numpy().mean(0)), 0.0, 1e-12, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"err_fa": err_fa, "err_star": err_star, "rho": rho, "bias": bias,
                             "rate_from_zero": rate_from_zero})


def figure(result: CheckResult, ax=None):
    """Distance to x_FA and to x_star per round, with the predicted rate rho^r and the bias level."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    r = np.arange(len(d["err_fa"]))
    sel = r <= 45
    ax.semilogy(r[sel], d["err_fa"][sel], "o", ms=3, label=r"$\|x^r-x_{\rm FA}\|$ measured")
    ax.semilogy(r[sel], np.maximum(d["err_fa"][0] * d["rho"] ** r[sel], 1e-17), "-", label=r"predicted $\rho(M)^r$")
    ax.semilogy(r[sel], d["err_star"][sel], "s", ms=3, label=r"$\|x^r-x^\star\|$ measured")
    ax.axhline(d["bias"], color="k", ls="--", lw=1, label=r"predicted bias $\|x_{\rm FA}-x^\star\|$")
    ax.set_xlabel("round r")
    ax.set_ylabel("distance")
    ax.set_title("A1: FedAvg converges linearly to a biased point")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
