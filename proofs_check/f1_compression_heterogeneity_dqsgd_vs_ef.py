"""F1 `compression_heterogeneity_dqsgd_vs_ef`: D-QSGD has a heterogeneity floor linear in eta even with
exact gradients; error feedback's floor is O(eta^2); DIANA's shifts remove it."""
from __future__ import annotations

import numpy as np
import torch

from hetlab.algorithms.compressed import DIANA, DQSGD, EFSGD
from hetlab.closed_forms_compression import dqsgd_floor, zeta_star_sq_identity
from hetlab.comm import SimulatedComm
from hetlab.compress import RandK, TopK
from hetlab.exact import fit_slope
from hetlab.problems import Oracle, QuadraticProblem

from ._base import CheckResult, Criterion, Timer

ID = "F1"
NAME = "compression_heterogeneity_dqsgd_vs_ef"
CLAIM = ("With exact local gradients on f_i = 1/2||x - b_i||^2, D-QSGD (unbiased rand-k) stalls at "
         "E||x - x*||^2 = eta omega zeta*^2 / (n (2 - eta - eta omega/n)) (linear in eta, proportional to zeta*^2); "
         "D-EF-SGD (top-k, error feedback) has an O(eta^2) floor below it; DIANA converges to x* exactly.")
SOURCE = ("Stich 2020 (arXiv 2009.02388) [SRC-abstract]; DIANA, Mishchenko et al. 2019; "
          "floor formula derived and verified (THEORY.md F1)")

N, D, K = 10, 20, 2
ETAS = np.array([0.1, 0.05, 0.025])                       # THEORY's step sizes (simulated, D-QSGD and EF)
ETAS_FIT = np.array([0.1, 0.05, 0.025, 0.0125, 0.00625])  # M4: >= 4 points over >= 1 decade for the slopes
QSGD_T, QSGD_BURN = 10_000, 2_000
EF_T, EF_BURN = 10_000, 5_000
DIANA_T, DIANA_ETA = 20_000, 0.05
ETA_ZETA, ZETA_SCALE = 0.05, 2.0


def _problem(B: np.ndarray) -> QuadraticProblem:
    A = np.broadcast_to(np.eye(D), (N, D, D)).copy()
    return QuadraticProblem.from_minimizers(torch.tensor(A), torch.tensor(B))


class _IdentityHessianOracle(Oracle):
    """Exact gradients of f_i = 1/2||x - b_i||^2 as ``X - B`` (same values as ``Oracle``, less overhead)."""

    def grad(self, X, idx=None, generator=None):
        return X - self.problem.b if idx is None else X - self.problem.b[idx]


def _time_avg_sq_err(method, prob, x_star, T, burn, seed):
    """Run ``burn + T`` rounds from x0 = 0; return (mean over the last T rounds of ||x - x*||^2, final state)."""
    oracle, comm = _IdentityHessianOracle(prob), SimulatedComm(prob.n)
    gen = torch.Generator().manual_seed(seed)
    state = method.init(torch.zeros(prob.d, dtype=prob.dtype), prob)
    for _ in range(burn):
        state = method.step(state, oracle, comm, gen)
    acc = torch.zeros((), dtype=prob.dtype)
    for _ in range(T):
        state = method.step(state, oracle, comm, gen)
        acc = acc + ((state["x"] - x_star) ** 2).sum()
    return float(acc) / T, state


def run(seed: int = 0) -> CheckResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up dominates
    try:
        with Timer() as t:
            rng = np.random.default_rng(seed)
            B = rng.standard_normal((N, D))
            prob = _problem(B)
            x_star = torch.tensor(B.mean(0))
            zeta = zeta_star_sq_identity(B)
            Q, C = RandK(K, D), TopK(K, D)
            omega = Q.omega
            # (a) D-QSGD floor: simulation vs closed form (independent generator stream per step size)
            pred = np.array([dqsgd_floor(e, omega, zeta, N) for e in ETAS])
            sim = np.array([_time_avg_sq_err(DQSGD(e, Q), prob, x_star, QSGD_T, QSGD_BURN, 1000 * seed + i)[0]
                            for i, e in enumerate(ETAS)])
            ratios = sim / pred
            pred_fit = np.array([dqsgd_floor(e, omega, zeta, N) for e in ETAS_FIT])
            s_q = fit_slope(ETAS_FIT, pred_fit).slope
            # zeta dependence: scale B - b_bar by 2 (same x*, same seed)
            i_z = int(np.nonzero(ETAS == ETA_ZETA)[0][0])
            B2 = B.mean(0) + ZETA_SCALE * (B - B.mean(0))
            sim_z = _time_avg_sq_err(DQSGD(ETA_ZETA, Q), _problem(B2), x_star, QSGD_T, QSGD_BURN,
                                     1000 * seed + i_z)[0]
            zeta_ratio = sim_z / sim[i_z]
            # (b) EF floors (top-k, deterministic: time-averaged over a window, pitfall 3)
            ef = np.array([_time_avg_sq_err(EFSGD(e, C), prob, x_star, EF_T, EF_BURN, 1000 * seed + 10 + i)[0]
                           for i, e in enumerate(ETAS_FIT)])
            s_ef = fit_slope(ETAS_FIT, ef).slope
            ef_over_q = ef[:len(ETAS)] / sim
            # (c) DIANA reaches x*; D-QSGD's last iterate does not
            _, st = _time_avg_sq_err(DIANA(DIANA_ETA, Q), prob, x_star, 1, DIANA_T - 1, 1000 * seed + 20)
            diana_err = float(((st["x"] - x_star) ** 2).sum())
            q_last = float(sim[i_z])
            crit = [Criterion(f"D-QSGD floor, sim/pred at eta={e:g}", r, 1.0, 0.05, "rel")
                    for e, r in zip(ETAS, ratios)]
            crit += [
                Criterion("slope of closed-form D-QSGD floor vs eta (5 etas, 0.1..0.00625)", s_q, 1.0, 0.1, "abs"),
                Criterion(f"D-QSGD floor ratio when B - b_bar is scaled by {ZETA_SCALE:g} (eta={ETA_ZETA:g})",
                          zeta_ratio, ZETA_SCALE ** 2, 0.05, "rel"),
                Criterion("slope of EF floor vs eta (5 etas, 0.1..0.00625)", s_ef, 2.0, 0.15, "abs"),
                Criterion("max over eta of EF floor / D-QSGD floor (must be < 1)", float(ef_over_q.max()), None,
                          1.0, "<="),
                Criterion(f"DIANA squared error after {DIANA_T} iterations (eta={DIANA_ETA:g})", diana_err, 0.0,
                          1e-20, "<="),
                Criterion("[control] D-QSGD reaches x* like DIANA (time-averaged squared error)", q_last, 0.0, 1e-20,
                          "<=", negative=True),
                Criterion("[control] EF floor slope 1 +- 0.15 like D-QSGD", s_ef, 1.0, 0.15, "abs", negative=True),
                Criterion("[control] D-QSGD floor independent of zeta (ratio 1 when B - b_bar is scaled by 2)",
                          zeta_ratio, 1.0, 0.05, "rel", negative=True),
            ]
    finally:
        torch.set_num_threads(threads)
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"etas": ETAS, "etas_fit": ETAS_FIT, "sim": sim, "pred": pred, "pred_fit": pred_fit,
                             "ratios": ratios, "ef": ef, "zeta_sq": zeta, "zeta_ratio": zeta_ratio,
                             "diana_err": diana_err, "slopes": (s_q, s_ef)})


def figure(result: CheckResult, ax=None):
    from matplotlib.ticker import NullFormatter

    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    ax.loglog(d["etas_fit"], d["pred_fit"], "-", label=f"D-QSGD floor, closed form (slope {d['slopes'][0]:.2f})")
    ax.loglog(d["etas"], d["sim"], "o", label="D-QSGD, simulated (time average)")
    ax.loglog(d["etas_fit"], d["ef"], "s--", label=f"D-EF-SGD top-k, simulated (slope {d['slopes'][1]:.2f})")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"$\mathbb{E}\|x-x^\star\|^2$ (stationary)")
    ax.set_title(f"F1: compression floors (DIANA: {d['diana_err']:.1e})")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax
