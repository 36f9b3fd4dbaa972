r"""Closed forms for implicit gradient alignment (THEORY B3, B4): modified losses of local SGD,
centralised reshuffled SGD and GradAlign/FedGA, from the matrices alone.

Plain float64 NumPy, independent of :mod:`hetlab.algorithms` and of the problem classes, so that
comparing these predictions with the algorithms is a real check.

**Setting.** :math:`n` clients, each with :math:`K` minibatch quadratics
:math:`f_{ik}(x)=\frac12x^\top A_{ik}x-c_{ik}^\top x`, client losses :math:`f_i=\frac1K\sum_kf_{ik}`,
global loss :math:`f=\frac1n\sum_if_i` (uniform weights). Matrices are passed as ``A [n, K, d, d]``,
``c [n, K, d]``; client-level quadratics ``A [n, d, d]``, ``c [n, d]`` are read as :math:`K=1`
(then :math:`V_w=0`). With :math:`g_{ik}=\nabla f_{ik}(x)`, :math:`g_i=\nabla f_i(x)`, :math:`\bar g=\nabla f(x)`:

.. math::

    V_b(x)=\frac1n\sum_i\|g_i-\bar g\|^2,\qquad V_w(x)=\frac1{nK}\sum_{i,k}\|g_{ik}-g_i\|^2 .

**Quadratic modified losses** (THEORY §B common facts). Every loss here is
:math:`F(x)=\frac12x^\top Hx-h^\top x+\text{const}`, returned as ``(H, h)``. A term
:math:`a\|\nabla f\|^2+b\,V_b+w\,V_w` adds to :math:`(H,h)`

.. math::

    2a(\bar A^2,\bar A\bar c)+2b\Big(\tfrac1n\sum_iA_i^2-\bar A^2,\ \tfrac1n\sum_iA_ic_i-\bar A\bar c\Big)
    +2w\Big(\tfrac1{nK}\sum_{i,k}A_{ik}^2-\tfrac1n\sum_iA_i^2,\ \tfrac1{nK}\sum_{i,k}A_{ik}c_{ik}-\tfrac1n\sum_iA_ic_i\Big).

* local SGD, :math:`\tau` steps per round (:math:`\tau=K` for one reshuffled epoch, any :math:`\tau`
  for full-batch local GD), flow time :math:`\tau\eta`:
  :math:`F_{\rm loc}=f+\frac\eta4\|\nabla f\|^2-\frac{(\tau-1)\eta}4V_b+\frac\eta4V_w`;
* centralised reshuffled SGD over all :math:`nK` minibatches:
  :math:`F_{\rm SGD}=f+\frac\eta4\|\nabla f\|^2+\frac\eta4(V_b+V_w)`;
* GradAlign (exact on quadratics): :math:`f+\frac\beta2V_b`; FedGA: :math:`F_{\rm loc}+\frac\beta2V_b`.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "as_minibatch_arrays", "modified_loss", "local_sgd_modified_loss", "sgd_modified_loss",
    "alignment_modified_loss", "fedga_modified_loss", "minimizer", "is_positive_definite",
    "between_client_variance", "within_client_variance", "gradalign_step",
    "logcosh_grads", "logcosh_hessians", "logcosh_regularized_step", "logcosh_between_client_variance",
]


def as_minibatch_arrays(A, c):
    """``(A [n, K, d, d], c [n, K, d])`` as float64 NumPy; client-level ``A [n, d, d]``, ``c [n, d]`` get ``K = 1``."""
    A = np.asarray(A, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if A.ndim == 3:
        A, c = A[:, None], c[:, None]
    if A.ndim != 4 or A.shape[2] != A.shape[3] or c.shape != A.shape[:3]:
        raise ValueError("expected A [n, K, d, d] and c [n, K, d] (or client-level A [n, d, d], c [n, d]), "
                         f"got {A.shape} and {c.shape}")
    return A, c


def _moments(A, c):
    A, c = as_minibatch_arrays(A, c)
    Ai, ci = A.mean(1), c.mean(1)                                   # client level
    Ab, cb = Ai.mean(0), ci.mean(0)                                 # global
    return {
        "f": (Ab, cb),
        "grad_sq": (Ab @ Ab, Ab @ cb),                              # 1/2 Hessian and linear term of ||grad f||^2
        "client_sq": ((Ai @ Ai).mean(0), np.einsum("ijk,ik->j", Ai, ci) / Ai.shape[0]),
        "batch_sq": ((A @ A).mean((0, 1)), np.einsum("ikab,ikb->a", A, c) / (A.shape[0] * A.shape[1])),
    }


def modified_loss(A, c, grad_sq: float = 0.0, vb: float = 0.0, vw: float = 0.0):
    r"""``(H, h)`` of :math:`f+\text{grad\_sq}\,\|\nabla f\|^2+\text{vb}\,V_b+\text{vw}\,V_w`."""
    m = _moments(A, c)
    (Ab, cb), (G2, g2), (C2, c2), (B2, b2) = m["f"], m["grad_sq"], m["client_sq"], m["batch_sq"]
    H = Ab + 2 * grad_sq * G2 + 2 * vb * (C2 - G2) + 2 * vw * (B2 - C2)
    h = cb + 2 * grad_sq * g2 + 2 * vb * (c2 - g2) + 2 * vw * (b2 - c2)
    return 0.5 * (H + H.T), h


def local_sgd_modified_loss(A, c, eta: float, steps: int, *, vb_sign: float = -1.0):
    r""":math:`F_{\rm loc}=f+\frac\eta4\|\nabla f\|^2-\frac{(\tau-1)\eta}4V_b+\frac\eta4V_w` (``steps`` = :math:`\tau`).

    ``vb_sign=+1`` gives the wrong-sign variant :math:`+\frac{(\tau-1)\eta}4V_b` (a negative control)."""
    return modified_loss(A, c, eta / 4, vb_sign * (steps - 1) * eta / 4, eta / 4)


def sgd_modified_loss(A, c, eta: float):
    r""":math:`F_{\rm SGD}=f+\frac\eta4\|\nabla f\|^2+\frac\eta4(V_b+V_w)` (centralised reshuffled SGD, Smith et al. 2021)."""
    return modified_loss(A, c, eta / 4, eta / 4, eta / 4)


def alignment_modified_loss(A, c, beta: float):
    r""":math:`f+\frac\beta2V_b` (GradAlign's loss; a negative ``beta`` gives the anti-aligning :math:`f-\frac{|\beta|}2V_b`)."""
    return modified_loss(A, c, 0.0, beta / 2, 0.0)


def fedga_modified_loss(A, c, eta: float, steps: int, beta: float):
    r""":math:`F_{\rm loc}+\frac\beta2V_b`: FedGA's expected round; :math:`\beta=\tau\eta/2` gives :math:`F_{\rm SGD}`."""
    return modified_loss(A, c, eta / 4, -(steps - 1) * eta / 4 + beta / 2, eta / 4)


def minimizer(H, h):
    """Stationary point :math:`H^{-1}h` of a quadratic modified loss (a linear solve)."""
    return np.linalg.solve(H, h)


def is_positive_definite(H) -> tuple[bool, float]:
    """``(H is PD, smallest eigenvalue)``: a modified loss has a minimiser only if its Hessian is PD."""
    lam = float(np.linalg.eigvalsh(0.5 * (H + H.T))[0])
    return lam > 0, lam


def _grads(A, c, x):
    A, c = as_minibatch_arrays(A, c)
    G = np.einsum("ikab,b->ika", A, np.asarray(x, dtype=np.float64)) - c   # [n, K, d]
    return G


def between_client_variance(A, c, x) -> float:
    r""":math:`V_b(x)=\frac1n\sum_i\|\nabla f_i(x)-\nabla f(x)\|^2`."""
    Gi = _grads(A, c, x).mean(1)
    return float(((Gi - Gi.mean(0)) ** 2).sum(1).mean())


def within_client_variance(A, c, x) -> float:
    r""":math:`V_w(x)=\frac1{nK}\sum_{i,k}\|\nabla f_{ik}(x)-\nabla f_i(x)\|^2` (zero for client-level arrays)."""
    G = _grads(A, c, x)
    return float(((G - G.mean(1, keepdims=True)) ** 2).sum(2).mean())


def gradalign_step(A, c, x, gamma: float, beta: float):
    r"""One gradient step on :math:`f+\frac\beta2V_b` (THEORY B4(a)):
    :math:`x-\gamma\big[\nabla f+\beta\big(\frac1n\sum_iA_i\nabla f_i-\bar A\nabla f\big)\big]`."""
    A, c = as_minibatch_arrays(A, c)
    Ai, ci = A.mean(1), c.mean(1)
    x = np.asarray(x, dtype=np.float64)
    Gi = np.einsum("iab,b->ia", Ai, x) - ci
    gbar, Abar = Gi.mean(0), Ai.mean(0)
    corr = np.einsum("iab,ib->a", Ai, Gi) / Ai.shape[0] - Abar @ gbar
    return x - gamma * (gbar + beta * corr)

# ------------------------------------------------------------------ non-quadratic: log-cosh regression


def _logcosh_pred(Z, y, x):
    Z, y = np.asarray(Z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return Z, Z @ np.asarray(x, dtype=np.float64) - y                  # [n, m, d], residuals [n, m]


def logcosh_grads(Z, y, x):
    r"""Client gradients of :math:`f_i(x)=\frac1m\sum_r\log\cosh(z_{ir}^\top x-y_{ir})` at one point: ``[n, d]``."""
    Z, t = _logcosh_pred(Z, y, x)
    return np.einsum("nm,nmd->nd", np.tanh(t), Z) / Z.shape[1]


def logcosh_hessians(Z, y, x):
    r"""Client Hessians :math:`\frac1m\sum_r\operatorname{sech}^2(t_{ir})z_{ir}z_{ir}^\top` at one point: ``[n, d, d]``."""
    Z, t = _logcosh_pred(Z, y, x)
    w = 1.0 / np.cosh(t) ** 2
    return np.einsum("nm,nma,nmb->nab", w, Z, Z) / Z.shape[1]


def logcosh_between_client_variance(Z, y, x) -> float:
    """:math:`V_b(x)` of the log-cosh clients."""
    G = logcosh_grads(Z, y, x)
    return float(((G - G.mean(0)) ** 2).sum(1).mean())


def logcosh_regularized_step(Z, y, x, gamma: float, beta: float):
    r"""One exact gradient step on :math:`f+\frac\beta2V_b` for log-cosh clients, with
    :math:`\nabla V_b=2\big(\frac1n\sum_iH_i\nabla f_i-\bar H\nabla f\big)` (Hessians at ``x``)."""
    G = logcosh_grads(Z, y, x)
    H = logcosh_hessians(Z, y, x)
    gbar = G.mean(0)
    corr = np.einsum("iab,ib->a", H, G) / G.shape[0] - H.mean(0) @ gbar
    return np.asarray(x, dtype=np.float64) - gamma * (gbar + beta * corr)
