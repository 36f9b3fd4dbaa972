r"""Reference answers to the exercises of the chapter "Implicit regularization of (stochastic) gradient descent".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy, without
calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_implicit.py`` checks each answer against an independent computation (symbolic series,
the library's GD and its enumeration of reshuffled epochs, matrix exponentials, probed affine maps).

Notation (as in the chapter): minibatch or client losses :math:`\hat f_k(x)=\tfrac12(x-b_k)^\top A_k(x-b_k)`,
:math:`f=\frac1m\sum_k\hat f_k`, :math:`\bar A=\frac1m\sum_kA_k`, step size :math:`h` (GD) or :math:`\eta` (SGD).

=====================  =========================================================================
exercise               functions
=====================  =========================================================================
``ir-ex-log-series``   :func:`log_series_coefficient`, :func:`modified_hessian_partial_sum`,
                       :func:`series_order_needed`
``ir-ex-gd-1d``        :func:`gd_1d_modified_curvature`, :func:`gd_1d_igr_curvature`,
                       :func:`gd_1d_curvature_gap_leading`
``ir-ex-rr-two``       :func:`rr_two_minibatch_modified_loss`, :func:`rr_two_minibatch_epoch_matrix`,
                       :func:`rr_two_minibatch_epoch_matrix_second_order`
``ir-ex-minimiser``    :func:`rr_modified_minimiser`, :func:`rr_first_order_displacement`,
                       :func:`between_variance`
``ir-ex-alignment``    :func:`mean_pairwise_inner_product`
=====================  =========================================================================
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "log_series_coefficient", "modified_hessian_partial_sum", "series_order_needed",
    "gd_1d_modified_curvature", "gd_1d_igr_curvature", "gd_1d_curvature_gap_leading",
    "rr_two_minibatch_modified_loss", "rr_two_minibatch_epoch_matrix", "rr_two_minibatch_epoch_matrix_second_order",
    "rr_modified_minimiser", "rr_first_order_displacement", "between_variance",
    "mean_pairwise_inner_product",
]


def _sym(H, name="H"):
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {H.shape}")
    return H


def _stack(A, b):
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or b.shape != A.shape[:2]:
        raise ValueError(f"expected A [m, d, d] and b [m, d], got {A.shape} and {b.shape}")
    return A, b

# ----------------------------------------------------------------------------- exercise (a)


def log_series_coefficient(k: int) -> float:
    r"""Coefficient of :math:`h^{k-1}H^k` in :math:`M_h=-\frac1h\log(I-hH)=\sum_{k\ge1}\frac{h^{k-1}}kH^k`:
    :math:`1/k` (from :math:`-\log(1-u)=\sum_{k\ge1}u^k/k`). ``k = 2`` gives the IGR term :math:`\frac12`,
    ``k = 3`` the first neglected one, :math:`\frac13`."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return 1.0 / k


def modified_hessian_partial_sum(H, h: float, order: int) -> np.ndarray:
    r""":math:`\sum_{k=1}^{\rm order}\frac{h^{k-1}}kH^k` (Horner form in the matrix :math:`hH`)."""
    H = _sym(H)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    u = h * H
    S = np.eye(H.shape[0]) / order
    for k in range(order - 1, 0, -1):       # sum_{k} u^{k-1}/k = 1 + u/2 + u^2/3 + ...
        S = np.eye(H.shape[0]) / k + u @ S
    return H @ S


def series_order_needed(H, h: float, tol: float) -> int:
    r"""Smallest order :math:`K` with :math:`\|M_h-\sum_{k\le K}\frac{h^{k-1}}kH^k\|_2\le` ``tol``.

    In the eigenbasis of :math:`H` the error is the scalar tail :math:`\max_\lambda\sum_{k>K}\frac{h^{k-1}\lambda^k}k`,
    largest at :math:`\lambda_{\max}`; it is computed as :math:`-\log(1-u)/h-\sum_{k\le K}u^k/(kh)` with
    :math:`u=h\lambda_{\max}<1`."""
    lam = float(np.linalg.eigvalsh(0.5 * (_sym(H) + _sym(H).T))[-1])
    u = h * lam
    if not 0 < u < 1:
        raise ValueError(f"need 0 < h lambda_max < 1 for the series to converge, got {u:.4g}")
    full = -math.log1p(-u) / h
    partial, K = 0.0, 0
    while True:
        K += 1
        partial += u ** K / (K * h)
        if full - partial <= tol:
            return K

# ----------------------------------------------------------------------------- exercise (b)


def gd_1d_modified_curvature(a: float, h: float) -> float:
    r"""Exact modified curvature of GD on :math:`\frac a2(x-b)^2` (:math:`a>0`): one step multiplies
    :math:`x-b` by :math:`1-ha`, the flow of :math:`\frac m2(x-b)^2` over time :math:`h` by :math:`e^{-hm}`, so

    .. math:: m(h)=-\frac{\ln(1-ha)}h\qquad(0<ha<1).

    At :math:`ha=1` GD lands on :math:`b` in one step (:math:`m=\infty`); for :math:`1<ha<2` it converges
    while flipping the sign of :math:`x-b` at every step, which no gradient flow on a line can do (a
    trajectory cannot cross the stationary point :math:`b`): no real modified loss exists. Both raise.
    """
    if a <= 0 or h <= 0:
        raise ValueError("need a > 0 and h > 0")
    u = h * a
    if u >= 1:
        raise ValueError(f"h a = {u:g} >= 1: GD {'jumps to the minimiser' if u == 1 else 'oscillates around it'}; "
                         "no gradient flow of a real modified loss reproduces it")
    return -math.log1p(-u) / h


def gd_1d_igr_curvature(a: float, h: float) -> float:
    r"""Curvature of the IGR loss :math:`\frac a2(x-b)^2+\frac h4\|a(x-b)\|^2`: :math:`a+\frac h2a^2`."""
    return a + 0.5 * h * a * a


def gd_1d_curvature_gap_leading(a: float, h: float) -> float:
    r"""Leading term of :math:`m(h)-(a+\frac h2a^2)`: the next term of the series, :math:`\frac{h^2a^3}3`."""
    return h * h * a ** 3 / 3.0

# ----------------------------------------------------------------------------- exercise (c)


def rr_two_minibatch_modified_loss(A1, b1, A2, b2, eta: float):
    r"""``(H_F, c_F)`` of the RR modified loss for two minibatches, :math:`f+\frac\eta8(\|\nabla\hat f_1\|^2+
    \|\nabla\hat f_2\|^2)`, :math:`f=\frac12(\hat f_1+\hat f_2)`:

    .. math:: H_F=\bar A+\frac\eta4(A_1^2+A_2^2),\qquad
              c_F=\bar A\bar x+\frac\eta4(A_1^2b_1+A_2^2b_2),\quad \bar A\bar x=\tfrac12(A_1b_1+A_2b_2),

    so that :math:`F(x)=\frac12x^\top H_Fx-c_F^\top x+\text{const}`. The flow time of an epoch is :math:`2\eta`.
    """
    A1, A2 = _sym(A1, "A1"), _sym(A2, "A2")
    b1, b2 = np.asarray(b1, dtype=np.float64), np.asarray(b2, dtype=np.float64)
    H = 0.5 * (A1 + A2) + 0.25 * eta * (A1 @ A1 + A2 @ A2)
    c = 0.5 * (A1 @ b1 + A2 @ b2) + 0.25 * eta * (A1 @ A1 @ b1 + A2 @ A2 @ b2)
    return 0.5 * (H + H.T), c


def rr_two_minibatch_epoch_matrix(A1, A2, eta: float) -> np.ndarray:
    r"""Exact linear part of the mean epoch over the two orders:
    :math:`\frac12\big[(I-\eta A_2)(I-\eta A_1)+(I-\eta A_1)(I-\eta A_2)\big]
    =I-2\eta\bar A+\frac{\eta^2}2(A_1A_2+A_2A_1)`."""
    A1, A2 = _sym(A1, "A1"), _sym(A2, "A2")
    eye = np.eye(A1.shape[0])
    return 0.5 * ((eye - eta * A2) @ (eye - eta * A1) + (eye - eta * A1) @ (eye - eta * A2))


def rr_two_minibatch_epoch_matrix_second_order(A1, A2, eta: float) -> np.ndarray:
    r"""The same matrix from the modified flow, :math:`e^{-2\eta H_F}` expanded to second order:
    :math:`I-2\eta H_F+2\eta^2H_F^2=I-2\eta\bar A-\frac{\eta^2}2(A_1^2+A_2^2)+2\eta^2\bar A^2+O(\eta^3)`, and
    :math:`2\bar A^2=\frac12(A_1^2+A_2^2+A_1A_2+A_2A_1)`: the :math:`\eta^2` terms agree with the epoch.
    Since the mean epoch matrix is exactly quadratic in :math:`\eta`, this truncation equals it exactly."""
    A1, A2 = _sym(A1, "A1"), _sym(A2, "A2")
    Abar = 0.5 * (A1 + A2)
    eye = np.eye(A1.shape[0])
    return eye - 2 * eta * Abar - 0.5 * eta ** 2 * (A1 @ A1 + A2 @ A2) + 2 * eta ** 2 * Abar @ Abar

# ----------------------------------------------------------------------------- exercise (d)


def rr_modified_minimiser(A, b, eta: float) -> np.ndarray:
    r"""Minimiser of :math:`F_{\rm SGD}=f+\frac\eta{4m}\sum_k\|\nabla\hat f_k\|^2`:
    :math:`\big(\bar A+\frac\eta2S\big)^{-1}\big(\bar A x^\star+\frac\eta2\frac1m\sum_kA_k^2b_k\big)`,
    :math:`S=\frac1m\sum_kA_k^2`."""
    A, b = _stack(A, b)
    Abar = A.mean(0)
    S = np.einsum("kij,kjl->il", A, A) / A.shape[0]
    r = np.einsum("kij,kj->i", A, b) / A.shape[0] + 0.5 * eta * np.einsum("kij,kjl,kl->i", A, A, b) / A.shape[0]
    return np.linalg.solve(Abar + 0.5 * eta * S, r)


def rr_first_order_displacement(A, b, eta: float) -> np.ndarray:
    r"""First-order displacement :math:`x_F-x^\star=-\frac\eta2\bar A^{-1}\frac1m\sum_kA_k^2(x^\star-b_k)+O(\eta^2)`.

    It is :math:`-\frac\eta4\bar A^{-1}\nabla V(x^\star)`: a step down the between-minibatch variance, the
    opposite direction of FedAvg's first-order bias (same vector, factor :math:`+\frac{(K-1)\eta}2`)."""
    A, b = _stack(A, b)
    Abar = A.mean(0)
    xs = np.linalg.solve(Abar, np.einsum("kij,kj->i", A, b) / A.shape[0])
    u = np.einsum("kij,kjl,kl->i", A, A, xs[None, :] - b) / A.shape[0]
    return -0.5 * eta * np.linalg.solve(Abar, u)


def between_variance(A, b, x) -> float:
    r""":math:`V(x)=\frac1m\sum_k\|A_k(x-b_k)-\nabla f(x)\|^2`."""
    A, b = _stack(A, b)
    G = np.einsum("kij,kj->ki", A, np.asarray(x, dtype=np.float64)[None, :] - b)
    return float(((G - G.mean(0)) ** 2).sum(1).mean())

# ----------------------------------------------------------------------------- exercise (e)


def mean_pairwise_inner_product(grad_norm_sq: float, variance: float, m: int) -> float:
    r"""Mean inner product of two different minibatch gradients from :math:`\|\nabla f\|^2` and :math:`V`:

    .. math:: \frac1{m(m-1)}\sum_{k\ne l}\langle g_k,g_l\rangle=\|\nabla f\|^2-\frac{V}{m-1}.

    At fixed :math:`\|\nabla f\|`, lowering :math:`V` raises the alignment of the minibatch gradients."""
    if m < 2:
        raise ValueError("need at least two minibatches")
    return float(grad_norm_sq - variance / (m - 1))
