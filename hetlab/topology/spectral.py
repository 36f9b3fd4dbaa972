r"""Spectral quantities of mixing matrices. They are easy to confuse, so each has its own name.

* :func:`rho`: :math:`\rho(W)=\|W-J\|_2` (largest singular value of :math:`W-J`; for symmetric
  :math:`W` this is :math:`\max_{j\ge2}|\lambda_j|`).
* :func:`p_koloskova`: Koloskova et al.'s :math:`p` with
  :math:`\|XW-\bar X\|_F^2\le(1-p)\|X-\bar X\|_F^2`, i.e. :math:`p=1-\rho^2`.
* :func:`spectral_gap`: :math:`\delta=1-\rho` (this project's convention). Some papers use
  :math:`1-\lambda_2` (:func:`one_minus_lambda2`), which ignores negative eigenvalues.
"""
from __future__ import annotations

import numpy as np


def _J(n):
    return np.full((n, n), 1.0 / n)


def rho(W) -> float:
    W = np.asarray(W, dtype=np.float64)
    return float(np.linalg.norm(W - _J(W.shape[0]), 2))


def p_koloskova(W) -> float:
    return 1.0 - rho(W) ** 2


def spectral_gap(W) -> float:
    return 1.0 - rho(W)


def one_minus_lambda2(W) -> float:
    """``1 - lambda_2`` for a symmetric ``W`` (eigenvalues sorted decreasingly)."""
    W = np.asarray(W, dtype=np.float64)
    lam = np.sort(np.linalg.eigvalsh(0.5 * (W + W.T)))[::-1]
    return float(1.0 - lam[1])


def schedule_rho(schedule) -> float:
    """``||W^(T-1) ... W^(0) - J||_2`` over one period of a time-varying schedule."""
    P = np.eye(np.asarray(schedule[0]).shape[0])
    for W in schedule:
        P = np.asarray(W) @ P
    return rho(P)
