"""E2 `critical_batch_size_saturation`: with the step re-tuned per batch size, minibatch SGD's exact
mean-square speedup is nearly linear below the critical batch L_max / L and saturates beyond it."""
from __future__ import annotations

import math

import numpy as np
import torch

from hetlab import closed_forms_batch as cfb
from hetlab.algorithms.async_sgd import AsyncSGD
from hetlab.comm import SimulatedComm
from hetlab.problems import Oracle, QuadraticProblem

from ._base import CheckResult, Criterion, Timer

ID = "E2"
NAME = "critical_batch_size_saturation"
CLAIM = ("On THEORY's interpolating least-squares instance with heterogeneous row norms, the exact mean-square "
         "speedup S(B) = log r(B) / log r(1) (best step per B) satisfies S(B) <= B (not a general law: sampling "
         "without replacement can be superlinear on tiny N), doubles (x1.75 or more) while "
         "B <= B_crit / 8 and grows by at most x1.5 per doubling once B >= B_crit = L_max / L; S(N) is GD's rate. "
         "The exact second-moment operator of SGD with a fixed delay matches Monte Carlo.")
SOURCE = ("Stich, Mohtashami & Jaggi 2021 [SRC-abstract]; expected smoothness, Gower et al. 2019; operator "
          "computation derived and verified (THEORY.md E2)")

N, D = 64, 6
BATCHES = (1, 2, 4, 8, 16, 32, 64)
GRID = 300
N_ENUM, B_ENUM = 10, 3                 # exact enumeration of all C(10, 3) = 120 batches
TAU, T_MC, R_MC, ETA_MC_LMAX = 2, 20, 1000, 1.0  # delayed SGD, step 1 / L_max: Monte Carlo vs the exact operator


