r"""Closed-form predictions for local methods on quadratics (THEORY A1–A5).

These are computed from the problem's matrices alone (NumPy, float64), independently of the
algorithm implementations in :mod:`hetlab.algorithms`, so that comparing the two is a real check.
Problems are :class:`~hetlab.problems.QuadraticProblem` built from minimisers
(:math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)`), weights :math:`q_i`.
"""
from __future__ import annotations

import numpy as np


def _Ab(problem):
    if getattr(problem, "b", None) is None:
        raise TypeError("closed forms need a quadratic built with QuadraticProblem.from_minimizers (local minimisers b_i)")
    return problem.A.numpy(), problem.b.numpy(), problem.weights.numpy()


def fedavg_Q(problem, lr: float, K: int) -> np.ndarray:
    r""":math:`Q_i=I-(I-\eta A_i)^K` for every client, ``[n, d, d]`` (``matrix_power``, not elementwise)."""
    A, _, _ = _Ab(problem)
    eye = np.eye(A.shape[1])
    return np.stack([eye - np.linalg.matrix_power(eye - lr * Ai, K) for Ai in A])


def fedavg_fixed_point(problem, lr: float, K: int) -> np.ndarray:
    r"""Local GD / FedAvg fixed point :math:`x_{\rm FA}=(\sum_iq_iQ_i)^{-1}\sum_iq_iQ_ib_i` (any server step)."""
    _, b, q = _Ab(problem)
    Q = fedavg_Q(problem, lr, K)
    return np.linalg.solve(np.einsum("i,ijk->jk", q, Q), np.einsum("i,ijk,ik->j", q, Q, b))


def fedavg_contraction(problem, lr: float, K: int, server_lr: float = 1.0) -> float:
    r"""Per-round rate :math:`\rho(I-\eta_g\bar Q)`, :math:`\bar Q=\sum_iq_iQ_i`."""
    _, _, q = _Ab(problem)
    Qbar = np.einsum("i,ijk->jk", q, fedavg_Q(problem, lr, K))
    return float(np.max(np.abs(np.linalg.eigvals(np.eye(Qbar.shape[0]) - server_lr * Qbar))))


def local_surrogate_minimizer(problem, coef: float) -> np.ndarray:
    r"""Stationary point of :math:`f-\frac{c}{2}\sum_iq_i\|\nabla f_i\|^2`, i.e. the solution of
    :math:`\sum_iq_i(A_i-cA_i^2)(x-b_i)=0`. FedAvg's surrogate (A2) has :math:`c=(K-1)\eta/2`;
    FedProx's (A3) has :math:`c=1/\mu`. A negative ``coef`` gives the wrong-sign surrogate."""
    A, b, q = _Ab(problem)
    H = A - coef * A @ A
    return np.linalg.solve(np.einsum("i,ijk->jk", q, H), np.einsum("i,ijk,ik->j", q, H, b))


def fedavg_first_order_bias(problem, lr: float, K: int) -> np.ndarray:
    r""":math:`\frac{(K-1)\eta}{2}(\sum_iq_iA_i)^{-1}\sum_iq_iA_i^2(x^\star-b_i)` (A2)."""
    A, b, q = _Ab(problem)
    xs = problem.x_star.numpy()
    rhs = np.einsum("i,ijk,ik->j", q, A @ A, xs[None, :] - b)
    return 0.5 * (K - 1) * lr * np.linalg.solve(np.einsum("i,ijk->jk", q, A), rhs)


def fedprox_fixed_point(problem, mu: float) -> np.ndarray:
    r"""Exact-prox FedProx fixed point :math:`x_{\rm FP}=(\sum_iq_iP_i)^{-1}\sum_iq_iP_ib_i`,
    :math:`P_i=(A_i+\mu I)^{-1}A_i`."""
    A, b, q = _Ab(problem)
    P = np.linalg.solve(A + mu * np.eye(A.shape[1])[None], A)
    return np.linalg.solve(np.einsum("i,ijk->jk", q, P), np.einsum("i,ijk,ik->j", q, P, b))


def sup_weighted_diversity_common_minimizer(problem):
    r"""Exact :math:`\sup_x\Lambda(x)` for quadratics with a common minimiser (THEORY A5).

    With :math:`e=x-b`, :math:`\Lambda=\frac{e^\top Se}{e^\top\bar A^2e}`, :math:`S=\sum_iq_iA_i^2`: a generalised
    Rayleigh quotient, whose supremum is :math:`\lambda_{\max}(\bar A^{-1}S\bar A^{-1})`, attained at
    :math:`e=\bar A^{-1}u` for the top eigenvector :math:`u`. Returns ``(sup, e_argmax)``.
    """
    A, _, q = _Ab(problem)
    Abar = np.einsum("i,ijk->jk", q, A)
    S = np.einsum("i,ijk->jk", q, A @ A)
    Ainv = np.linalg.inv(Abar)
    lam, U = np.linalg.eigh(Ainv @ S @ Ainv)
    return float(lam[-1]), Ainv @ U[:, -1]
