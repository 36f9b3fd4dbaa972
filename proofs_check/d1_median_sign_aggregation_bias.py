"""D1 `median_sign_aggregation_bias`: majority vote is the sign of the median, and both stall at x_med."""
from __future__ import annotations

import math

import numpy as np
import torch

from hetlab import aggregate as agg
from hetlab import closed_forms_median as cfm
from hetlab.algorithms import GD, MedianSGD, SignSGDMajorityVote
from hetlab.exact import fit_slope, must_differ
from hetlab.problems import QuadraticProblem

from ._base import CheckResult, Criterion, Timer, iterate
from .d2_noisy_median_gap_order import TS, rate_problem, simulate_majority_vote

ID = "D1"
NAME = "median_sign_aggregation_bias"
CLAIM = ("For odd n, sign(sum_i sign v_i) = sign(med_i v_i) (no zeros); on heterogeneous separable quadratics "
         "medianGD converges to x_med (med_i a_ic (x_c - m_ic) = 0, found by bisection), not to x_star, and "
         "signGD with majority vote ends in a band of width eta around x_med, so its time-averaged ||grad f|| "
         "tends to ||grad f(x_med)|| > 0 instead of 0.")
SOURCE = ("Chen, Chen, Sun, Wu, Hong 2020 (median- vs mean-based methods under heterogeneity); identities and "
          "closed forms derived and verified (THEORY.md D1)")

N_VEC, N_ODD, N_EVEN = 100_000, 5, 4
A1, M1, X0_1D, LR_1D = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, 4.0]), 5.0, 0.01
STEPS_MEDIAN, STEPS_SHORT = 20_000, 5_000


def problem_1d() -> QuadraticProblem:
    """THEORY D1(b): f_i(x) = a_i/2 (x - m_i)^2 with a = (1, 2, 0.5), m = (0, 1, 4): x_med = 1, x_star = 8/7."""
    return QuadraticProblem.from_minimizers(A1.reshape(3, 1, 1), M1.reshape(3, 1))


def sign_identity_mismatches(n: int, count: int, seed: int) -> int:
    """Among ``count`` Gaussian vectors of ``n`` worker values, how many coordinates have
    ``majority_vote != sign(coordinate_median)`` (library aggregators; the vectors are the columns)."""
    rng = np.random.default_rng(seed)
    V = torch.as_tensor(rng.standard_normal((n, count)))
    return int((agg.majority_vote(V) != torch.sign(agg.coordinate_median(V))).sum())


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        # (a) the identity (odd n) and its failure for even n
        mism_odd = sign_identity_mismatches(N_ODD, N_VEC, seed)
        mism_even = sign_identity_mismatches(N_EVEN, N_VEC, seed + 1)
        # (b) 1-D: medianGD -> x_med (bisection), GD -> x_star, signGD-MV in a band of width eta
        prob = problem_1d()
        x_star = float(prob.x_star[0])
        x_med = float(cfm.median_fixed_point(A1, M1))
        tr_med, _ = iterate(MedianSGD(LR_1D), prob, STEPS_MEDIAN, x0=[X0_1D])
        tr_gd, _ = iterate(GD(LR_1D), prob, STEPS_SHORT, x0=[X0_1D])
        tr_sign, _ = iterate(SignSGDMajorityVote(LR_1D), prob, STEPS_SHORT, x0=[X0_1D])
        xT_med, xT_gd = float(tr_med[-1, 0]), float(tr_gd[-1, 0])
        band = float(np.abs(tr_sign[STEPS_SHORT // 2:, 0] - x_med).max())
        bias = abs(x_med - x_star)
        md = must_differ(abs(xT_med - x_star), abs(xT_gd - x_star), tol_fix=1e-10, closed_form_bias=bias, rel=1e-8)
        # (c) n = 5, d = 10: noiseless signGD-MV, eta = 1/sqrt(dT), stacked over T (deterministic: one run per T)
        a, m = rate_problem(seed)
        d = a.shape[1]
        avg, _ = simulate_majority_vote(a, m, [1.0 / math.sqrt(d * T) for T in TS], 0.0, list(TS),
                                        torch.Generator().manual_seed(seed))
        xm = cfm.median_fixed_point(a, m)
        gn_med = float(cfm.global_grad_norm_separable(a, m, xm))
        slope = fit_slope(TS, avg).slope
        crit = [
            Criterion(f"(b) medianGD after {STEPS_MEDIAN} steps: |x_T - x_med|", abs(xT_med - x_med), 0.0, 1e-10, "<="),
            Criterion("(b) bisection x_med equals THEORY's value 1", x_med, 1.0, 1e-14, "abs"),
            Criterion(f"(a) n={N_ODD}: majority vote != sign(median) among {N_VEC} vectors", mism_odd, 0, 0, "<="),
            Criterion("(b) medianGD stays away from x_star: |x_T - x_star| >= 0.1", abs(xT_med - x_star), bias, 0.1,
                      ">="),
            Criterion("(b) medianGD's error |x_T - x_star| equals the closed-form bias |x_med - x_star|",
                      abs(xT_med - x_star), bias, 1e-8, "rel"),
            Criterion(f"(b) GD (same eta) reaches x_star: |x_T - x_star| after {STEPS_SHORT} steps",
                      abs(xT_gd - x_star), 0.0, 1e-10, "<="),
            Criterion("M6 must-differ verdict, medianGD vs GD (1 = pass)", float(md["passed"]), 1.0, 0.0, "abs"),
            Criterion("(b) signGD-MV ends in the band |x_t - x_med| <= eta (second half)", band, LR_1D,
                      LR_1D * (1 + 1e-9), "<="),
            Criterion(f"(c) time-averaged ||grad f|| at T={TS[-1]} vs ||grad f(x_med)|| (5%)", avg[-1], gn_med, 0.05,
                      "rel"),
            Criterion("(c) slope of the time-averaged ||grad f|| in T >= -0.02 (no convergence)", slope, 0.0, -0.02,
                      ">="),
            Criterion("[control] medianGD reaches x_star (|x_T - x_star| <= 1e-10)", abs(xT_med - x_star), 0.0, 1e-10,
                      "<=", negative=True),
            Criterion(f"[control] the identity holds for even n={N_EVEN} (mean of the middle pair)", mism_even, 0, 0,
                      "<=", negative=True),
            Criterion("[control] noiseless signGD-MV's time-averaged ||grad f|| decays with slope <= -0.12", slope,
                      -0.25, -0.12, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"tr_med": tr_med[:, 0], "tr_gd": tr_gd[:, 0], "tr_sign": tr_sign[:, 0], "x_med": x_med,
                             "x_star": x_star, "lr": LR_1D, "Ts": np.array(TS, dtype=float), "avg_grad_norm": avg,
                             "grad_norm_x_med": gn_med, "mismatch_even": mism_even, "mismatch_odd": mism_odd})


def figure(result: CheckResult, ax=None):
    """1-D example: distance to x_star of medianGD, signGD-MV and GD, with the predicted plateau |x_med - x_star|."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    xs = d["x_star"]
    K = 3500
    r = np.arange(K + 1)
    ax.semilogy(r, np.maximum(np.abs(d["tr_med"][: K + 1] - xs), 1e-17), "-", label="medianGD (measured)")
    ax.semilogy(r, np.maximum(np.abs(d["tr_sign"][: K + 1] - xs), 1e-17), "-", lw=0.8,
                label=fr"signGD-MV, $\eta={d['lr']:g}$ (measured)")
    ax.semilogy(r, np.maximum(np.abs(d["tr_gd"][: K + 1] - xs), 1e-17), "-", label="GD (measured)")
    ax.axhline(abs(d["x_med"] - xs), color="k", ls="--", lw=1, label=r"predicted $|x_{\rm med}-x^\star|=1/7$")
    ax.set_xlabel("step $t$")
    ax.set_ylabel(r"$|x_t-x^\star|$")
    ax.set_title(r"D1: $a=(1,2,0.5)$, $m=(0,1,4)$: median-based methods stop at $x_{\rm med}=1$", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