def make_rows(seed: int = 0, n: int = N, d: int = D) -> np.ndarray:
    """THEORY E2's data: rows N(0, I) e^{U[-1, 1]} (heterogeneous norms), drawn in this order."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.exp(rng.uniform(-1.0, 1.0, (n, 1)))


def interpolating_problem(A: np.ndarray, x_star: np.ndarray) -> QuadraticProblem:
    """One client per row: f_i(x) = 1/2 (a_i^T (x - x*))^2, so every f_i is minimised at x*."""
    H = np.einsum("ni,nj->nij", A, A)
    return QuadraticProblem.from_minimizers(H, np.broadcast_to(x_star, A.shape).copy())


def _delayed_mc(A: np.ndarray, seed: int):
    """Monte Carlo of E||x_T - x*||^2 for AsyncSGD (fixed delay TAU, one row per step; the rows rescaled to
    equal norms, L_max / L about 4, so that a delay of 1 or 2 changes the dynamics visibly), the exact value,
    and the exact value for the wrong delay TAU - 1 (negative control)."""
    A = A / np.linalg.norm(A, axis=1, keepdims=True) * math.sqrt(A.shape[1])  # equal norms: delays matter
    rng = np.random.default_rng(seed + 7)
    x_star = rng.standard_normal(A.shape[1])
    prob = interpolating_problem(A, x_star)
    x0 = torch.zeros(A.shape[1], dtype=torch.float64)
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    eta = ETA_MC_LMAX / cfb.row_constants(A)[1]
    method = AsyncSGD(eta, TAU, batch=1, delays="fixed")
    gen = torch.Generator().manual_seed(seed)
    xs = torch.as_tensor(x_star)
    samples = np.empty(R_MC)
    for r in range(R_MC):
        s = method.init(x0, prob)
        for _ in range(T_MC):
            s = method.step(s, oracle, comm, gen)
        samples[r] = float(((s["x"] - xs) ** 2).sum())
    return samples, _exact_delayed(A, x_star, TAU, eta), _exact_delayed(A, x_star, TAU - 1, eta)


def _exact_delayed(A, x_star, tau, eta) -> float:
    """E||e_T||^2 from T_MC applications of the second-moment operator, z_0 = (e_0, ..., e_0)."""
    Ms = cfb.delayed_sgd_matrices(A, tau, eta)
    z = np.tile(-x_star, tau + 1)
    Z = np.outer(z, z)
    for _ in range(T_MC):
        Z = np.einsum("nab,bc,ndc->ad", Ms, Z, Ms) / len(Ms)
    d = A.shape[1]
    return float(np.trace(Z[:d, :d]))


def run(seed: int = 0) -> CheckResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Timer() as t:
            A = make_rows(seed)
            L, Lmax, mu = cfb.row_constants(A)
            B_crit = cfb.critical_batch_size(L, Lmax)
            rates = [cfb.optimal_ms_rate(A, B, GRID) for B in BATCHES]
            r1 = rates[0][0]
            S = np.array([math.log(r) / math.log(r1) for r, _ in rates])
            etas = np.array([e for _, e in rates])
            derived = np.array([cfb.derived_speedup(B, N, L, Lmax) for B in BATCHES])
            doubling = S[1:] / S[:-1]                                   # S(2B) / S(B), B = 1 .. 32
            lower = [i for i, B in enumerate(BATCHES[:-1]) if B <= B_crit / 8]
            upper = [i for i, B in enumerate(BATCHES[:-1]) if B >= B_crit]
            S_gd = math.log(cfb.gd_optimal_rate(A)) / math.log(r1)
            # pitfall: one step size for every batch (B = 1's best) hides the linear regime
            S_fixed = cfb.speedups(A, BATCHES, fixed_eta=float(etas[0]))
            doubling_fixed = S_fixed[1:] / S_fixed[:-1]
            # the operator's batch second moment against brute force over every batch
            rng = np.random.default_rng(seed + 1)
            A_small = A[:N_ENUM]
            P = rng.standard_normal((D, D))
            P = P @ P.T
            brute = cfb.enumerate_hessian_second_moment(A_small, P, B_ENUM)
            closed = cfb.minibatch_hessian_second_moment(A_small, P, B_ENUM)
            enum_err = float(np.abs(closed - brute).max() / np.abs(brute).max())
            # wrong pair factor (with-replacement-type (B-1)/N instead of (B-1)/(N-1)), THEORY E1 pitfall 3
            Hs = np.einsum("ni,nj->nij", A_small, A_small)
            Sm = Hs.sum(0)
            diag = np.einsum("nij,jk,nkl->il", Hs, P, Hs)
            wrong = diag / (B_ENUM * N_ENUM) + (B_ENUM - 1) / (B_ENUM * N_ENUM * N_ENUM) * (Sm @ P @ Sm - diag)
            wrong_err = float(np.abs(wrong - brute).max() / np.abs(brute).max())
            # delayed SGD: exact operator against Monte Carlo of the library's AsyncSGD
            samples, exact_delayed, exact_wrong_delay = _delayed_mc(A, seed)
            mc_mean = float(samples.mean())
            mc_se = float(samples.std(ddof=1) / math.sqrt(len(samples)))
            crit = [
                Criterion("max over B of S(B) / B (speedup never superlinear)", float((S / BATCHES).max()), 1.0,
                          1.0 + 1e-9, "<="),
                Criterion(f"min S(2B)/S(B) for B <= B_crit/8 = {B_crit / 8:.2f} (B in "
                          f"{[BATCHES[i] for i in lower]})", float(doubling[lower].min()), 2.0, 1.75, ">="),
                Criterion(f"max S(2B)/S(B) for B >= B_crit = {B_crit:.1f} (B in {[BATCHES[i] for i in upper]})",
                          float(doubling[upper].max()), None, 1.5, "<="),
                Criterion("S(N) from the operator vs full-batch GD's ((kappa-1)/(kappa+1))^2", float(S[-1]), S_gd,
                          1e-10, "rel"),
                Criterion(f"batch second moment E[H_B P H_B]: closed form vs all C({N_ENUM},{B_ENUM}) batches "
                          "(max rel. error)", enum_err, 0.0, 1e-12, "<="),
                Criterion(f"delayed SGD (tau={TAU}, eta={ETA_MC_LMAX:g}/L_max, T={T_MC}): Monte Carlo mean of ||e_T||^2 "
                          f"({R_MC} runs) vs exact operator, within 3 SE", mc_mean, exact_delayed, 3 * mc_se, "abs"),
                Criterion("[control] one step size for all B (B=1's best): S(2B)/S(B) >= 1.75 for B <= B_crit/8",
                          float(doubling_fixed[lower].min()), 2.0, 1.75, ">=", negative=True),
                Criterion(f"[control] exact operator with the wrong delay tau={TAU - 1} matches the Monte Carlo "
                          "within 3 SE", mc_mean, exact_wrong_delay, 3 * mc_se, "abs", negative=True),
                Criterion("[control] pair factor (B-1)/N instead of (B-1)/(N-1) matches brute force",
                          wrong_err, 0.0, 1e-12, "<=", negative=True),
            ]
    finally:
        torch.set_num_threads(threads)
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"batches": np.array(BATCHES), "S": S, "S_fixed": S_fixed, "derived": derived,
                             "etas": etas, "L": L, "L_max": Lmax, "mu": mu, "B_crit": B_crit, "S_gd": S_gd,
                             "mc_mean": mc_mean, "mc_se": mc_se, "exact_delayed": exact_delayed,
                             "exact_wrong_delay": exact_wrong_delay})


def figure(result: CheckResult, ax=None):
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    B = d["batches"]
    ax.loglog(B, B, ":", color="gray", label="linear speedup S(B) = B")
    ax.loglog(B, d["S"], "o-", label="exact, step re-tuned per B")
    ax.loglog(B, d["derived"], "s--", label=r"expected smoothness $L_{\max}/\mathcal{L}(B)$")
    ax.loglog(B, d["S_fixed"], "^-", label="exact, one step for all B (pitfall)")
    ax.axvline(d["B_crit"], color="k", lw=0.8, alpha=0.5)
    ax.text(d["B_crit"], 1.1, r" $B_{\rm crit}=L_{\max}/L$", fontsize=8)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("speedup S(B) over B = 1 (iterations)")
    ax.set_title("E2: the speedup saturates past the critical batch")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax
