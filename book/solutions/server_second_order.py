r"""Reference answers to the exercises of the chapter "Server-side and second-order methods".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy, without
calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_server_second_order.py`` checks each answer against an independent computation with
hetlab (FedAvg's exact affine map, FedAWARE's exact min-norm solver and Frank–Wolfe, LocalNewton iterated
with and without its line search) and SciPy (SLSQP, bounded scalar minimisation).

============================  ===========================================================================
exercise                      functions
============================  ===========================================================================
``so-ex-server-lr``           :func:`fedavg_Qbar`, :func:`server_sgd_rate`, :func:`optimal_server_lr`
``so-ex-diversity``           :func:`weighted_diversity`, :func:`inverse_sq_norm`, :func:`min_norm_point`,
                              :func:`arc_max_diversity`
``so-ex-two-vector``          :func:`two_vector_alpha`, :func:`two_vector_min_norm_sq`
``so-ex-kkt``                 :func:`kkt_slacks`, :func:`is_min_norm`, :func:`frank_wolfe_gap`
``so-ex-exact-step``          :func:`exact_line_search_step`
``so-ex-line-limit``          :func:`line_limit`, :func:`line_minimiser_t`, :func:`line_excess`
``so-ex-no-line-search``      :func:`no_line_search_rate`, :func:`no_line_search_limit`,
                              :func:`no_line_search_excess`
============================  ===========================================================================

Quadratic clients are :math:`f_i(x)=\frac12(x-b_i)^\top A_i(x-b_i)` with weights :math:`q_i` (``A [n, d, d]``,
``b [n, d]``, ``q [n]``); then :math:`\bar A=\sum_iq_iA_i`, :math:`\bar c=\sum_iq_iA_ib_i` and
:math:`x^\star=\bar A^{-1}\bar c`.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["fedavg_Qbar", "server_sgd_rate", "optimal_server_lr", "weighted_diversity", "inverse_sq_norm",
           "min_norm_point", "arc_max_diversity", "two_vector_alpha", "two_vector_min_norm_sq", "kkt_slacks",
           "is_min_norm", "frank_wolfe_gap", "exact_line_search_step", "line_limit", "line_minimiser_t",
           "line_excess", "no_line_search_rate", "no_line_search_limit", "no_line_search_excess"]


def _quad(A, b, q=None):
    A, b = np.asarray(A, dtype=float), np.asarray(b, dtype=float)
    q = np.full(len(b), 1.0 / len(b)) if q is None else np.asarray(q, dtype=float) / np.sum(q)
    Abar = np.einsum("i,ijk->jk", q, A)
    cbar = np.einsum("i,ijk,ik->j", q, A, b)
    return A, b, q, Abar, cbar

# ------------------------------------------------------------------------------ so-ex-server-lr


def fedavg_Qbar(A, lr: float, K: int, q=None) -> np.ndarray:
    r""":math:`\bar Q=\sum_iq_iQ_i`, :math:`Q_i=I-(I-\eta A_i)^K`: FedAvg's pseudo-gradient on quadratics is
    :math:`\Delta(x)=\bar Q x-\sum_iq_iQ_ib_i`, so its Jacobian is :math:`\bar Q` (symmetric)."""
    A = np.asarray(A, dtype=float)
    q = np.full(len(A), 1.0 / len(A)) if q is None else np.asarray(q, dtype=float) / np.sum(q)
    eye = np.eye(A.shape[1])
    return sum(qi * (eye - np.linalg.matrix_power(eye - lr * Ai, K)) for qi, Ai in zip(q, A))


def server_sgd_rate(Qbar, server_lr: float) -> float:
    r"""Per-round contraction of FedAvg with :math:`x\leftarrow x-\eta_g\Delta`: the error obeys
    :math:`e^+=(I-\eta_g\bar Q)e`, and :math:`\bar Q` is symmetric, so the rate is
    :math:`\max_j|1-\eta_g\lambda_j(\bar Q)|`."""
    lam = np.linalg.eigvalsh(np.asarray(Qbar, dtype=float))
    return float(np.max(np.abs(1.0 - server_lr * lam)))


def optimal_server_lr(Qbar) -> tuple[float, float]:
    r"""``(eta_g*, rate*)``: :math:`\max(|1-\eta_g\lambda_{\min}|,|1-\eta_g\lambda_{\max}|)` is smallest where the
    two are equal, :math:`\eta_g^\star=2/(\lambda_{\min}+\lambda_{\max})`, with rate
    :math:`(\kappa-1)/(\kappa+1)`, :math:`\kappa=\lambda_{\max}/\lambda_{\min}` of :math:`\bar Q`."""
    lam = np.linalg.eigvalsh(np.asarray(Qbar, dtype=float))
    lo, hi = float(lam[0]), float(lam[-1])
    return 2.0 / (lo + hi), (hi - lo) / (hi + lo)

# ------------------------------------------------------------------------------ so-ex-diversity


def weighted_diversity(V, lam) -> float:
    r"""The definition :math:`\Lambda(\lambda)=\sum_i\lambda_i\|v_i\|^2/\|\sum_i\lambda_iv_i\|^2` (``inf`` if the
    combination vanishes)."""
    V, lam = np.asarray(V, dtype=float), np.asarray(lam, dtype=float)
    d = lam @ V
    den = float(d @ d)
    return float(lam @ np.sum(V * V, axis=1)) / den if den > 0 else np.inf


def inverse_sq_norm(V, lam) -> float:
    r"""The answer :math:`1/\|d(\lambda)\|^2` for unit rows and :math:`\sum_i\lambda_i=1`: the numerator of
    :math:`\Lambda` is :math:`\sum_i\lambda_i\cdot1=1`."""
    d = np.asarray(lam, dtype=float) @ np.asarray(V, dtype=float)
    den = float(d @ d)
    return 1.0 / den if den > 0 else np.inf


def min_norm_point(V) -> np.ndarray:
    r"""Exact :math:`\lambda^\star=\arg\min_{\lambda\in\Delta}\|\lambda^\top V\|^2` for a few rows.

    For every support :math:`S` solve the equality-constrained problem (Lagrange:
    :math:`G_S\lambda_S=\frac\nu2\mathbf 1`, :math:`\mathbf 1^\top\lambda_S=1`, with :math:`G=VV^\top`) by least
    squares, and keep the first candidate that passes the KKT test of :func:`is_min_norm` (non-negative, and
    :math:`\langle d,v_i\rangle\ge\|d\|^2` for *every* :math:`i`). The problem is convex, so KKT certifies it.
    """
    V = np.asarray(V, dtype=float)
    m = V.shape[0]
    G = V @ V.T
    for k in range(1, m + 1):
        for S in itertools.combinations(range(m), k):
            S = list(S)
            KKT = np.block([[G[np.ix_(S, S)], -np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            rhs = np.r_[np.zeros(k), 1.0]
            sol = np.linalg.lstsq(KKT, rhs, rcond=None)[0]
            lam = np.zeros(m)
            lam[S] = sol[:k]
            if lam.min() < -1e-12 or abs(lam.sum() - 1) > 1e-9:
                continue
            lam = np.clip(lam, 0.0, None)
            lam /= lam.sum()
            if is_min_norm(V, lam, 1e-10):
                return lam
    raise RuntimeError("no support passed the KKT test")  # cannot happen: the QP has a KKT point


def arc_max_diversity(theta: float) -> float:
    r"""Unit vectors in a plane whose directions span an arc :math:`\theta<\pi`: the min-norm point of their hull
    is the midpoint of the two extreme ones, :math:`\|d^\star\|=\cos(\theta/2)`, so the largest weighted
    diversity is :math:`1/\cos^2(\theta/2)` (infinite for :math:`\theta\ge\pi`, when :math:`0` is in the hull)."""
    if theta >= np.pi:
        return np.inf
    return 1.0 / np.cos(theta / 2) ** 2

# ----------------------------------------------------------------------------- so-ex-two-vector


def two_vector_alpha(u, v) -> float:
    r""":math:`\|v+\alpha(u-v)\|^2=\|v\|^2+2\alpha\langle v,u-v\rangle+\alpha^2\|u-v\|^2` is a convex parabola in
    :math:`\alpha`; its minimiser :math:`\langle v,v-u\rangle/\|u-v\|^2` clipped to :math:`[0,1]`.
    For unit vectors :math:`\langle v,v-u\rangle=1-\langle u,v\rangle=\frac12\|u-v\|^2`, so :math:`\alpha^\star=\frac12`."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    den = float((u - v) @ (u - v))
    if den == 0.0:
        return 0.5  # u = v: every alpha gives the same point
    return float(np.clip(v @ (v - u) / den, 0.0, 1.0))


def two_vector_min_norm_sq(u, v) -> float:
    r""":math:`\min_\alpha\|\alpha u+(1-\alpha)v\|^2`. Inside :math:`(0,1)` it is
    :math:`(\|u\|^2\|v\|^2-\langle u,v\rangle^2)/\|u-v\|^2` (the squared distance from 0 to the line through
    :math:`u,v`); for unit vectors :math:`(1+\cos\theta)/2=\cos^2(\theta/2)`."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    a = two_vector_alpha(u, v)
    if 0.0 < a < 1.0:
        return float(((u @ u) * (v @ v) - (u @ v) ** 2) / ((u - v) @ (u - v)))
    w = a * u + (1 - a) * v
    return float(w @ w)

# ------------------------------------------------------------------------------------ so-ex-kkt


def kkt_slacks(V, lam) -> np.ndarray:
    r"""Slacks :math:`s_i=\langle d,v_i\rangle-\|d\|^2`, :math:`d=\lambda^\top V`. A feasible :math:`\lambda` is
    optimal iff :math:`s_i\ge0` for all :math:`i` and :math:`s_i=0` where :math:`\lambda_i>0`."""
    V, lam = np.asarray(V, dtype=float), np.asarray(lam, dtype=float)
    d = lam @ V
    return V @ d - d @ d


def is_min_norm(V, lam, tol: float = 1e-8) -> bool:
    """The KKT test of :func:`kkt_slacks`, with feasibility of ``lam`` (entries >= 0, sum 1)."""
    lam = np.asarray(lam, dtype=float)
    if lam.min() < -tol or abs(lam.sum() - 1.0) > tol:
        return False
    s = kkt_slacks(V, lam)
    return bool(s.min() >= -tol and np.all(np.abs(s[lam > tol]) <= tol))


def frank_wolfe_gap(V, lam) -> float:
    r"""Frank–Wolfe gap :math:`g(\lambda)=\max_{s\in\Delta}\langle\nabla\phi(\lambda),\lambda-s\rangle
    =2(\|d\|^2-\min_i\langle d,v_i\rangle)` of :math:`\phi(\lambda)=\|\lambda^\top V\|^2`. By convexity
    :math:`\phi(\lambda)-\phi(\lambda^\star)\le\langle\nabla\phi(\lambda),\lambda-\lambda^\star\rangle\le g(\lambda)`:
    a certificate that needs no :math:`\lambda^\star`. It is :math:`-2\min_is_i`."""
    return float(-2.0 * kkt_slacks(V, lam).min())

# ------------------------------------------------------------------------------ so-ex-exact-step


def exact_line_search_step(Abar, cbar, x, d) -> float:
    r""":math:`\gamma^\star=\arg\min_{\gamma\ge0}f(x+\gamma d)` for :math:`f=\frac12x^\top\bar Ax-\bar c^\top x+\text{const}`:
    :math:`\frac{d}{d\gamma}f(x+\gamma d)=\nabla f(x)^\top d+\gamma\,d^\top\bar Ad=0`, so
    :math:`\gamma^\star=\max(0,-\nabla f(x)^\top d/d^\top\bar Ad)`."""
    Abar, cbar, x, d = (np.asarray(t, dtype=float) for t in (Abar, cbar, x, d))
    g = Abar @ x - cbar
    return float(max(0.0, -(g @ d) / (d @ Abar @ d)))

# ------------------------------------------------------------------------------ so-ex-line-limit


def line_limit(A, b, x0, q=None) -> np.ndarray:
    r"""Where local Newton (:math:`\lambda=0`) with exact line search stops from ``x0``: every direction is
    parallel to :math:`u=\bar b-x^0`, and the first line search minimises :math:`f` on the half-line
    :math:`x^0+tu`, :math:`t\ge0`. The line minimiser is :math:`t^\star=u^\top\bar A(x^\star-x^0)/u^\top\bar Au`
    (the :math:`\bar A`-orthogonal projection of :math:`x^\star`), so the limit is :math:`x^0+\max(t^\star,0)\,u`."""
    A, b, q, Abar, cbar = _quad(A, b, q)
    x0 = np.asarray(x0, dtype=float)
    xs = np.linalg.solve(Abar, cbar)
    u = q @ b - x0
    t = (u @ Abar @ (xs - x0)) / (u @ Abar @ u)
    return x0 + max(t, 0.0) * u


def line_minimiser_t(A, b, q=None) -> float:
    r""":math:`t^\star=\bar b^\top\bar c/\bar b^\top\bar A\bar b` for :math:`x^0=0` (:math:`\bar c=\bar Ax^\star=\sum_iq_iA_ib_i`)."""
    A, b, q, Abar, cbar = _quad(A, b, q)
    bb = q @ b
    return float(bb @ cbar / (bb @ Abar @ bb))


def line_excess(A, b, q=None) -> float:
    r""":math:`f(t^\star\bar b)-f^\star=\frac12\|x^\star\|_{\bar A}^2\sin^2\theta`, with :math:`\theta` the angle between
    :math:`x^\star` and :math:`\bar b` in the :math:`\bar A` inner product (Pythagoras: :math:`t^\star\bar b` is the
    :math:`\bar A`-projection of :math:`x^\star` on the line). Zero iff :math:`\bar b\parallel x^\star`."""
    A, b, q, Abar, cbar = _quad(A, b, q)
    xs = np.linalg.solve(Abar, cbar)
    bb = q @ b
    nx, nb, ip = xs @ Abar @ xs, bb @ Abar @ bb, bb @ Abar @ xs
    return float(0.5 * (nx - ip ** 2 / nb))

# ------------------------------------------------------------------------- so-ex-no-line-search


def no_line_search_rate(alpha: float, K: int) -> float:
    r"""With :math:`\gamma=1` a round is :math:`x^+=x+(1-(1-\alpha)^K)(\bar b-x)`, so
    :math:`x^+-\bar b=(1-\alpha)^K(x-\bar b)`: the rate is :math:`|1-\alpha|^K` (converges iff :math:`0<\alpha<2`)."""
    return float(abs(1.0 - alpha) ** K)


def no_line_search_limit(b, q=None) -> np.ndarray:
    r"""The fixed point :math:`\bar b=\sum_iq_ib_i`, whatever the Hessians, :math:`\alpha` and :math:`K`."""
    b = np.asarray(b, dtype=float)
    q = np.full(len(b), 1.0 / len(b)) if q is None else np.asarray(q, dtype=float) / np.sum(q)
    return q @ b


def no_line_search_excess(A, b, q=None) -> float:
    r""":math:`f(\bar b)-f^\star=\frac12(\bar b-x^\star)^\top\bar A(\bar b-x^\star)` (exact Taylor expansion of a
    quadratic at its minimiser)."""
    A, b, q, Abar, cbar = _quad(A, b, q)
    e = q @ b - np.linalg.solve(Abar, cbar)
    return float(0.5 * e @ Abar @ e)
