"""B2 `sgd_rr_implicit_regularizer`: the expected epoch of SGD with random reshuffling follows
f + eta/(4m) sum_k ||grad f_k||^2 = f + eta/4 ||grad f||^2 + eta/4 V_b (Smith, Dherin, Barrett & De 2021).

m = 4 quadratic minibatch losses (the rows of ``random_quadratics(4, 3, seed)``), d = 3, x0 = 2 N(0, I).
The mean over all 4! = 24 orders of one epoch (``hetlab.algorithms.shuffling.expected_epoch``: the orders
run as stacked copies, exactly, no sampling) is compared with the exact flow (M3) over time m eta of the plain
loss f (slope 2) and of the RR modified loss F_SGD (slope 3).

Negative controls (slope about 2 each, so "slope >= 2.8" must fail): the loss without the variance term,
f + eta/4 ||grad f||^2, against the RR mean (the variance term is needed); a single fixed order (0, 1, 2, 3)
every epoch against F_SGD; the expected epoch of SGD **with replacement** (all 4^4 = 256 index sequences
enumerated) against F_SGD. Its own modified loss is derived here: on quadratics its expected iterate is exactly
gradient descent (the update is affine and the index independent of the iterate), so its epoch follows
f + eta/4 ||grad f||^2, with no variance term; both facts are positive criteria.

The eta grid of THEORY B2, {0.04, 0.02, 0.01, 0.005}, spans 0.9 decades; M4 asks for at least one decade, so
eta = 0.0025 is added (m eta L <= 0.32 on the grid).
"""
from __future__ import annotations

import numpy as np
import torch

from hetlab import modified_losses as ml
from hetlab.algorithms import GD, RandomReshuffling
from hetlab.algorithms import shuffling
from hetlab.comm import SimulatedComm
from hetlab.problems import Oracle, random_quadratics

from ._base import CheckResult, Criterion, Timer, rel_err

ID = "B2"
NAME = "sgd_rr_implicit_regularizer"
CLAIM = ("Averaged over all orderings, an epoch of SGD with random reshuffling over m minibatches follows the flow "
         "of f + eta/(4m) sum_k ||grad f_k||^2 = f + eta/4 ||grad f||^2 + eta/4 V_b over time m eta to O(eta^3) "
         "(residual slope 3, plain flow slope 2); a single fixed order and sampling with replacement do not "
         "(with replacement the expected epoch is m GD steps and follows f + eta/4 ||grad f||^2).")
SOURCE = ("Smith, Dherin, Barrett & De, On the Origin of Implicit Regularization in SGD, ICLR 2021 "
          "(THEORY.md B2; with-replacement modified loss derived here)")

M, D = 4, 3
ETAS = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])  # THEORY grid + 0.0025 so that the fit spans >= 1 decade
FIXED_ORDER = (0, 1, 2, 3)


def make_problem(seed: int = 0):
    """The B2 problem: the m = 4 rows of ``random_quadratics(4, 3, seed=seed)`` are the minibatch losses,
    ``x0 = 2 * N(0, I)`` from ``default_rng(seed)``."""
    prob = random_quadratics(M, D, seed=seed)
    x0 = 2.0 * np.random.default_rng(seed).standard_normal(D)
    return prob, x0


def _t(prob, x):
    return torch.as_tensor(x, dtype=prob.dtype)


def rr_mean(prob, eta, x0) -> np.ndarray:
    """Exact mean over all m! orders of one random-reshuffling epoch."""
    return shuffling.expected_epoch(prob, eta, _t(prob, x0), "rr").numpy()


def replacement_mean(prob, eta, x0) -> np.ndarray:
    """Exact mean over all m^m index sequences of one with-replacement epoch."""
    return shuffling.expected_epoch(prob, eta, _t(prob, x0), "replacement").numpy()


def fixed_order_epoch(prob, eta, x0, order=FIXED_ORDER) -> np.ndarray:
    """One epoch of the library's ``RandomReshuffling`` with a fixed order."""
    method = RandomReshuffling(eta, order=order)
    state = method.init(_t(prob, x0), prob)
    return method.step(state, Oracle(prob), SimulatedComm(1), None)["x"].numpy()


def gd_steps(prob, eta, x0, steps) -> np.ndarray:
    method, oracle, comm = GD(eta), Oracle(prob), SimulatedComm(prob.n)
    state = method.init(_t(prob, x0), prob)
    for _ in range(steps):
        state = method.step(state, oracle, comm, None)
    return state["x"].numpy()


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob, x0 = make_problem(seed)
        f = ml.objective(prob)
        time = lambda eta: M * eta  # noqa: E731
        losses = {
            "plain": lambda e: f,
            "rr": lambda e: ml.sgd_rr_loss(prob, e),
            "no_variance": lambda e: ml.sgd_with_replacement_loss(prob, e),
        }
        s_rr = ml.residual_slopes(lambda e, x: rr_mean(prob, e, x), losses, x0, ETAS, time)
        s_fixed = ml.residual_slopes(lambda e, x: fixed_order_epoch(prob, e, x), {"rr": losses["rr"]}, x0, ETAS, time)
        s_wr = ml.residual_slopes(lambda e, x: replacement_mean(prob, e, x),
                                  {"rr": losses["rr"], "own": losses["no_variance"]}, x0, ETAS, time)

        # exact facts behind the numbers
        eta = float(ETAS[0])
        a = ml.sgd_rr_loss(prob, eta)
        b = ml.modified_loss(prob, grad_norm=eta / 4, between=eta / 4)
        identity_err = max(rel_err(a.H, b.H), rel_err(a.c, b.c))
        _, (orders, ends, _) = shuffling.expected_epoch(prob, eta, _t(prob, x0), "rr", return_paths=True)
        enum_err = max(rel_err(ends[p].numpy(), fixed_order_epoch(prob, eta, x0, orders[p].tolist()))
                       for p in range(orders.shape[0]))
        wr_gd_err = max(rel_err(replacement_mean(prob, e, x0), gd_steps(prob, e, x0, M)) for e in ETAS)

        sr = {k: v[0] for k, v in s_rr.items()}
        crit = [
            Criterion("RR mean over 4! orders: slope against the flow of F_SGD", sr["rr"], None, 2.8, ">="),
            Criterion("RR mean: slope against the plain flow of f", sr["plain"], None, 2.2, "<="),
            Criterion("F_SGD = f + eta/4 ||grad f||^2 + eta/4 V_b (relative, eta=0.04)", identity_err, 0.0, 1e-13,
                      "<="),
            Criterion("enumeration = library RandomReshuffling with each fixed order (max relative)", enum_err, 0.0,
                      1e-14, "<="),
            Criterion("with replacement: mean over 4^4 sequences = 4 library GD steps (max relative)", wr_gd_err,
                      0.0, 1e-13, "<="),
            Criterion("with replacement: slope against its own modified loss f + eta/4 ||grad f||^2",
                      s_wr["own"][0], None, 2.8, ">="),
            Criterion("[control] single fixed order (0,1,2,3): slope against F_SGD >= 2.8", s_fixed["rr"][0], None,
                      2.8, ">=", negative=True),
            Criterion("[control] with replacement: slope against F_SGD >= 2.8", s_wr["rr"][0], None, 2.8, ">=",
                      negative=True),
            Criterion("[control] RR mean without the variance term, f + eta/4 ||grad f||^2: slope >= 2.8",
                      sr["no_variance"], None, 2.8, ">=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed, data={
        "etas": ETAS, "m": M,
        "resid": {"rr_plain": s_rr["plain"][1], "rr_rr": s_rr["rr"][1], "rr_no_variance": s_rr["no_variance"][1],
                  "fixed_rr": s_fixed["rr"][1], "wr_rr": s_wr["rr"][1], "wr_own": s_wr["own"][1]},
        "slopes": {"rr_plain": sr["plain"], "rr_rr": sr["rr"], "rr_no_variance": sr["no_variance"],
                   "fixed_rr": s_fixed["rr"][0], "wr_rr": s_wr["rr"][0], "wr_own": s_wr["own"][0]},
    })


def figure(result: CheckResult, ax=None):
    from matplotlib.ticker import NullFormatter

    from hetlab.plot import new_axes, slope_guide
    ax = new_axes(ax)
    d = result.data
    e, r, s = d["etas"], d["resid"], d["slopes"]
    ax.loglog(e, r["rr_plain"], "o", label=f"RR mean vs flow of $f$ ({s['rr_plain']:.2f})")
    ax.loglog(e, r["rr_rr"], "s", label=fr"RR mean vs $F_{{\rm SGD}}$ ({s['rr_rr']:.2f})")
    ax.loglog(e, r["rr_no_variance"], "x", ms=6,
              label=fr"[control] RR mean vs $f+\frac{{\eta}}{{4}}\|\nabla f\|^2$ ({s['rr_no_variance']:.2f})")
    ax.loglog(e, r["fixed_rr"], "^", ms=5, label=fr"[control] one fixed order vs $F_{{\rm SGD}}$ ({s['fixed_rr']:.2f})")
    ax.loglog(e, r["wr_rr"], "v", ms=5, label=fr"[control] with replacement vs $F_{{\rm SGD}}$ ({s['wr_rr']:.2f})")
    ax.loglog(e, r["wr_own"], "D", ms=4,
              label=fr"with replacement vs $f+\frac{{\eta}}{{4}}\|\nabla f\|^2$ ({s['wr_own']:.2f})")
    slope_guide(ax, e, r["rr_plain"][0] * 1.6, 2, label="slope 2")
    slope_guide(ax, e, r["rr_rr"][0] * 0.4, 3, label="slope 3", color="k")
    ax.set_xlabel(r"step size $\eta$")
    ax.set_ylabel(r"epoch residual $\|\bar x_m-x_F(m\eta)\|$")
    ax.set_title(f"B2: random reshuffling, m = {d['m']} minibatches")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax
