"""B1 `gd_implicit_gradient_regularizer`: gradient descent follows the flow of f + h/4 ||grad f||^2
(Barrett & Dherin 2021).

One step of the library's ``GD(h)`` on a quadratic f = mean_i f_i (THEORY B1: n = 4, d = 3, x0 ~ N(0, 4 I)) is
compared with the exact gradient flow (M3) over time h of

* the plain loss f: residual O(h^2) (slope 2);
* the modified loss f + h/4 ||grad f||^2 (Hessian H + h/2 H^2): residual O(h^3) (slope 3);
* the exact modified loss 1/2 (x - x*)^T M (x - x*), M = -log(I - hH)/h: residual at round-off.

The series M = H + h/2 H^2 + h^2/3 H^3 + ... is checked at h = 0.05 (third-order term, 10x reduction).
Negative controls: the coefficient h/2 on ||grad f||^2 (instead of h/4) and the wrong sign stay at slope 2;
the regulariser does not move GD's fixed point (it is exactly x*, and ||grad f||^2 vanishes there), so
"GD converges to a point displaced from x*" and "GD converges to the minimiser of the per-row regularised loss
f + h/4 mean_i ||grad f_i||^2" both fail.

The h grid of THEORY B1, {0.08, 0.04, 0.02, 0.01}, spans 0.9 decades; M4 asks for at least one decade, so
h = 0.005 is added (h L <= 0.16 on the whole grid).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from hetlab import modified_losses as ml
from hetlab.algorithms import GD
from hetlab.comm import SimulatedComm
from hetlab.exact import affine_fixed_point, method_affine_map
from hetlab.problems import Oracle, random_quadratics

from ._base import CheckResult, Criterion, Timer, rel_err

ID = "B1"
NAME = "gd_implicit_gradient_regularizer"
CLAIM = ("One gradient-descent step x - h grad f(x) stays O(h^3)-close to the gradient flow of the modified loss "
         "f + h/4 ||grad f||^2 over time h (residual slope 3, against 2 for the plain flow of f); on quadratics "
         "exactly I - hH = exp(-hM), M = -log(I - hH)/h = H + h/2 H^2 + h^2/3 H^3 + ...; the regulariser "
         "vanishes at x*, so GD's fixed point stays exactly x*.")
SOURCE = "Barrett & Dherin, Implicit Gradient Regularization, ICLR 2021 (THEORY.md B1; quadratic identities derived)"

N, D = 4, 3
HS = np.array([0.08, 0.04, 0.02, 0.01, 0.005])   # THEORY grid + 0.005 so that the fit spans >= 1 decade
H_SERIES = 0.05                                  # step of the matrix-log series check


def make_problem(seed: int = 0):
    """The B1 problem: ``random_quadratics(4, 3, seed=seed)`` and ``x0 = 2 * N(0, I)`` from ``default_rng(seed)``."""
    prob = random_quadratics(N, D, seed=seed)
    x0 = 2.0 * np.random.default_rng(seed).standard_normal(D)
    return prob, x0


def gd_step(prob, h: float, x0) -> np.ndarray:
    """One step of the library's ``hetlab.algorithms.GD`` from ``x0`` (NumPy in, NumPy out)."""
    method = GD(h)
    state = method.init(torch.as_tensor(x0, dtype=prob.dtype), prob)
    state = method.step(state, Oracle(prob), SimulatedComm(prob.n), None)
    return method.model(state).numpy().copy()


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob, x0 = make_problem(seed)
        f = ml.objective(prob)
        H, xs = f.H, prob.x_star.numpy()

        def round_map(h, x):
            return gd_step(prob, h, x)

        losses = {
            "plain": lambda h: f,
            "modified": lambda h: ml.igr_loss(prob, h),
            "coef_h2": lambda h: ml.modified_loss(prob, grad_norm=h / 2),     # wrong coefficient
            "minus": lambda h: ml.modified_loss(prob, grad_norm=-h / 4),     # wrong sign
            "exact_log": lambda h: ml.gd_exact_modified_loss(f, h),
        }
        sl = ml.residual_slopes(round_map, {k: v for k, v in losses.items() if k != "exact_log"}, x0, HS,
                                time=lambda h: h)
        exact_res = ml.flow_residuals(round_map, {"exact_log": losses["exact_log"]}, x0, HS, time=lambda h: h)
        exact_rel = float(np.max(exact_res["exact_log"] / np.linalg.norm(x0 - xs)))
        # the library step is the map whose modified loss we compute: x - h (H x - c)
        h0 = HS[0]
        step_err = rel_err(gd_step(prob, h0, x0), x0 - h0 * f.grad(x0))

        # matrix-log series at h = 0.05
        h = H_SERIES
        M = ml.gd_exact_modified_hessian(H, h)
        expm_err = float(np.linalg.norm(scipy.linalg.expm(-h * M) - (np.eye(D) - h * H)))
        M2, M3 = ml.log_series_hessian(H, h, 2), ml.log_series_hessian(H, h, 3)
        H3 = H @ H @ H
        ratio = float(np.linalg.norm(M - M2, 2) / (h ** 2 / 3 * np.linalg.norm(H3, 2)))
        frob2, frob3 = float(np.linalg.norm(M - M2)), float(np.linalg.norm(M - M3))
        reduction = frob2 / frob3 if frob3 > 0 else float("inf")  # inf (not finite) fails the criterion
        igr = ml.igr_loss(prob, h)
        igr_hess_err = float(np.linalg.norm(igr.H - M2) / np.linalg.norm(M2))

        # fixed points: GD's (probed affine map, M1) is x*; the IGR minimiser is x* too
        Mg, cg, _ = method_affine_map(GD(h), prob)
        x_gd = affine_fixed_point(Mg, cg)
        gd_fp_err = float(np.linalg.norm(x_gd - xs) / np.linalg.norm(xs))
        igr_min_err = float(np.linalg.norm(igr.minimizer() - xs) / np.linalg.norm(xs))
        per_row = ml.modified_loss(prob, mean_grad_norm=h / 4).minimizer()
        per_row_gap = float(np.linalg.norm(x_gd - per_row) / np.linalg.norm(xs))

        s = {k: v[0] for k, v in sl.items()}
        crit = [
            Criterion("slope of the residual against the modified flow f + h/4 ||grad f||^2", s["modified"], 3.0,
                      0.1, "abs"),
            Criterion("slope of the residual against the plain flow of f", s["plain"], 2.0, 0.1, "abs"),
            Criterion("exact modified loss -log(I - hH)/h: max relative residual over the grid", exact_rel, 0.0,
                      1e-12, "<="),
            Criterion("library GD step = x - h grad f(x) (relative)", step_err, 0.0, 1e-14, "<="),
            Criterion("h=0.05: ||expm(-hM) - (I - hH)||_F", expm_err, 0.0, 1e-12, "<="),
            Criterion("h=0.05: IGR Hessian = H + h/2 H^2 (relative)", igr_hess_err, 0.0, 1e-14, "<="),
            Criterion("h=0.05: log2 of ||M - (H + h/2 H^2)||_2 / (h^2/3 ||H^3||_2) (factor <= 2)",
                      np.log2(ratio), 0.0, 1.0, "abs"),
            Criterion("h=0.05: Frobenius residual reduction by the cubic term", reduction, None, 10.0, ">="),
            Criterion("GD fixed point (probed affine map) = x* (relative)", gd_fp_err, 0.0, 1e-12, "<="),
            Criterion("minimiser of f + h/4 ||grad f||^2 = x* (relative)", igr_min_err, 0.0, 1e-12, "<="),
            Criterion("[control] wrong coefficient h/2 on ||grad f||^2: slope 3 +- 0.1", s["coef_h2"], 3.0, 0.1,
                      "abs", negative=True),
            Criterion("[control] wrong sign -h/4 on ||grad f||^2: slope 3 +- 0.1", s["minus"], 3.0, 0.1, "abs",
                      negative=True),
            Criterion("[control] the regulariser displaces GD's fixed point from x* (>= 1e-8 relative)",
                      gd_fp_err, None, 1e-8, ">=", negative=True),
            Criterion("[control] GD's fixed point is the minimiser of f + h/4 mean_i ||grad f_i||^2 (<= 1e-8)",
                      per_row_gap, 0.0, 1e-8, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed, data={
        "hs": HS, "resid": {k: v[1] for k, v in sl.items()}, "slopes": s, "exact_log": exact_res["exact_log"],
        "series": {"h": h, "ratio": ratio, "frob2": frob2, "frob3": frob3, "expm_err": expm_err},
        "fixed_point": {"gd": gd_fp_err, "igr": igr_min_err, "per_row_gap": per_row_gap},
    })


def figure(result: CheckResult, ax=None):
    from matplotlib.ticker import NullFormatter

    from hetlab.plot import new_axes, slope_guide
    ax = new_axes(ax)
    d = result.data
    h, r, s = d["hs"], d["resid"], d["slopes"]
    ax.loglog(h, r["plain"], "o", label=f"plain flow of $f$ (slope {s['plain']:.2f})")
    ax.loglog(h, r["modified"], "s", label=fr"$f+\frac{{h}}{{4}}\|\nabla f\|^2$ (slope {s['modified']:.2f})")
    ax.loglog(h, r["coef_h2"], "^", ms=5,
              label=fr"[control] $f+\frac{{h}}{{2}}\|\nabla f\|^2$ (slope {s['coef_h2']:.2f})")
    ax.loglog(h, r["minus"], "v", ms=5, label=fr"[control] $f-\frac{{h}}{{4}}\|\nabla f\|^2$ (slope {s['minus']:.2f})")
    slope_guide(ax, h, r["plain"][0] * 1.6, 2, label="slope 2")
    slope_guide(ax, h, r["modified"][0] * 0.4, 3, label="slope 3", color="k")
    ax.set_xlabel("step size $h$")
    ax.set_ylabel(r"one-step residual $\|x_1-x_F(h)\|$")
    ax.set_title("B1: GD follows the flow of $f+\\frac{h}{4}\\|\\nabla f\\|^2$")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax
