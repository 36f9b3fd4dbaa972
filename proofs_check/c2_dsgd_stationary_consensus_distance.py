"""C2 `dsgd_stationary_consensus_distance`: the stationary consensus distance of D-SGD, exactly.

Three settings (THEORY C2). (i) identical Hessians, f_i = 1/2 ||x - b_i||^2: the fixed point's consensus
distance is a sum over the eigenmodes of W, different for the two orderings, O(eta^2 zeta^2) for small
eta. (ii) heterogeneous Hessians: the fixed point solves an nd-dimensional linear system and the mean is
biased at first order in eta, by at most (L/mu) Xi. (iii) noise only: the stationary E Xi^2 is a sum over
modes, checked against the Lyapunov equation (M2) of the library's probed map and by Monte Carlo.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hetlab import closed_forms_consensus as cfc
from hetlab.algorithms import DSGD
from hetlab.comm import SimulatedComm
from hetlab.exact import (affine_fixed_point, fit_slope, mc_interval, method_affine_map, spectral_radius,
                          stationary_moments)
from hetlab.problems import GaussianNoiseOracle, Oracle, QuadraticProblem
from hetlab.topology import make_topology

from ._base import CheckResult, Criterion, Timer

ID = "C2"
NAME = "dsgd_stationary_consensus_distance"
CLAIM = ("D-SGD's stationary consensus distance equals the mode-by-mode closed form for both orderings "
         "(ATC and parallel differ); it scales as eta^2 (only for eta << 1 - rho) and exactly as zeta^2; with "
         "heterogeneous Hessians the fixed point solves the linear system of M1 and the mean is O(eta)-biased with "
         "||xbar - x*|| <= (L/mu) Xi; noise alone drives E Xi^2 to the closed-form sum over modes (M2 and Monte Carlo).")
SOURCE = ("Koloskova et al. 2020 (consensus distance O(eta^2 zeta^2 / p^2)); Kong et al. 2021 (consensus distance); "
          "exact stationary formulas derived in THEORY.md C2")

N_NODES, D, ETA, ITERS = 16, 3, 0.05, 4000                  # (i)
ETAS_SMALL = (5e-5, 1e-4, 2e-4, 4e-4, 8e-4)                  # eta << delta = 1 - rho = 0.0507 (1.2 decades)
ETAS_PRE = (1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2)               # eta ~ delta: pre-asymptotic (pitfall 1)
SLOPE_ITERS = 800                                             # consensus modes contract at <= rho (1 - eta) = 0.95 per step
SCALES = (1.0, 2.0, 4.0, 8.0)                                 # B - bbar scaled by c: zeta^2 spans 1.8 decades
ETAS_BIAS = (0.02, 0.01, 0.005)                               # (ii)
ETAS_BIAS_SMALL = (5e-5, 1e-4, 2e-4, 4e-4, 8e-4)              # (ii) slope window, from the probed fixed points
ETA_NOISE, S2, CURV = 0.1, 1.0, 1.0                           # (iii): lambda = 1, per-coordinate variance s^2 = 1
D_M2, D_MC = 2, 16                                            # dimensions of the M2 check and of the Monte Carlo
MC_BURN, MC_BATCHES, MC_BATCH_LEN = 300, 32, 500              # 16 000 recorded steps of d = 16 coordinates, batch means


def _identical(B, curvature=1.0) -> QuadraticProblem:
    n, d = B.shape
    return QuadraticProblem.from_minimizers(curvature * np.broadcast_to(np.eye(d), (n, d, d)).copy(), B)


def _final_X(method, problem, iters: int) -> np.ndarray:
    """Stacked worker models after ``iters`` exact steps from X = 0 (the library's D-SGD)."""
    oracle, comm = Oracle(problem), SimulatedComm(problem.n)
    state = method.init(torch.zeros(problem.d, dtype=problem.dtype), problem)
    for _ in range(iters):
        state = method.step(state, oracle, comm, None)
    return state["X"].numpy().copy()


def _xi2(X) -> float:
    X = np.asarray(X)
    Dv = X - X.mean(0)
    return float((Dv * Dv).sum() / X.shape[0])


class _ShiftOracle(Oracle):
    """Exact gradients plus a fixed stacked vector ``E``: probes how gradient noise enters one step."""

    def __init__(self, problem, E):
        super().__init__(problem)
        self.E = torch.as_tensor(E, dtype=problem.dtype)

    def grad(self, X, idx=None, generator=None):
        return self.problem.grad(X, idx) + self.E


def probe_noise_matrix(method, problem) -> np.ndarray:
    """The matrix ``N`` with step(X; G + E) = step(X; G) + N vec(E), read off the implementation."""
    n, d = problem.n, problem.d
    comm = SimulatedComm(n)
    state = method.init(torch.zeros(d, dtype=problem.dtype), problem)
    base = method.step(state, _ShiftOracle(problem, np.zeros((n, d))), comm, None)["X"].numpy().reshape(-1)
    cols = []
    for k in range(n * d):
        E = np.zeros(n * d)
        E[k] = 1.0
        out = method.step(state, _ShiftOracle(problem, E.reshape(n, d)), comm, None)["X"].numpy().reshape(-1)
        cols.append(out - base)
    return np.array(cols).T


def _noise_mc(topo, problem, seed):
    """Batch means of Xi^2 / d over a long single chain of the library's D-SGD (ATC) with Gaussian noise."""
    d = problem.d
    oracle = GaussianNoiseOracle(problem, math.sqrt(d * S2))        # per-coordinate variance sigma^2 / d = S2
    method = DSGD(ETA_NOISE, topo, ordering="atc")
    comm, gen = SimulatedComm(problem.n), torch.Generator().manual_seed(seed)
    state = method.init(torch.zeros(d, dtype=problem.dtype), problem)
    for _ in range(MC_BURN):
        state = method.step(state, oracle, comm, gen)
    vals = np.empty(MC_BATCHES * MC_BATCH_LEN)
    for t in range(vals.size):
        state = method.step(state, oracle, comm, gen)
        X = state["X"]
        Dv = X - X.mean(0)
        vals[t] = float((Dv * Dv).sum())
    vals /= problem.n * d                                            # Xi^2 per coordinate
    return vals.reshape(MC_BATCHES, MC_BATCH_LEN).mean(1), vals


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        topo = make_topology("ring", N_NODES)
        W = topo.W_numpy()
        rho = topo.rho
        rng = np.random.default_rng(seed)
        B = rng.standard_normal((N_NODES, D))
        A_het = np.stack([np.diag(a) for a in rng.uniform(0.5, 2.0, (N_NODES, D))])
        prob = _identical(B)
        zeta2 = cfc.zeta_sq(B)

        # ---------------- (i) fixed point, both orderings, eta = 0.05, 4000 iterations
        pred = {o: cfc.stationary_consensus_sq(W, B, ETA, o) for o in cfc.ORDERINGS}
        X_sim = {o: _final_X(DSGD(ETA, topo, ordering=o), prob, ITERS) for o in cfc.ORDERINGS}
        xi_sim = {o: _xi2(X_sim[o]) for o in cfc.ORDERINGS}
        mean_err = max(float(np.linalg.norm(X_sim[o].mean(0) - B.mean(0))) for o in cfc.ORDERINGS)
        bound = {o: cfc.consensus_bound(W, ETA, zeta2, o) for o in cfc.ORDERINGS}
        kol = cfc.koloskova_bound(W, ETA, zeta2)

        # eta^2 scaling: closed form and the library, inside (eta << delta) and outside (eta ~ delta) the window
        def sim_curve(etas, o):
            return np.array([_xi2(_final_X(DSGD(e, topo, ordering=o), prob, SLOPE_ITERS)) for e in etas])

        cf_small = {o: np.array([cfc.stationary_consensus_sq(W, B, e, o) for e in ETAS_SMALL]) for o in cfc.ORDERINGS}
        sim_small = {o: sim_curve(ETAS_SMALL, o) for o in cfc.ORDERINGS}
        slope_cf = {o: fit_slope(ETAS_SMALL, cf_small[o]).slope for o in cfc.ORDERINGS}
        slope_sim = {o: fit_slope(ETAS_SMALL, sim_small[o]).slope for o in cfc.ORDERINGS}
        sim_pre = sim_curve(ETAS_PRE, "atc")
        cf_pre = np.array([cfc.stationary_consensus_sq(W, B, e, "atc") for e in ETAS_PRE])
        slope_pre = fit_slope(ETAS_PRE, sim_pre).slope
        curve_err = max(float(np.max(np.abs(sim_small[o] / cf_small[o] - 1))) for o in cfc.ORDERINGS)
        curve_err = max(curve_err, float(np.max(np.abs(sim_pre / cf_pre - 1))))
        asym = cfc.small_step_consensus_sq(W, B, ETAS_SMALL[0], "atc")
        asym_rel = abs(cf_small["atc"][0] / asym - 1)

        # zeta^2 scaling: B -> bbar + c (B - bbar), simulated with the library
        zetas, xi_zeta = [], {o: [] for o in cfc.ORDERINGS}
        for c in SCALES:
            Bc = B.mean(0) + c * (B - B.mean(0))
            zetas.append(cfc.zeta_sq(Bc))
            for o in cfc.ORDERINGS:
                xi_zeta[o].append(_xi2(_final_X(DSGD(ETA, topo, ordering=o), _identical(Bc), SLOPE_ITERS)))
        zetas = np.array(zetas)
        slope_zeta = {o: fit_slope(zetas, np.array(xi_zeta[o])).slope for o in cfc.ORDERINGS}

        # ---------------- (ii) heterogeneous Hessians: the linear system of M1, the O(eta) mean bias
        prob_het = QuadraticProblem.from_minimizers(A_het, B)
        xs = np.linalg.solve(A_het.sum(0), np.einsum("nij,nj->i", A_het, B))
        L = float(A_het.max())
        mu = float(np.linalg.eigvalsh(A_het.mean(0)).min())
        sys_err, biases, bound_ratio, ident_err, xi_het = 0.0, [], 0.0, 0.0, []
        for o, etas in (("atc", ETAS_BIAS), ("parallel", ETAS_BIAS[:1])):
            for e in etas:
                X_star = cfc.dsgd_fixed_point(W, A_het, B, e, o)
                M, _ = cfc.dsgd_affine_map(W, A_het, B, e, o)
                iters = int(math.ceil(math.log(1e-14) / math.log(spectral_radius(M))))
                Xs = _final_X(DSGD(e, topo, ordering=o), prob_het, iters)
                sys_err = max(sys_err, float(np.linalg.norm(Xs - X_star) / np.linalg.norm(X_star)))
                bias_vec = Xs.mean(0) - xs
                ident_err = max(ident_err, float(np.linalg.norm(bias_vec - cfc.mean_bias_from_consensus(A_het, Xs))
                                                 / np.linalg.norm(bias_vec)))
                bound_ratio = max(bound_ratio, float(np.linalg.norm(bias_vec) / (L / mu * math.sqrt(_xi2(Xs)))))
                if o == "atc":
                    biases.append(float(np.linalg.norm(bias_vec)))
                    xi_het.append(_xi2(Xs))
        biases = np.array(biases)
        # the implementation's exact fixed points (probed affine map, M1) in the asymptotic window
        bias_small = []
        for e in ETAS_BIAS_SMALL:
            Mp, cp, unflatten = method_affine_map(DSGD(e, topo, ordering="atc"), prob_het)
            Xp = unflatten(affine_fixed_point(Mp, cp))["X"].numpy()
            bias_small.append(float(np.linalg.norm(Xp.mean(0) - xs)))
        bias_small = np.array(bias_small)
        slope_bias = fit_slope(ETAS_BIAS_SMALL, bias_small).slope
        # one more halving (eta = 0.0025), from the implementation's probed fixed point
        Mp, cp, unflatten = method_affine_map(DSGD(ETAS_BIAS[-1] / 2, topo, ordering="atc"), prob_het)
        bias_half = float(np.linalg.norm(unflatten(affine_fixed_point(Mp, cp))["X"].numpy().mean(0) - xs))
        ratios = np.append(biases[:-1] / biases[1:], biases[-1] / bias_half)
        ratio_small = bias_small[1:] / bias_small[:-1]
        approach = float(np.max(np.diff(np.abs(ratios - 2.0))))       # |ratio - 2| must shrink with eta

        # ---------------- (iii) noise-driven consensus: M2 on the probed map vs the sum over modes, and MC
        prob_noise = _identical(np.zeros((N_NODES, D_M2)), CURV)
        m2 = {}
        n_err = 0.0
        for o in cfc.ORDERINGS:
            meth = DSGD(ETA_NOISE, topo, ordering=o)
            Mp, cp, _ = method_affine_map(meth, prob_noise)
            Np = probe_noise_matrix(meth, prob_noise)
            n_err = max(n_err, float(np.abs(Np - cfc.dsgd_noise_matrix(W, D_M2, ETA_NOISE, o)).max()))
            m, C = stationary_moments(Mp, cp, Np, S2 * np.eye(N_NODES * D_M2))
            _, m2[o], _ = cfc.stacked_stationary_summary(m, C, prob_noise.A.numpy(), np.zeros((N_NODES, D_M2)))
        noise_pred = {o: cfc.noise_consensus_sq(W, ETA_NOISE, D_M2, S2, CURV, o) for o in cfc.ORDERINGS}
        m2_err = max(abs(m2[o] / noise_pred[o] - 1) for o in cfc.ORDERINGS)
        # Monte Carlo: one long chain of the library's D-SGD; the d coordinates are independent chains
        batch_means, trace = _noise_mc(topo, _identical(np.zeros((N_NODES, D_MC)), CURV), seed)
        mc_mean, mc_lo, mc_hi = mc_interval(batch_means)
        per_coord = cfc.noise_consensus_sq(W, ETA_NOISE, 1, S2, CURV, "atc")
        mc_se = (mc_hi - mc_mean) / 3.0
        mc_z = abs(mc_mean - per_coord) / mc_se

        crit = [
            Criterion("(i) ATC: simulated Xi^2 vs mode-by-mode closed form (relative), eta=0.05, 4000 it.",
                      xi_sim["atc"], pred["atc"], 1e-10, "rel"),
            Criterion("(i) parallel: simulated Xi^2 vs its closed form (relative)", xi_sim["parallel"],
                      pred["parallel"], 1e-10, "rel"),
            Criterion("(i) identical Hessians: ||xbar - bbar|| (both orderings)", mean_err, 0.0, 1e-12, "<="),
            Criterion("(i) ATC bound Xi^2 / (eta rho/(1-(1-eta) rho))^2 zeta^2", xi_sim["atc"] / bound["atc"], 1.0,
                      1.0, "<="),
            Criterion("(i) parallel bound Xi^2 / (eta/(1-rho+eta))^2 zeta^2", xi_sim["parallel"] / bound["parallel"],
                      1.0, 1.0, "<="),
            Criterion("(i) ATC bound <= 4 eta^2 rho^2 zeta^2 / p^2 (ratio)", bound["atc"] / kol, 1.0, 1.0, "<="),
            Criterion("(i) simulated Xi^2(eta) vs closed form, 10 step sizes, 15 runs (max relative)", curve_err, 0.0, 1e-10,
                      "<="),
            Criterion("(i) ATC closed-form slope of Xi^2 vs eta, eta in [5e-5, 8e-4]", slope_cf["atc"], 2.0, 0.05,
                      "abs"),
            Criterion("(i) parallel closed-form slope vs eta, eta in [5e-5, 8e-4]", slope_cf["parallel"], 2.0, 0.05,
                      "abs"),
            Criterion("(i) ATC simulated slope vs eta, eta in [5e-5, 8e-4]", slope_sim["atc"], 2.0, 0.05, "abs"),
            Criterion("(i) parallel simulated slope vs eta, eta in [5e-5, 8e-4]", slope_sim["parallel"], 2.0, 0.05,
                      "abs"),
            Criterion("(i) small-step formula eta^2 sum (lam/(1-lam))^2 |B_j|^2 / n at eta=5e-5 (relative)",
                      asym_rel, 0.0, 0.01, "<="),
            Criterion("(i) ATC simulated slope of Xi^2 vs zeta^2 (c in 1,2,4,8)", slope_zeta["atc"], 1.0, 1e-10,
                      "abs"),
            Criterion("(i) parallel simulated slope of Xi^2 vs zeta^2", slope_zeta["parallel"], 1.0, 1e-10, "abs"),
            Criterion("(ii) simulation vs linear solve of M1, eta in {0.02, 0.01, 0.005} (+ parallel 0.02)", sys_err,
                      0.0, 1e-10, "<="),
            Criterion("(ii) xbar - x* = -(sum A_i)^-1 sum A_i (x_i - xbar) at the fixed point (relative)", ident_err,
                      0.0, 1e-8, "<="),
            Criterion("(ii) ||xbar - x*|| / ((L/mu) Xi) (max over eta, both orderings)", bound_ratio, 1.0, 1.0, "<="),
            Criterion("(ii) |bias(2 eta)/bias(eta) - 2| shrinks for eta = 0.01, 0.005, 0.0025 (max increment)",
                      approach, 0.0, 0.0, "<="),
            Criterion("(ii) slope of the probed bias vs eta, eta in [5e-5, 8e-4] (O(eta))", slope_bias, 1.0, 0.05,
                      "abs"),
            Criterion("(ii) bias ratio bias(1e-4)/bias(5e-5) (-> 2)", ratio_small[0], 2.0, 0.02, "abs"),
            Criterion("(iii) probed noise matrix N equals -eta (W kron I) / -eta I", n_err, 0.0, 1e-15, "<="),
            Criterion("(iii) M2 on the probed map vs sum over modes, both orderings (relative)", m2_err, 0.0, 1e-10,
                      "<="),
            Criterion("(iii) Monte Carlo E Xi^2 per coordinate: |mean - pred| / SE (batch means)", mc_z, 0.0, 3.0,
                      "<="),
            Criterion("(iii) Monte Carlo E Xi^2 per coordinate (relative)", mc_mean, per_coord, 0.05, "rel"),
            Criterion("[control] parallel's simulated Xi^2 equals the ATC closed form", xi_sim["parallel"],
                      pred["atc"], 1e-10, "rel", negative=True),
            Criterion("[control] slope vs eta in the pre-asymptotic window eta in [1.25e-3, 2e-2] is 2", slope_pre, 2.0,
                      0.05, "abs", negative=True),
            Criterion("[control] heterogeneous Hessians: mean xbar equals x* (eta = 0.005)", biases[-1], 0.0, 1e-10,
                      "<=", negative=True),
        ]
    etas_curve = np.geomspace(3e-5, 0.06, 120)
    data = {
        "etas_curve": etas_curve,
        "cf_curve": {o: np.array([cfc.stationary_consensus_sq(W, B, e, o) for e in etas_curve]) for o in cfc.ORDERINGS},
        "asym_curve": {o: np.array([cfc.small_step_consensus_sq(W, B, e, o) for e in etas_curve])
                       for o in cfc.ORDERINGS},
        "etas_small": np.array(ETAS_SMALL), "sim_small": sim_small, "etas_pre": np.array(ETAS_PRE), "sim_pre": sim_pre,
        "eta": ETA, "xi_sim": xi_sim, "pred": pred, "delta": 1.0 - rho, "slope_pre": slope_pre, "slope_sim": slope_sim,
        "zetas": zetas, "xi_zeta": {o: np.array(v) for o, v in xi_zeta.items()},
        "etas_bias": np.array(ETAS_BIAS), "biases": biases, "xi_het": np.array(xi_het), "L_over_mu": L / mu,
        "etas_bias_small": np.array(ETAS_BIAS_SMALL), "bias_small": bias_small, "bias_ratios": ratios,
        "noise_pred": noise_pred, "noise_m2": m2, "d_m2": D_M2, "noise_per_coord": per_coord,
        "mc_batch_means": batch_means, "mc_mean": mc_mean, "mc_se": mc_se, "mc_trace": trace[:3000], "d_mc": D_MC,
        "zeta_sq": zeta2,
    }
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed, data=data)


def figure(result: CheckResult, ax=None):
    """Xi^2 at the fixed point against eta: library (markers) over the closed forms (lines), both orderings."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    colors = {"atc": "C0", "parallel": "C1"}
    for o in cfc.ORDERINGS:
        ax.loglog(d["etas_curve"], d["cf_curve"][o], "-", color=colors[o], lw=1.5, label=f"{o}: closed form")
        ax.loglog(d["etas_curve"], d["asym_curve"][o], ":", color=colors[o], lw=1,
                  label=fr"{o}: $\eta^2$ asymptote")
        ax.loglog(d["etas_small"], d["sim_small"][o], "o", color=colors[o], ms=5, label=f"{o}: D-SGD (hetlab)")
        ax.loglog([d["eta"]], [d["xi_sim"][o]], "s", color=colors[o], ms=6)
    ax.loglog(d["etas_pre"], d["sim_pre"], "^", color="C0", ms=5,
              label=fr"ATC, $\eta\sim\delta$ (slope {d['slope_pre']:.2f})")
    ax.axvline(d["delta"], color="gray", ls="--", lw=1, label=r"$\delta=1-\rho$")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$\Xi_\star^2$")
    ax.set_title("C2: stationary consensus distance (ring, n=16)")
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return ax


def figure_zeta(result: CheckResult, ax=None):
    """Xi^2 against zeta^2 (B - bbar scaled by c): slope exactly one, both orderings."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    z = d["zetas"]
    for o, col in (("atc", "C0"), ("parallel", "C1")):
        ax.loglog(z, d["xi_zeta"][o], "o", color=col, ms=6, label=f"{o}: D-SGD (hetlab)")
        ax.loglog(z, d["pred"][o] * z / z[0], "-", color=col, lw=1.2, label=fr"{o}: $\Xi_\star^2(c=1)\,c^2$")
    ax.set_xlabel(r"$\zeta_\star^2$")
    ax.set_ylabel(r"$\Xi_\star^2$")
    ax.set_title(r"C2: $\Xi_\star^2\propto\zeta_\star^2$ ($\eta=0.05$)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


def figure_bias(result: CheckResult, ax=None):
    """Heterogeneous Hessians: the mean bias ||xbar - x*|| and the bound (L/mu) Xi against eta."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    eb = np.concatenate([d["etas_bias_small"], d["etas_bias"][::-1]])
    bb = np.concatenate([d["bias_small"], d["biases"][::-1]])
    ax.loglog(eb, bb, "o", ms=5, label=r"$\|\bar x_\star-x^\star\|$ (hetlab fixed points)")
    ax.loglog(d["etas_bias"], d["L_over_mu"] * np.sqrt(d["xi_het"]), "s", ms=5,
              label=r"bound $(L/\mu)\,\Xi_\star$")
    ax.loglog(eb, bb[0] * eb / eb[0], "--", color="gray", lw=1, label="slope 1")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel("distance")
    ax.set_title("C2(ii): the mean is biased at first order")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


def figure_noise(result: CheckResult, ax=None):
    """Noise-driven Xi^2 per coordinate along one chain, its batch means, and the prediction."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    tr = d["mc_trace"]
    ax.plot(np.arange(tr.size), tr, lw=0.5, alpha=0.6, label=r"$\Xi_t^2/d$ along the chain (after burn-in)")
    pred = d["noise_per_coord"]
    ax.axhline(pred, color="k", lw=1.5, label=f"predicted {pred:.5f}")
    ax.axhline(d["mc_mean"], color="C3", ls="--", lw=1.2,
               label=f"Monte Carlo {d['mc_mean']:.5f} ± {3 * d['mc_se']:.5f} (3 SE)")
    ax.set_xlabel("step (first 3000 recorded)")
    ax.set_ylabel(r"$\Xi^2$ per coordinate")
    ax.set_title(r"C2(iii): noise-driven consensus distance (ATC, $\eta=0.1$)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
