r"""Closed forms for compressed methods (THEORY F1)."""
from __future__ import annotations

import numpy as np

__all__ = ["dqsgd_floor", "zeta_star_sq_identity"]


def dqsgd_floor(eta: float, omega: float, zeta_sq: float, n: int) -> float:
    r"""Stationary :math:`\lim_t\mathbb E\|x_t-x^\star\|^2` of D-QSGD on :math:`f_i=\frac12\|x-b_i\|^2`
    with exact local gradients and independent unbiased compressors of constant ``omega``:

    .. math:: \frac{\eta\,\omega\,\zeta_\star^2}{n\,(2-\eta-\eta\omega/n)} .

    Valid (finite) when :math:`(1-\eta)^2+\eta^2\omega/n<1`, i.e. :math:`0<\eta<2/(1+\omega/n)`.
    """
    eta, omega, zeta_sq, n = float(eta), float(omega), float(zeta_sq), int(n)
    if n < 1 or omega < 0 or zeta_sq < 0:
        raise ValueError("need n >= 1, omega >= 0, zeta_sq >= 0")
    den = 2.0 - eta - eta * omega / n
    if not (eta > 0 and den > 0):
        raise ValueError(f"D-QSGD second moment diverges for eta={eta} (need 0 < eta < 2/(1+omega/n))")
    return eta * omega * zeta_sq / (n * den)


def zeta_star_sq_identity(B) -> float:
    r""":math:`\zeta_\star^2=\frac1n\sum_i\|b_i-\bar b\|^2` for :math:`f_i=\frac12\|x-b_i\|^2` (``B [n, d]``)."""
    B = np.asarray(B, dtype=np.float64)
    return float(np.mean(np.sum((B - B.mean(0)) ** 2, axis=1)))
