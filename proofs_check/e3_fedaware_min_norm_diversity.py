"""E3 `fedaware_min_norm_diversity`: FedAWARE's diversity maximisation is the simplex min-norm problem."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar

from hetlab.algorithms.server_side import (FedAWARE, frank_wolfe_min_norm, kkt_residuals, min_norm_simplex,
                                           two_vector_alpha, weighted_diversity)
from hetlab.problems import Oracle, random_quadratics
from hetlab.comm import SimulatedComm

from ._base import CheckResult, Criterion, Timer

ID = "E3"
NAME = "fedaware_min_norm_diversity"
CLAIM = ("For normalised client momenta the weighted diversity equals 1/||d(lambda)||^2, so FedAWARE's diversity "
         "maximisation is the simplex min-norm problem; its solution satisfies <d*, m_i> >= ||d*||^2 with equality on "
         "the support (common descent direction), and for two vectors alpha* = clip(<v-u,v>/||u-v||^2, 0, 1).")
SOURCE = "Zeng, Xu, Pan, Wang, Tang (FedAWARE), official code fedaware.py / utils.py (THEORY.md E3, derived and verified)"

M, D = 5, 5


def instance(seed: int):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((M, D))
    V[:, 0] += 1.5
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def _slsqp(V):
    G = V @ V.T
    res = minimize(lambda l: l @ G @ l, np.full(len(V), 1 / len(V)), jac=lambda l: 2 * G @ l, method="SLSQP",
                   bounds=[(0, 1)] * len(V), constraints=[{"type": "eq", "fun": lambda l: l.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    return res.x


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        V = instance(seed)
        lam = min_norm_simplex(V)
        d = lam @ V
        nd2 = float(d @ d)
        div = weighted_diversity(V, lam)
        kkt_min, kkt_supp, feas = kkt_residuals(V, lam)
        obj_slsqp = float(np.sum((_slsqp(V) @ V) ** 2))
        lam_fw = frank_wolfe_min_norm(V, 2000, variant="pairwise")
        obj_fw = float(np.sum((lam_fw @ V) ** 2))
        # the public code's vanilla FW is only O(1/t): reported, not a criterion
        obj_fw_vanilla = float(np.sum((frank_wolfe_min_norm(V, 2000, variant="vanilla") @ V) ** 2))
        # diversity is maximal at lambda*: no random simplex point beats it
        rng = np.random.default_rng(seed + 1)
        rand_div = max(weighted_diversity(V, rng.dirichlet(np.ones(M))) for _ in range(500))
        # (c) two unnormalised vectors against a 1-D numeric minimisation; unit vectors give 1/2
        u, v = rng.standard_normal(D) + 0.5, 2.0 * rng.standard_normal(D)
        a_cf = two_vector_alpha(u, v)
        a_num = minimize_scalar(lambda a: float(np.sum((a * u + (1 - a) * v) ** 2)), bounds=(0, 1),
                                method="bounded", options={"xatol": 1e-12}).x
        a_unit = two_vector_alpha(V[0], V[1])
        # the method: one FedAWARE round (alpha = 1) moves x by -eta_g * min-norm of normalised pseudo-gradients
        prob = random_quadratics(M, D, seed=seed)
        meth = FedAWARE(lr=0.1, local_steps=3, server_lr=0.7, alpha=1.0)
        st0 = meth.init(torch.zeros(D, dtype=prob.dtype), prob)
        st1 = meth.step(st0, Oracle(prob), SimulatedComm(M), None)
        Dl = st1["momenta"].numpy()
        Vh = Dl / np.linalg.norm(Dl, axis=1, keepdims=True)
        step_err = np.linalg.norm(st1["x"].numpy() - (-0.7 * (min_norm_simplex(Vh) @ Vh)))
        k_m = kkt_residuals(Vh, st1["weights_lambda"].numpy())
        # negative control: the FedAvg average of the normalised momenta (uniform weights)
        uni = np.full(M, 1 / M)
        kkt_uni = kkt_residuals(V, uni)
        crit = [
            Criterion("(a) weighted diversity at lambda* = 1/||d*||^2", div, 1 / nd2, 1e-10, "rel"),
            Criterion("(a) lambda* maximises the diversity: best of 500 random lambda minus it",
                      rand_div - div, 0.0, 1e-12, "<="),
            Criterion("(b) KKT: -min_i(<d*, m_i> - ||d*||^2)", -kkt_min, 0.0, 1e-8, "<="),
            Criterion("(b) KKT: max on support |<d*, m_i> - ||d*||^2|", kkt_supp, 0.0, 1e-8, "<="),
            Criterion("simplex feasibility of lambda*", feas, 0.0, 1e-14, "<="),
            Criterion("exact QP objective = SLSQP (ftol 1e-15)", nd2, obj_slsqp, 1e-10, "abs"),
            Criterion("pairwise Frank-Wolfe (2000 its) objective within 1e-6", obj_fw - nd2, 0.0, 1e-6, "<="),
            Criterion("(c) two vectors: closed-form alpha* = 1-D numeric minimiser", a_cf, a_num, 1e-8, "abs"),
            Criterion("(c) two unit vectors: alpha* = 1/2", a_unit, 0.5, 1e-12, "abs"),
            Criterion("FedAWARE round = x - eta_g * min-norm direction", step_err, 0.0, 1e-12, "<="),
            Criterion("FedAWARE round: KKT of its weights (support)", k_m[1], 0.0, 1e-8, "<="),
            # negative control: uniform (FedAvg) weights are not the min-norm solution
            Criterion("[control] uniform weights satisfy the KKT conditions", max(-kkt_uni[0], kkt_uni[1]), 0.0,
                      1e-8, "<=", negative=True),
            Criterion("[control] diversity with uniform weights equals the maximum", weighted_diversity(V, uni),
                      div, 1e-6, "rel", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"lam": lam, "s": V @ d - nd2, "div": div, "inv_nd2": 1 / nd2,
                             "div_uniform": weighted_diversity(V, uni), "fw_vanilla_gap": obj_fw_vanilla - nd2})


def figure(result: CheckResult, ax=None):
    """KKT slacks <d*, m_i> - ||d*||^2 per client (zero on the support, positive elsewhere)."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    i = np.arange(len(d["lam"]))
    ax.bar(i - 0.2, d["lam"], 0.4, label=r"$\lambda_i^\star$ (measured)")
    ax.bar(i + 0.2, d["s"], 0.4, label=r"slack $\langle d^\star,\hat m_i\rangle-\|d^\star\|^2$ (predicted $\geq0$)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("client i")
    ax.set_title(f"E3: diversity {d['div']:.4f} = 1/||d*||^2 = {d['inv_nd2']:.4f}")
    ax.legend(frameon=False, fontsize=8)
    return ax
