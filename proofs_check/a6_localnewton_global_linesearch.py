"""A6 `localnewton_global_linesearch`: local Newton + global line search is monotone but biased on quadratics."""
from __future__ import annotations

import numpy as np
import torch

from hetlab.algorithms.second_order import LocalNewton
from hetlab.problems import Oracle, random_logistic, random_quadratics

from ._base import CheckResult, Criterion, Timer, iterate

ID = "A6"
NAME = "localnewton_global_linesearch"
CLAIM = ("On heterogeneous quadratics (lambda = 0), averaged local damped Newton moves along b_bar - x for any "
         "Hessians and any K (factor 1 - (1 - alpha)^K). With exact global line search the iterates stop after one "
         "round at t* b_bar, t* = b_bar^T(mean A_i b_i)/(b_bar^T A_bar b_bar) (x0 = 0): monotone but biased. "
         "Without line search (gamma = 1, alpha = 1) the limit is b_bar with excess 1/2 (b_bar - x*)^T A_bar (b_bar - x*).")
SOURCE = ("Bischoff, Guennemann, Jaggi, Stich 2021, arXiv 2109.02388 (THEORY.md A6; quadratic analysis derived "
          "and verified)")

# the problem of A5 with heterogeneous minimisers (THEORY A6 'Experiment')
N, D, ROUNDS = 6, 5, 10


def _f(prob, x) -> float:
    return float(prob.global_loss(torch.as_tensor(x, dtype=prob.dtype)))


def line_minimiser_t(prob) -> float:
    """Closed-form t* = b_bar^T (sum_i q_i A_i b_i) / (b_bar^T A_bar b_bar) for x0 = 0."""
    A, b, q = prob.A.numpy(), prob.b.numpy(), prob.weights.numpy()
    bbar = q @ b
    return float(bbar @ np.einsum("i,ijk,ik->j", q, A, b) / (bbar @ prob.A_bar.numpy() @ bbar))


def no_linesearch_excess(prob) -> float:
    """Closed-form f(b_bar) - f* = 1/2 (b_bar - x*)^T A_bar (b_bar - x*)."""
    e = prob.weights.numpy() @ prob.b.numpy() - prob.x_star.numpy()
    return float(0.5 * e @ prob.A_bar.numpy() @ e)


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob = random_quadratics(N, D, spectrum=(0.2, 2.0), seed=seed)
        bbar = prob.weights.numpy() @ prob.b.numpy()
        f_star = prob.f_star
        tstar = line_minimiser_t(prob)
        f_pred = _f(prob, tstar * bbar)
        # (b) exact global line search, alpha = 1, K = 1
        traj, _ = iterate(LocalNewton(1, 1.0, 0.0, line_search="exact"), prob, ROUNDS)
        fs = np.array([_f(prob, x) for x in traj])
        # the same with damping alpha = 0.5 and K = 3 (direction factor 1 - 0.5^3), same limit
        traj_d, _ = iterate(LocalNewton(3, 0.5, 0.0, line_search="exact"), prob, ROUNDS)
        # direction of one round from a random x: d = (1 - (1 - alpha)^K)(b_bar - x)
        x_r = torch.as_tensor(np.random.default_rng(seed + 7).standard_normal(D), dtype=prob.dtype)
        ln = LocalNewton(3, 0.5, 0.0)
        d_meas = (prob.weights @ (ln.local_newton(x_r.expand(N, D), Oracle(prob)) - x_r)).numpy()
        d_pred = (1 - 0.5 ** 3) * (bbar - x_r.numpy())
        # (a) without line search, gamma = 1, alpha = 1
        traj_nols, _ = iterate(LocalNewton(1, 1.0, 0.0, line_search=None), prob, ROUNDS)
        excess_pred = no_linesearch_excess(prob)
        excess_nols = _f(prob, traj_nols[-1]) - f_star
        # Armijo on logistic regression (the non-degenerate case of the pitfall): monotone
        logi = random_logistic(N, 20, D, seed=seed)
        traj_lg, _ = iterate(LocalNewton(2, 1.0, 1e-3, line_search="armijo"), logi, ROUNDS)
        f_lg = np.array([_f(logi, x) for x in traj_lg])
        excess = fs[-1] - f_star
        x_star = prob.x_star.numpy()
        crit = [
            Criterion("f(x^10) = f(t* b_bar) (relative)", abs(fs[-1] - f_pred) / abs(f_pred), 0.0, 1e-12, "<="),
            Criterion("monotone: max_t f(x^{t+1}) - f(x^t)", float(np.max(np.diff(fs))), 0.0, 1e-12, "<="),
            Criterion("biased: f(x^10) - f* (THEORY's own instance gave 0.0255)", excess, None, 1e-3, ">="),
            Criterion("iterate after one round = t* b_bar", np.linalg.norm(traj[1] - tstar * bbar), 0.0, 1e-12, "<="),
            Criterion("alpha = 0.5, K = 3: same limit t* b_bar",
                      np.linalg.norm(traj_d[-1] - tstar * bbar), 0.0, 1e-12, "<="),
            Criterion("direction d = (1 - (1 - alpha)^K)(b_bar - x) (alpha = 0.5, K = 3)",
                      np.linalg.norm(d_meas - d_pred), 0.0, 1e-12, "<="),
            Criterion("no line search (gamma = 1, alpha = 1): x^10 = b_bar",
                      np.linalg.norm(traj_nols[-1] - bbar), 0.0, 1e-12, "<="),
            Criterion("no line search: f(x^10) - f* = closed-form excess (relative)", excess_nols, excess_pred,
                      1e-8, "rel"),
            Criterion("Armijo on logistic regression is monotone: max_t f(x^{t+1}) - f(x^t)",
                      float(np.max(np.diff(f_lg))), 0.0, 1e-12, "<="),
            # negative controls
            Criterion("[control] local Newton + line search reaches f* (f(x^10) - f* <= 1e-10)",
                      excess, 0.0, 1e-10, "<=", negative=True),
            Criterion("[control] line search makes the limit x* (||x^10 - x*|| <= 1e-8)",
                      np.linalg.norm(traj[-1] - x_star), 0.0, 1e-8, "<=", negative=True),
            Criterion("[control] without line search the limit is x* (||x^10 - x*|| <= 1e-8)",
                      np.linalg.norm(traj_nols[-1] - x_star), 0.0, 1e-8, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"f": fs, "f_nols": np.array([_f(prob, x) for x in traj_nols]), "f_star": f_star,
                             "f_pred": f_pred, "excess_pred": excess_pred, "t_star": tstar})


def figure(result: CheckResult, ax=None):
    """f(x^t) - f* per round with and without line search, against the two predicted plateaus."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    r = np.arange(len(d["f"]))
    ax.semilogy(r, d["f"] - d["f_star"], "o", ms=4, label="exact line search (measured)")
    ax.axhline(d["f_pred"] - d["f_star"], color="C0", ls="--", lw=1, label=r"predicted $f(t^\star\bar b)-f^\star$")
    ax.semilogy(r, d["f_nols"] - d["f_star"], "s", ms=4, label=r"$\gamma=1$ (measured)")
    ax.axhline(d["excess_pred"], color="C1", ls="--", lw=1, label=r"predicted $f(\bar b)-f^\star$")
    ax.set_xlabel("round t")
    ax.set_ylabel(r"$f(x^t)-f^\star$")
    ax.set_title("A6: local Newton + line search is monotone but biased")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
