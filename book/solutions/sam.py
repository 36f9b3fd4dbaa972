r"""Reference answers to the exercises of the chapter "D-SGD is average-direction SAM".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_sam.py`` checks each answer against an independent computation (automatic
differentiation, exact Gauss–Hermite quadrature, hetlab's D-SGD run on a ring, and the exact
stationary covariance of hetlab's D-SGD through the Lyapunov equation).

Notation (as in the chapter): polynomial losses
:math:`L(w)=\tfrac12w^\top Qw+\sum_ic_i\,(a_i^\top w)^k/k!`, consensus covariance :math:`\Xi`,
step size :math:`\eta`.

===========================  ===============================================================
exercise                     functions
===========================  ===============================================================
``sam-ex-cubic``             :func:`cubic_correction`, :func:`symmetric_workers`
``sam-ex-quadratic``         :func:`dsgd_mean_quadratic`
``sam-ex-gaussian``          :func:`gaussian_expected_gradient_quartic`,
                             :func:`empirical_third_order_term`
``sam-ex-diagonal``          :func:`diagonal_quartic_trace_term`
``sam-ex-batch``             :func:`consensus_distance_linear_scaling`
===========================  ===============================================================
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "cubic_correction", "symmetric_workers", "dsgd_mean_quadratic", "gaussian_expected_gradient_quartic",
    "empirical_third_order_term", "diagonal_quartic_trace_term", "consensus_distance_linear_scaling",
]


def _f(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------- exercise (a)


def cubic_correction(a, c, Xi) -> np.ndarray:
    r"""SAM correction of the cubic :math:`L(w)=\tfrac12w^\top Qw+\tfrac16\sum_ic_i(a_i^\top w)^3`.

    Its Hessian is :math:`H(w)=Q+\sum_ic_i(a_i^\top w)a_ia_i^\top`, so
    :math:`\tfrac12\operatorname{tr}(H(w)\Xi)=\tfrac12\operatorname{tr}(Q\Xi)+\tfrac12\sum_ic_i(a_i^\top w)(a_i^\top\Xi a_i)`
    is affine in :math:`w`, and its gradient :math:`\tfrac12\sum_ic_i(a_i^\top\Xi a_i)\,a_i` does not
    depend on :math:`w` (nor on :math:`Q`). ``a`` is ``[p, d]``, ``c`` ``[p]``, ``Xi`` ``[d, d]``.
    """
    a, c, Xi = _f(a), _f(c), _f(Xi)
    return 0.5 * (c * np.einsum("pk,kl,pl->p", a, Xi, a)) @ a


def symmetric_workers(w_a, Xi) -> np.ndarray:
    r"""``2d`` worker models :math:`w_a\pm\sqrt d\,s_k` (``s_k`` the columns of the symmetric square
    root of ``Xi``): their mean is :math:`w_a` and their consensus covariance is exactly ``Xi``."""
    w_a, Xi = _f(w_a), _f(Xi)
    d = w_a.size
    ev, U = np.linalg.eigh(0.5 * (Xi + Xi.T))
    S = (U * np.sqrt(np.clip(ev, 0.0, None))) @ U.T
    return np.concatenate([w_a + np.sqrt(d) * S.T, w_a - np.sqrt(d) * S.T])


# ----------------------------------------------------------------------------- exercise (b)


def dsgd_mean_quadratic(Q, w_star, w0_mean, eta: float, T: int) -> np.ndarray:
    r"""Mean model of D-SGD (either ordering, any doubly stochastic :math:`W`, any starting spread)
    after ``T`` steps on workers that share :math:`L(w)=\tfrac12(w-w^\star)^\top Q(w-w^\star)`:
    the gradient is affine, so the average of the gradients is the gradient at the average, the
    correction is zero and :math:`\bar w_T=w^\star+(I-\eta Q)^T(\bar w_0-w^\star)` (plain GD).
    The same holds when the workers have different minimisers but one common ``Q``; then
    ``w_star`` is the mean of the minimisers."""
    Q, w_star, w0 = _f(Q), _f(w_star), _f(w0_mean)
    M = np.linalg.matrix_power(np.eye(Q.shape[0]) - eta * Q, int(T))
    return w_star + M @ (w0 - w_star)


# ----------------------------------------------------------------------------- exercise (c)


def gaussian_expected_gradient_quartic(Q, a, c, w, Sigma) -> np.ndarray:
    r""":math:`\mathbb E_{\epsilon\sim\mathcal N(0,\Sigma)}\nabla L(w+\epsilon)` for the quartic
    :math:`L(w)=\tfrac12w^\top Qw+\tfrac1{24}\sum_ic_i(a_i^\top w)^4`.

    With :math:`s_i=a_i^\top w` and :math:`e_i=a_i^\top\epsilon\sim\mathcal N(0,a_i^\top\Sigma a_i)`,
    :math:`\nabla L(w+\epsilon)=Q(w+\epsilon)+\tfrac16\sum_ic_i(s_i+e_i)^3a_i`. Odd moments vanish
    and :math:`\mathbb Ee_i^2=a_i^\top\Sigma a_i`, so the expectation is
    :math:`Qw+\sum_ic_i\big(\tfrac{s_i^3}6+\tfrac{s_i}2a_i^\top\Sigma a_i\big)a_i=\nabla L(w)+\tfrac12\nabla\operatorname{tr}(H(w)\Sigma)`,
    with no third-order remainder."""
    Q, a, c, w, Sigma = _f(Q), _f(a), _f(c), _f(w), _f(Sigma)
    s = a @ w
    v = np.einsum("pk,kl,pl->p", a, Sigma, a)
    return Q @ w + (c * (s ** 3 / 6.0 + 0.5 * s * v)) @ a


def empirical_third_order_term(a, c, deltas) -> np.ndarray:
    r"""What the Gaussian expectation misses for a *finite* set of workers: the quartic's exact
    remainder :math:`\tfrac16\frac1m\sum_j\sum_ic_i(a_i^\top\delta_j)^3a_i` (the third moment of the
    worker offsets :math:`\delta_j`, zero for a symmetric configuration)."""
    a, c, D = _f(a), _f(c), _f(deltas)
    return (c * ((D @ a.T) ** 3).mean(0) / 6.0) @ a


# ----------------------------------------------------------------------------- exercise (d)


def diagonal_quartic_trace_term(q, c, w, Xi):
    r"""Trace term of the separable quartic :math:`L(w)=\sum_k\big(\tfrac{q_k}2w_k^2+\tfrac{c_k}{24}w_k^4\big)`.

    The Hessian is diagonal, :math:`H_{kk}=q_k+\tfrac{c_k}2w_k^2`, so only the diagonal of
    :math:`\Xi` enters: :math:`\tfrac12\operatorname{tr}(H\Xi)=\tfrac12\sum_k\big(q_k+\tfrac{c_k}2w_k^2\big)\Xi_{kk}`,
    with gradient :math:`\tfrac12c_kw_k\Xi_{kk}`. Returns ``(value, gradient)``."""
    q, c, w, Xi = _f(q), _f(c), _f(w), _f(Xi)
    diag = np.diag(Xi)
    return float(0.5 * np.sum((q + 0.5 * c * w ** 2) * diag)), 0.5 * c * w * diag


# ----------------------------------------------------------------------------- exercise (e)


def consensus_distance_linear_scaling(W, eta0: float, batches, s2: float, lam: float = 1.0, d: int = 1):
    r"""Stationary :math:`\mathbb E\,\Xi^2` of parallel D-SGD (:math:`X^+=WX-\eta G`) on identical
    losses :math:`\frac\lambda2\|x\|^2` with per-worker batch ``B``, per-sample gradient noise of
    variance ``s2`` per coordinate (so :math:`s^2/B` for the batch) and the linear scaling rule
    :math:`\eta=\eta_0B`.

    Each non-consensus eigenvector of the symmetric :math:`W` (eigenvalue :math:`\lambda_j`) carries a
    scalar AR(1) process per coordinate, :math:`z^+=(\lambda_j-\eta\lambda)z-\eta\xi`, whose stationary
    variance is :math:`\eta^2(s^2/B)/(1-(\lambda_j-\eta\lambda)^2)`; summing over modes and coordinates
    and dividing by :math:`n`: :math:`\mathbb E\,\Xi^2=\frac dn\sum_{j\ge2}\frac{\eta^2s^2/B}{1-(\lambda_j-\eta\lambda)^2}`.
    For small :math:`\eta` this is :math:`\approx\eta_0^2Bs^2\frac dn\sum_{j\ge2}(1-\lambda_j^2)^{-1}`: linear in
    :math:`B`. Returns ``(etas, Xi2)`` as arrays."""
    W = _f(W)
    n = W.shape[0]
    ev = np.sort(np.linalg.eigvalsh(0.5 * (W + W.T)))[:-1]  # drop the consensus eigenvalue 1 (the largest)
    B = _f(batches)
    etas = eta0 * B
    rate = ev[None, :] - etas[:, None] * lam
    var = etas[:, None] ** 2 * (s2 / B[:, None]) / (1.0 - rate ** 2)
    return etas, d * var.sum(1) / n
