"""A3 `fedprox_quadratic_fixed_point`: exact FedProx has a biased fixed point, with bias Theta(1/mu)."""
from __future__ import annotations

import numpy as np
import torch

from hetlab import closed_forms as cf
from hetlab.algorithms import FedProx
from hetlab.comm import SimulatedComm
from hetlab.exact import affine_fixed_point, fit_slope, method_affine_map
from hetlab.problems import Oracle, random_quadratics

from ._base import CheckResult, Criterion, Timer, rel_err

ID = "A3"
NAME = "fedprox_quadratic_fixed_point"
CLAIM = ("FedProx with exact proximal steps converges to x_FP = (sum P_i)^-1 sum P_i b_i, P_i = (A_i + mu I)^-1 A_i; "
         "its bias is Theta(1/mu), it follows the surrogate f - 1/(2 mu) mean_i ||grad f_i||^2 to O(1/mu^2), "
         "and an inexact (K gradient steps) local solver has a different fixed point.")
SOURCE = "Li et al. 2020 (FedProx); Pathak & Wainwright 2020 (THEORY.md A3, derived and verified)"

N, D = 8, 5
MUS_ITER = [0.1, 1.0, 10.0, 100.0]
MUS_SLOPE = np.array([10.0, 100.0, 1000.0, 10000.0])


def _iterate_to_convergence(prob, mu, max_rounds=20000):
    """Iterate exact FedProx from 0 until a round moves the model by less than 1e-15."""
    meth, comm, orc = FedProx(mu), SimulatedComm(prob.n), Oracle(prob)
    state = meth.init(torch.zeros(prob.d, dtype=prob.dtype), prob)
    for r in range(max_rounds):
        new = meth.step(state, orc, comm, None)
        step = float((new["x"] - state["x"]).norm())
        state = new
        if step < 1e-15:
            break
    return state["x"].numpy(), r + 1


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        prob = random_quadratics(N, D, spectrum=(0.5, 2.0), seed=seed)
        xs = prob.x_star.numpy()
        errs, rounds = {}, {}
        for mu in MUS_ITER:
            x_end, rounds[mu] = _iterate_to_convergence(prob, mu)
            errs[mu] = rel_err(x_end, cf.fedprox_fixed_point(prob, mu))
        bias = np.array([np.linalg.norm(cf.fedprox_fixed_point(prob, mu) - xs) for mu in MUS_SLOPE])
        s_bias = fit_slope(MUS_SLOPE, bias).slope
        surr = np.array([np.linalg.norm(cf.fedprox_fixed_point(prob, mu) - cf.local_surrogate_minimizer(prob, 1 / mu))
                         for mu in MUS_SLOPE])
        decade_factor = float(np.min(surr[:-1] / surr[1:]))
        bbar_gap = float(np.linalg.norm(cf.fedprox_fixed_point(prob, 1e-6) - prob.b.numpy().mean(0)))
        # inexact local solver: 5 gradient steps of size 0.1 on the proximal objective (fixed point by M1)
        M, c, unflatten = method_affine_map(FedProx(1.0, solver="steps", lr=0.1, local_steps=5), prob)
        x_inexact = unflatten(affine_fixed_point(M, c))["x"].numpy()
        inexact_gap = rel_err(x_inexact, cf.fedprox_fixed_point(prob, 1.0))
        crit = [Criterion(f"iterates vs closed-form x_FP, mu={mu:g} (relative, {rounds[mu]} rounds)", errs[mu], 0.0,
                          1e-11, "<=") for mu in MUS_ITER]
        crit += [
            Criterion("slope of log bias vs log mu (mu = 10..1e4)", s_bias, -1.0, 0.1, "abs"),
            Criterion("surrogate residual shrinks per decade of mu by at least", decade_factor, None, 50.0, ">="),
            Criterion("mu -> 0 (1e-6): x_FP -> mean of local minimisers", bbar_gap, 0.0, 1e-4, "<="),
            Criterion("[control] x_FP = x_star (FedProx unbiased), mu=10", bias[0], 0.0, 1e-10, "<=", negative=True),
            Criterion("[control] inexact 5-step solver has the exact-prox fixed point (mu=1)", inexact_gap, 0.0, 1e-11,
                      "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"mus": MUS_SLOPE, "bias": bias, "surr": surr, "slope": s_bias})


def figure(result: CheckResult, ax=None):
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    mu = d["mus"]
    ax.loglog(mu, d["bias"], "o", label=fr"bias $\|x_{{\rm FP}}-x^\star\|$ (slope {d['slope']:.2f})")
    ax.loglog(mu, d["bias"][0] * (mu / mu[0]) ** -1.0, "-", label=r"predicted $\Theta(1/\mu)$")
    ax.loglog(mu, d["surr"], "s", label="distance to the surrogate minimiser")
    ax.loglog(mu, d["surr"][0] * (mu / mu[0]) ** -2.0, "--", color="gray", lw=1, label=r"$O(1/\mu^2)$")
    ax.set_xlabel(r"proximal weight $\mu$")
    ax.set_ylabel("distance")
    ax.set_title("A3: FedProx's fixed point")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    from matplotlib.ticker import NullFormatter
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax
