r"""Reference answers to the exercises of the chapter "Heterogeneity and local methods".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises.py`` checks each answer against an independent computation with hetlab
(running the algorithms, probing their affine maps, or brute-force search).

Notation (as in the chapter): client objectives
:math:`f_i(x)=\tfrac12(x-b_i)^\top A_i(x-b_i)`, uniform client weights unless ``q`` is given,
local step size :math:`\eta`, :math:`K` local steps per round, proximal weight :math:`\mu`.

=======================  ==================================================================
exercise                 functions
=======================  ==================================================================
``ex-lm-fedavg-1d``      :func:`fedavg_fixed_point_1d`, :func:`fedavg_bias_two_clients`,
                         :func:`fedavg_bias_limit_two_clients`
``ex-lm-server-step``    :func:`fedavg_server_fixed_point`
``ex-lm-fedprox-1d``     :func:`fedprox_fixed_point_1d`, :func:`fedprox_bias_two_clients`,
                         :func:`fedprox_bias_leading_two_clients`
``ex-lm-diversity``      :func:`diversity_bound`, :func:`diversity_maximiser`
``ex-lm-scaffold-cv``    :func:`scaffold_control_update`, :func:`scaffold_path_average_gradient`
=======================  ==================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "fedavg_fixed_point_1d", "fedavg_bias_two_clients", "fedavg_bias_limit_two_clients",
    "fedavg_server_fixed_point",
    "fedprox_fixed_point_1d", "fedprox_bias_two_clients", "fedprox_bias_leading_two_clients",
    "diversity_bound", "diversity_maximiser",
    "scaffold_control_update", "scaffold_path_average_gradient",
]


def _two(v, name):
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (2,):
        raise ValueError(f"{name} must hold exactly two numbers (one per client), got shape {v.shape}")
    return v


def _weights(n, q):
    if q is None:
        return np.full(n, 1.0 / n)
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (n,) or np.any(q < 0) or q.sum() <= 0:
        raise ValueError(f"q must be {n} non-negative weights with a positive sum")
    return q / q.sum()


# ----------------------------------------------------------------------------- exercise (a)


def fedavg_fixed_point_1d(a, b, eta: float, K: int, q=None) -> float:
    r"""FedAvg's fixed point for 1-D clients :math:`f_i(x)=\frac{a_i}2(x-b_i)^2`.

    One client run of :math:`K` gradient steps maps :math:`x` to :math:`x-Q_i(x-b_i)` with
    :math:`Q_i=1-(1-\eta a_i)^K`, so the fixed point of the round is
    :math:`x_{\rm FA}=\sum_iq_iQ_ib_i/\sum_iq_iQ_i` (any number of clients, any server step).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    q = _weights(a.size, q)
    Q = 1.0 - (1.0 - eta * a) ** int(K)
    return float(np.sum(q * Q * b) / np.sum(q * Q))


def fedavg_bias_two_clients(a, b, eta: float, K: int) -> float:
    r"""Closed-form bias :math:`x_{\rm FA}-x^\star` for two 1-D clients (equal weights):

    .. math:: x_{\rm FA}-x^\star=\frac{(b_1-b_2)\,(a_2Q_1-a_1Q_2)}{(Q_1+Q_2)(a_1+a_2)},
              \qquad Q_i=1-(1-\eta a_i)^K .

    It vanishes for :math:`K=1` (then :math:`Q_i=\eta a_i`), for :math:`a_1=a_2` and for
    :math:`b_1=b_2`.
    """
    a1, a2 = _two(a, "a")
    b1, b2 = _two(b, "b")
    Q1, Q2 = 1.0 - (1.0 - eta * a1) ** int(K), 1.0 - (1.0 - eta * a2) ** int(K)
    return float((b1 - b2) * (a2 * Q1 - a1 * Q2) / ((Q1 + Q2) * (a1 + a2)))


def fedavg_bias_limit_two_clients(a, b) -> float:
    r"""Limit of the two-client bias as :math:`K\to\infty` (for :math:`0<\eta a_i<2`):
    :math:`Q_i\to1`, so :math:`x_{\rm FA}\to\frac{b_1+b_2}2` and the bias tends to
    :math:`\frac{(b_1-b_2)(a_2-a_1)}{2(a_1+a_2)}`."""
    a1, a2 = _two(a, "a")
    b1, b2 = _two(b, "b")
    return float((b1 - b2) * (a2 - a1) / (2.0 * (a1 + a2)))


# ----------------------------------------------------------------------------- exercise (b)


def fedavg_server_fixed_point(A, b, eta: float, K: int, server_lr: float = 1.0, beta: float = 0.0,
                              q=None):
    r"""Fixed point and rate of FedAvg with a heavy-ball server optimizer, built by hand.

    With :math:`\bar Q=\sum_iq_iQ_i`, :math:`r=\sum_iq_iQ_ib_i` and
    :math:`Q_i=I-(I-\eta A_i)^K`, the pseudo-gradient of a round is :math:`\Delta=\bar Qx-r`, and
    the server runs :math:`m^+=\beta m+\Delta`, :math:`x^+=x-\eta_gm^+` (``beta = 0`` is plain
    server SGD). On the joint state :math:`(x,m)` this is the affine map

    .. math:: \begin{pmatrix}x\\m\end{pmatrix}^+=
              \begin{pmatrix}I-\eta_g\bar Q & -\eta_g\beta I\\ \bar Q & \beta I\end{pmatrix}
              \begin{pmatrix}x\\m\end{pmatrix}+\begin{pmatrix}\eta_gr\\-r\end{pmatrix}.

    Returns ``(x_fixed, m_fixed, rho)``: the fixed point (solved from the joint map, so nothing
    about :math:`\eta_g` or :math:`\beta` is assumed) and the spectral radius of the joint matrix.
    The answer of the exercise: ``x_fixed`` is :math:`\bar Q^{-1}r` for every ``server_lr`` and
    ``beta``, ``m_fixed`` is zero, only ``rho`` changes.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n, d = b.shape
    q = _weights(n, q)
    eye = np.eye(d)
    Q = np.stack([eye - np.linalg.matrix_power(eye - eta * Ai, int(K)) for Ai in A])
    Qbar = np.einsum("i,ijk->jk", q, Q)
    r = np.einsum("i,ijk,ik->j", q, Q, b)
    M = np.block([[eye - server_lr * Qbar, -server_lr * beta * eye], [Qbar, beta * eye]])
    c = np.concatenate([server_lr * r, -r])
    z = np.linalg.solve(np.eye(2 * d) - M, c)
    rho = float(np.max(np.abs(np.linalg.eigvals(M))))
    return z[:d], z[d:], rho


# ----------------------------------------------------------------------------- exercise (c)


def fedprox_fixed_point_1d(a, b, mu: float, q=None) -> float:
    r"""Exact-prox FedProx fixed point for 1-D clients: :math:`P_i=a_i/(a_i+\mu)`,
    :math:`x_{\rm FP}=\sum_iq_iP_ib_i/\sum_iq_iP_i`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    q = _weights(a.size, q)
    P = a / (a + mu)
    return float(np.sum(q * P * b) / np.sum(q * P))


def fedprox_bias_two_clients(a, b, mu: float) -> float:
    r"""Exact two-client FedProx bias (equal weights):

    .. math:: x_{\rm FP}-x^\star=\frac{(b_1-b_2)\,a_1a_2\,(a_2-a_1)}{(a_1+a_2)\,\big(2a_1a_2+\mu(a_1+a_2)\big)} .
    """
    a1, a2 = _two(a, "a")
    b1, b2 = _two(b, "b")
    return float((b1 - b2) * a1 * a2 * (a2 - a1) / ((a1 + a2) * (2 * a1 * a2 + mu * (a1 + a2))))


def fedprox_bias_leading_two_clients(a, b, mu: float) -> float:
    r"""Leading order of the two-client FedProx bias as :math:`\mu\to\infty`:
    :math:`\frac1\mu\cdot\frac{(b_1-b_2)a_1a_2(a_2-a_1)}{(a_1+a_2)^2}` (error :math:`O(\mu^{-2})`)."""
    a1, a2 = _two(a, "a")
    b1, b2 = _two(b, "b")
    return float((b1 - b2) * a1 * a2 * (a2 - a1) / (mu * (a1 + a2) ** 2))


# ----------------------------------------------------------------------------- exercise (d)


def _diversity_matrix(A, q):
    A = np.asarray(A, dtype=np.float64)
    q = _weights(A.shape[0], q)
    Abar = np.einsum("i,ijk->jk", q, A)
    S = np.einsum("i,ijk->jk", q, A @ A)  # sum_i q_i A_i^2 (A_i symmetric)
    T = np.linalg.solve(Abar, np.linalg.solve(Abar, S).T)  # Abar^{-1} S Abar^{-1}
    return Abar, 0.5 * (T + T.T)


def diversity_bound(A, q=None) -> float:
    r"""The smallest upper bound of the weighted gradient diversity over all points, for
    quadratics with a common minimiser :math:`b^\star` (gradients :math:`A_ie`, :math:`e=x-b^\star`):

    .. math:: \sup_{e\ne0}\frac{\sum_iq_i\|A_ie\|^2}{\|\bar Ae\|^2}
              =\lambda_{\max}\big(\bar A^{-1}S\bar A^{-1}\big),\qquad S=\sum_iq_iA_i^2 .
    """
    _, T = _diversity_matrix(A, q)
    return float(np.linalg.eigvalsh(T)[-1])


def diversity_maximiser(A, q=None) -> np.ndarray:
    r"""A unit direction :math:`e` with :math:`\Lambda(b^\star+e)` equal to :func:`diversity_bound`:
    :math:`e\propto\bar A^{-1}u`, where :math:`u` is the top eigenvector of :math:`\bar A^{-1}S\bar A^{-1}`."""
    Abar, T = _diversity_matrix(A, q)
    _, V = np.linalg.eigh(T)
    e = np.linalg.solve(Abar, V[:, -1])
    return e / np.linalg.norm(e)


# ----------------------------------------------------------------------------- exercise (e)


def scaffold_path_average_gradient(A_i, b_i, x, c_i, c, eta: float, K: int) -> np.ndarray:
    r"""Average of the client's *own* gradients :math:`\nabla f_i(y_k)`, :math:`k=0..K-1`, along
    one SCAFFOLD local run :math:`y_0=x`, :math:`y_{k+1}=y_k-\eta(\nabla f_i(y_k)-c_i+c)`
    (simulated step by step)."""
    A_i = np.asarray(A_i, dtype=np.float64)
    b_i = np.asarray(b_i, dtype=np.float64)
    y = np.asarray(x, dtype=np.float64).copy()
    drift = np.asarray(c, dtype=np.float64) - np.asarray(c_i, dtype=np.float64)
    total = np.zeros_like(y)
    for _ in range(int(K)):
        g = A_i @ (y - b_i)
        total += g
        y = y - eta * (g + drift)
    return total / K


def scaffold_control_update(A_i, b_i, x, c_i, c, eta: float, K: int) -> np.ndarray:
    r"""Option-II control variate :math:`c_i^+` of a quadratic client after one round, in closed form.

    Option II sets :math:`c_i^+=c_i-c+\frac{x-y_K}{K\eta}`, which equals the average
    :math:`\frac1K\sum_{k<K}\nabla f_i(y_k)` of the client's own gradients along its path. For
    :math:`f_i=\frac12(y-b_i)^\top A_i(y-b_i)` and :math:`\delta=c-c_i` the local iteration
    contracts towards :math:`y_\infty=b_i-A_i^{-1}\delta`, and summing the geometric series gives

    .. math:: c_i^+=\frac1{K\eta}\,Q_i\big(x-b_i+A_i^{-1}\delta\big)-\delta,
              \qquad Q_i=I-(I-\eta A_i)^K .
    """
    A_i = np.asarray(A_i, dtype=np.float64)
    b_i = np.asarray(b_i, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    delta = np.asarray(c, dtype=np.float64) - np.asarray(c_i, dtype=np.float64)
    eye = np.eye(b_i.size)
    Q = eye - np.linalg.matrix_power(eye - eta * A_i, int(K))
    return Q @ (x - b_i + np.linalg.solve(A_i, delta)) / (K * eta) - delta
