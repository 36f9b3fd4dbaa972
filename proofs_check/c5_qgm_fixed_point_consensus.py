"""C5 `qgm_fixed_point_consensus`: local momentum amplifies the heterogeneity drift of D-SGD,
quasi-global momentum does not."""
from __future__ import annotations

import math

import numpy as np

from hetlab import closed_forms_gossip as cfg
from hetlab.algorithms.gossip import DSGDMomentum, QGDSGDm
from hetlab.exact import affine_fixed_point, method_affine_map, spectral_radius
from hetlab.topology import make_topology

from ._base import CheckResult, Criterion, Timer
from .c3_dsgd_zeta_dependence_vs_tracking import make_problem, run_method

ID = "C5"
NAME = "qgm_fixed_point_consensus"
CLAIM = ("On heterogeneous quadratics, D-SGD with local heavy-ball momentum (DSGDm) has the fixed point of D-SGD with "
         "step eta/(1-beta), while quasi-global momentum (QG-DSGDm, training-code form) has the fixed point of D-SGD "
         "with step eta: its consensus distance and error are much smaller (about (1-beta)^2 times for small steps).")
SOURCE = ("Lin et al. 2021 (QG-DSGDm; update rule of the RelaySGD repository's re-implementation) "
          "(THEORY.md C5, fixed-point analysis derived and verified)")

N, LR, BETA, ITERS = 8, 0.005, 0.9, 20000
SMALL_LR = 0.0005  # eta / (1 - beta) = 0.005 << delta = 0.195: the (1 - beta)^2 regime


class QGDividedByOnePlusBeta(QGDSGDm):
    r"""The variant of one simulation script of the RelaySGD repository (``paper-figures/algorithms.py``):
    :math:`X^{t+1}=W\big(X^t-\eta(\beta\hat M+G)/(1+\beta)\big)`, buffer as in :class:`~hetlab.algorithms.QGDSGDm`.
    Its fixed point is D-SGD's with step :math:`\eta/(1+\beta)`, not :math:`\eta`."""

    name = "qg_dsgdm_div_1_plus_beta"

    def step(self, state, oracle, comm, generator):
        X = state["X"]
        M_tilde = (self.beta * state["M_hat"] + oracle.grad(X, None, generator)) / (1 + self.beta)
        X_new = comm.mix(X - self.lr * M_tilde, self.W(state))
        M_hat = self.beta * state["M_hat"] + (1 - self.beta) * (X - X_new) / self.lr
        return {"X": X_new, "M_hat": M_hat, "round": state["round"] + 1}


def _probed_fixed_point(method, problem):
    """The fixed-point state of ``method`` read off its probed affine map (M1), and the map's spectral radius."""
    M, c, unflatten = method_affine_map(method, problem)
    return unflatten(affine_fixed_point(M, c)), spectral_radius(M)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _rms(X, xs):
    return math.sqrt(cfg.error_sq(X, xs))


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        ring = make_topology("ring", N)
        W = ring.W_numpy()
        prob = make_problem(n=N, seed=seed)
        xs = prob.x_star.numpy()
        G_at = lambda X: prob.grad(X).numpy()  # noqa: E731
        # predictions: D-SGD fixed points from the linear system
        X_eff = cfg.dsgdm_fixed_point(prob, W, LR, BETA)     # D-SGD with eta / (1 - beta)
        X_eta = cfg.qg_dsgdm_fixed_point(prob, W, LR, BETA)  # D-SGD with eta
        X_1pb = cfg.qg_one_plus_beta_fixed_point(prob, W, LR, BETA)  # D-SGD with eta / (1 + beta)
        xi_eff, xi_eta = cfg.consensus_distance_sq(X_eff), cfg.consensus_distance_sq(X_eta)
        # the implementations' fixed points by probing (M1)
        fp_m, rho_m = _probed_fixed_point(DSGDMomentum(LR, ring, BETA), prob)
        fp_q, rho_q = _probed_fixed_point(QGDSGDm(LR, ring, BETA), prob)
        fp_v, _ = _probed_fixed_point(QGDividedByOnePlusBeta(LR, ring, BETA), prob)
        Xm, Xq, Xv = fp_m["X"].numpy(), fp_q["X"].numpy(), fp_v["X"].numpy()
        buf_m = _rel(fp_m["M"].numpy(), G_at(fp_m["X"]) / (1 - BETA))
        buf_q = float(np.abs(fp_q["M_hat"].numpy()).max())
        # and by iterating (20000 steps from 0)
        st_m, err_m = run_method(DSGDMomentum(LR, ring, BETA), prob, ITERS)
        st_q, err_q = run_method(QGDSGDm(LR, ring, BETA), prob, ITERS)
        it_m, it_q = _rel(st_m["X"].numpy(), X_eff), _rel(st_q["X"].numpy(), X_eta)
        xi_m, xi_q = cfg.consensus_distance_sq(st_m["X"].numpy()), cfg.consensus_distance_sq(st_q["X"].numpy())
        # small-step regime: the ratio of consensus distances tends to (1 - beta)^2
        ratio_small = (cfg.consensus_distance_sq(cfg.qg_dsgdm_fixed_point(prob, W, SMALL_LR, BETA))
                       / cfg.consensus_distance_sq(cfg.dsgdm_fixed_point(prob, W, SMALL_LR, BETA)))
        crit = [
            Criterion("DSGDm consensus distance (20000 steps) = D-SGD(eta/(1-beta)) closed form (relative)",
                      abs(xi_m - xi_eff) / xi_eff, 0.0, 1e-10, "<="),
            Criterion("QG-DSGDm consensus distance (20000 steps) = D-SGD(eta) closed form (relative)",
                      abs(xi_q - xi_eta) / xi_eta, 0.0, 1e-10, "<="),
            Criterion("DSGDm iterate = D-SGD(eta/(1-beta)) fixed point (relative)", it_m, 0.0, 1e-10, "<="),
            Criterion("QG-DSGDm iterate = D-SGD(eta) fixed point (relative)", it_q, 0.0, 1e-10, "<="),
            Criterion("M1: DSGDm fixed point = D-SGD(eta/(1-beta)) (relative)", _rel(Xm, X_eff), 0.0, 1e-10, "<="),
            Criterion("M1: QG-DSGDm fixed point = D-SGD(eta) (relative)", _rel(Xq, X_eta), 0.0, 1e-10, "<="),
            Criterion("M1: DSGDm buffer at the fixed point = grad f_i(x_i)/(1-beta) (relative)", buf_m, 0.0, 1e-10,
                      "<="),
            Criterion("M1: QG buffer at the fixed point = 0 (max entry)", buf_q, 0.0, 1e-10, "<="),
            Criterion("M1: both probed maps are stable (max spectral radius)", max(rho_m, rho_q), None, 1 - 1e-6,
                      "<="),
            Criterion("M1: the (1+beta) variant's fixed point = D-SGD(eta/(1+beta)) (relative)", _rel(Xv, X_1pb), 0.0,
                      1e-10, "<="),
            Criterion("QG's RMS error / DSGDm's RMS error (must be <= 0.5)",
                      _rms(st_q["X"].numpy(), xs) / _rms(st_m["X"].numpy(), xs), None, 0.5, "<="),
            Criterion(f"small steps (eta = {SMALL_LR}): Xi^2_QG / Xi^2_DSGDm = (1-beta)^2 within 10%", ratio_small,
                      (1 - BETA) ** 2, 0.1, "rel"),
            Criterion("[control] QG's consensus distance equals DSGDm's (relative 10%)", xi_q, xi_m, 0.1, "rel",
                      negative=True),
            Criterion("[control] DSGDm's fixed point is D-SGD's with the same eta (relative)", _rel(Xm, X_eta), 0.0,
                      1e-10, "<=", negative=True),
            Criterion("[control] the divide-by-(1+beta) QG variant has D-SGD(eta)'s fixed point (relative)",
                      _rel(Xv, X_eta), 0.0, 1e-10, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"err_m": err_m, "err_q": err_q, "rms_eff": _rms(X_eff, xs), "rms_eta": _rms(X_eta, xs),
                             "xi_eff": xi_eff, "xi_eta": xi_eta, "xi_1pb": cfg.consensus_distance_sq(X_1pb),
                             "rms_1pb": _rms(X_1pb, xs), "ratio_small": ratio_small})


def figure(result: CheckResult, ax=None):
    """RMS distance to x_star per step for DSGDm and QG-DSGDm, with the predicted D-SGD fixed-point levels."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    k = np.arange(1, len(d["err_m"]))
    sel = np.unique(np.geomspace(1, len(k), 600).astype(int)) - 1  # log-spaced steps
    ax.plot(k[sel], d["err_m"][1:][sel], "-", label=r"DSGDm measured ($\beta=0.9$)")
    ax.axhline(d["rms_eff"], color="C0", ls="--", lw=1, label=r"predicted: D-SGD($\eta/(1-\beta)$) fixed point")
    ax.plot(k[sel], d["err_q"][1:][sel], "-", color="C1", label="QG-DSGDm measured")
    ax.axhline(d["rms_eta"], color="C1", ls="--", lw=1, label=r"predicted: D-SGD($\eta$) fixed point")
    ax.axhline(d["rms_1pb"], color="C2", ls=":", lw=1, label=r"QG divided by $1+\beta$: D-SGD($\eta/(1+\beta)$)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"$\sqrt{\frac{1}{n}\sum_i\|x_i^t-x^\star\|^2}$")
    ax.set_title(r"C5: momentum fixed points on a ring of 8 ($\eta=0.005$)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax
