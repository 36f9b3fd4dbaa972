"""A2 `localgd_first_order_bias_surrogate`: FedAvg's bias is first order in eta and follows a surrogate loss."""
from __future__ import annotations

import numpy as np

from hetlab import closed_forms as cf
from hetlab.algorithms import FedAvg, MinibatchSGD
from hetlab.exact import fit_slope, must_differ
from hetlab.problems import random_quadratics

from ._base import CheckResult, Criterion, Timer, iterate, rel_err

ID = "A2"
NAME = "localgd_first_order_bias_surrogate"
CLAIM = ("FedAvg's fixed point is, to O(eta^2), the stationary point of the surrogate "
         "f - (K-1) eta/4 * mean_i ||grad f_i||^2 (a MINUS sign: local steps reward large client gradients), "
         "so its bias ||x_FA - x_star|| = Theta(eta (K-1)); minibatch GD with the same gradient budget is unbiased.")
SOURCE = "Charles & Konecny 2020/2021 (surrogate loss); Woodworth et al. 2020 (THEORY.md A2, derived and verified)"

N, D, K = 8, 5, 10
ETAS = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob = random_quadratics(N, D, spectrum=(0.5, 2.0), seed=seed)
        xs = prob.x_star.numpy()
        x_fa = np.array([cf.fedavg_fixed_point(prob, e, K) for e in ETAS])
        bias = np.linalg.norm(x_fa - xs, axis=1)
        surr = np.array([cf.local_surrogate_minimizer(prob, (K - 1) * e / 2) for e in ETAS])
        resid = np.linalg.norm(x_fa - surr, axis=1)
        wrong = np.array([cf.local_surrogate_minimizer(prob, -(K - 1) * e / 2) for e in ETAS])
        resid_wrong = np.linalg.norm(x_fa - wrong, axis=1)
        fo = {e: rel_err(cf.fedavg_fixed_point(prob, e, K) - xs, cf.fedavg_first_order_bias(prob, e, K))
              for e in (0.01, 0.001)}
        s_bias = fit_slope(ETAS, bias).slope
        s_res = fit_slope(ETAS, resid).slope
        s_wrong = fit_slope(ETAS, resid_wrong).slope
        # must differ (Woodworth et al.): same gradient budget, one step of size K*eta on f per round
        eta = 0.01
        traj_mb, _ = iterate(MinibatchSGD(K * eta), prob, 600)
        traj_loc, _ = iterate(FedAvg(eta, K), prob, 600)
        err_mb = float(np.linalg.norm(traj_mb[-1] - xs))
        err_loc = float(np.linalg.norm(traj_loc[-1] - xs))
        bias_cf = float(np.linalg.norm(cf.fedavg_fixed_point(prob, eta, K) - xs))
        md = must_differ(err_loc, err_mb, tol_fix=1e-12, closed_form_bias=bias_cf, rel=1e-8)
        crit = [
            Criterion("slope of log bias vs log eta", s_bias, 1.0, 0.05, "abs"),
            Criterion("slope of surrogate residual ||x_FA - x_surrogate|| vs eta", s_res, 2.0, 0.15, "abs"),
            Criterion("first-order bias formula, relative error at eta=0.01", fo[0.01], 0.0, 0.05, "<="),
            Criterion("first-order bias formula, relative error at eta=0.001", fo[0.001], 0.0, 0.005, "<="),
            Criterion("minibatch GD (step K*eta) reaches x_star", err_mb, 0.0, 1e-12, "<="),
            Criterion("local GD stays at its closed-form bias (relative)", abs(err_loc - bias_cf) / bias_cf, 0.0, 1e-8, "<="),
            Criterion("M6 must-differ verdict (1 = pass)", float(md["passed"]), 1.0, 0.0, "abs"),
            Criterion("[control] wrong-sign (plus) surrogate: residual slope 2 +- 0.15", s_wrong, 2.0, 0.15, "abs",
                      negative=True),
            Criterion("[control] local GD reaches x_star like minibatch GD", err_loc, 0.0, 1e-12, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"etas": ETAS, "bias": bias, "resid": resid, "resid_wrong": resid_wrong,
                             "first_order": np.array([np.linalg.norm(cf.fedavg_first_order_bias(prob, e, K)) for e in ETAS]),
                             "slopes": (s_bias, s_res, s_wrong)})


def figure(result: CheckResult, ax=None):
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    e = d["etas"]
    ax.loglog(e, d["bias"], "o", label=fr"bias $\|x_{{\rm FA}}-x^\star\|$ (slope {d['slopes'][0]:.2f})")
    ax.loglog(e, d["first_order"], "-", label="predicted first-order bias")
    ax.loglog(e, d["resid"], "s", label=fr"$\|x_{{\rm FA}}-\tilde x\|$, surrogate (slope {d['slopes'][1]:.2f})")
    ax.loglog(e, d["resid"][0] * (e / e[0]) ** 2, "--", color="gray", lw=1, label="slope 2")
    ax.loglog(e, d["resid_wrong"], "^", label=fr"wrong-sign surrogate (slope {d['slopes'][2]:.2f})")
    ax.set_xlabel(r"local step size $\eta$")
    ax.set_ylabel("distance")
    ax.set_title("A2: first-order bias and the surrogate loss (K=10)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax
