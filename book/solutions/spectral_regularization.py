r"""Reference answers to the exercises of the chapter "Spectral regularization and plasticity".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy, without
calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_spectral_regularization.py`` checks each answer against an independent computation with
hetlab (the kernel of :mod:`hetlab.plasticity` built from Kronecker products, its gradient-descent runs, its
regularizers and bounds).

Notation: a deep linear network :math:`P = W_L\cdots W_1`, loss :math:`\frac12\lVert P - M\rVert_F^2`, kernel
:math:`\mathcal K = JJ^\top`, gradient descent with step :math:`\eta`.

=======================  ==================================================================
exercise                 functions
=======================  ==================================================================
``sr-ex-balanced``       :func:`balanced_kernel_extremes`, :func:`balanced_condition_number`,
                         :func:`balanced_local_rate`
``sr-ex-valley``         :func:`valley_kernel`, :func:`valley_local_rate`, :func:`critical_imbalance`,
                         :func:`capped_imbalance`
``sr-ex-decay``          :func:`weight_decay_product`, :func:`weight_decay_excess`,
                         :func:`spectral_exact_factors`
``sr-ex-floor``          :func:`sigma_min_floor`, :func:`tight_layers`, :func:`rescaled_layers`
=======================  ==================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "balanced_kernel_extremes", "balanced_condition_number", "balanced_local_rate",
    "valley_kernel", "valley_local_rate", "critical_imbalance", "capped_imbalance",
    "weight_decay_product", "weight_decay_excess", "spectral_exact_factors",
    "sigma_min_floor", "tight_layers", "rescaled_layers",
]


def _svals(svals):
    s = np.asarray(svals, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or np.any(s <= 0):
        raise ValueError("svals must be a non-empty 1-D array of positive singular values")
    return s


# ----------------------------------------------------------------------------------------- sr-ex-balanced
def balanced_kernel_extremes(svals, L: int) -> tuple[float, float]:
    r"""At a balanced factorisation every eigenvalue :math:`\sum_{j=1}^L s_p^{2(L-j)/L}s_q^{2(j-1)/L}` increases in
    both :math:`s_p` and :math:`s_q`, so the extremes sit at :math:`p = q`:
    :math:`\lambda_{\min} = L s_{\min}^{2(L-1)/L}` and :math:`\lambda_{\max} = L s_{\max}^{2(L-1)/L}`."""
    s = _svals(svals)
    if L < 1:
        raise ValueError(f"L must be at least 1, got {L}")
    e = 2.0 * (L - 1) / L
    return float(L * s.min() ** e), float(L * s.max() ** e)


def balanced_condition_number(svals, L: int) -> float:
    r""":math:`\kappa(\mathcal K) = (s_{\max}/s_{\min})^{2(L-1)/L}`: 1 for one layer, :math:`\to (s_{\max}/s_{\min})^2`
    as :math:`L \to \infty`."""
    lo, hi = balanced_kernel_extremes(svals, L)
    return hi / lo


def balanced_local_rate(svals, L: int, lr: float) -> float:
    r"""GD's local rate :math:`\max(|1 - \eta\lambda_{\min}|, |1 - \eta\lambda_{\max}|)` at a balanced solution."""
    lo, hi = balanced_kernel_extremes(svals, L)
    return float(max(abs(1 - lr * lo), abs(1 - lr * hi)))


# ----------------------------------------------------------------------------------------- sr-ex-valley
def valley_kernel(m: float, delta: float) -> float:
    r"""Two scalar layers on the valley :math:`w_2w_1 = m` with imbalance :math:`\delta = w_2^2 - w_1^2`:
    :math:`\mathcal K = w_1^2 + w_2^2 = \sqrt{\delta^2 + 4m^2}`, from
    :math:`(w_1^2 + w_2^2)^2 = \delta^2 + 4w_1^2w_2^2`."""
    return float(np.sqrt(delta ** 2 + 4.0 * m ** 2))


def valley_local_rate(m: float, delta: float, lr: float) -> float:
    r""":math:`|1 - \eta\sqrt{\delta^2 + 4m^2}|`."""
    return float(abs(1.0 - lr * valley_kernel(m, delta)))


def critical_imbalance(m: float, lr: float) -> float:
    r"""GD is locally unstable once :math:`\eta\mathcal K > 2`, i.e. for :math:`|\delta| > \sqrt{4/\eta^2 - 4m^2}`
    (0 when :math:`|m| \ge 1/\eta`: then even the balanced point is unstable)."""
    return float(np.sqrt(max(4.0 / lr ** 2 - 4.0 * m ** 2, 0.0)))


def capped_imbalance(m: float, cap: float = 1.0) -> tuple[float, float]:
    r"""With :math:`|w_1|, |w_2| \le c` (what the spectral regularizer enforces, :math:`c = 1`) on the valley
    :math:`|w_1w_2| = |m| \le c^2`: :math:`|\delta| \le c^2 - m^2/c^2` and :math:`\mathcal K \le c^2 + m^2/c^2`."""
    if abs(m) > cap ** 2:
        raise ValueError(f"|m| = {abs(m)} cannot be reached with both layers bounded by {cap}")
    return float(cap ** 2 - m ** 2 / cap ** 2), float(cap ** 2 + m ** 2 / cap ** 2)


# ----------------------------------------------------------------------------------------- sr-ex-decay
def weight_decay_product(m: float, beta: float) -> float:
    r"""Minimiser of :math:`\frac12(w_2w_1 - m)^2 + \beta(w_1^2 + w_2^2)` (:math:`m > 0`): by AM-GM the decay term is
    at least :math:`2\beta|p|` with equality at :math:`|w_1| = |w_2|`, so :math:`p = w_2w_1` minimises
    :math:`\frac12(p - m)^2 + 2\beta|p|`: the soft threshold :math:`p = \max(m - 2\beta, 0)`."""
    if m <= 0 or beta < 0:
        raise ValueError("take m > 0 and beta >= 0")
    return float(max(m - 2.0 * beta, 0.0))


def weight_decay_excess(m: float, beta: float) -> float:
    r"""Task loss left at that minimiser: :math:`\frac12\min(m, 2\beta)^2`."""
    return float(0.5 * (m - weight_decay_product(m, beta)) ** 2)


def spectral_exact_factors(svals) -> tuple[np.ndarray, np.ndarray]:
    r"""Two diagonal layers with :math:`\sigma_{\max} = 1` each whose product is :math:`\mathrm{diag}(s)`, for
    :math:`d \ge 2` and all :math:`s_i \le 1`: :math:`W_1 = \mathrm{diag}(1, s_2, \dots, s_d)`,
    :math:`W_2 = \mathrm{diag}(s_1, 1, \dots, 1)`. The spectral regularizer vanishes there and the task is fit
    exactly: no interference."""
    s = _svals(svals)
    if s.size < 2 or np.any(s > 1):
        raise ValueError("need d >= 2 singular values, all <= 1")
    w1 = s.copy()
    w1[0] = 1.0
    w2 = np.ones_like(s)
    w2[0] = s[0]
    return np.diag(w1), np.diag(w2)


# ----------------------------------------------------------------------------------------- sr-ex-floor
def sigma_min_floor(smin_target: float, s_bar: float, L: int) -> float:
    r""":math:`\sigma_{\min}(W_i) \ge \sigma_{\min}(M)/\bar s^{L-1}` when :math:`P = M` and every
    :math:`\sigma_{\max}(W_j) \le \bar s`."""
    if L < 1 or s_bar <= 0 or smin_target < 0:
        raise ValueError("need L >= 1, s_bar > 0 and smin_target >= 0")
    return float(smin_target / s_bar ** (L - 1))


def tight_layers(svals, s_bar: float, L: int, i: int = 0) -> list[np.ndarray]:
    r"""Layers attaining the floor in layer ``i``: :math:`W_j = \bar s I` for :math:`j \ne i` and
    :math:`W_i = \mathrm{diag}(s)/\bar s^{L-1}` (requires :math:`s_{\max} \le \bar s^L` so that
    :math:`\sigma_{\max}(W_i) \le \bar s`)."""
    s = _svals(svals)
    if s.max() > s_bar ** L:
        raise ValueError(f"the largest singular value {s.max()} exceeds s_bar^L = {s_bar ** L}")
    d = s.size
    return [np.diag(s) / s_bar ** (L - 1) if j == i else s_bar * np.eye(d) for j in range(L)]


def rescaled_layers(svals, L: int, c: float) -> list[np.ndarray]:
    r"""Without a cap the floor is 0: :math:`W_1 = \mathrm{diag}(s)^{1/L}/c`, :math:`W_2 = c\,\mathrm{diag}(s)^{1/L}`,
    the others :math:`\mathrm{diag}(s)^{1/L}` has the same product for every :math:`c > 0` and
    :math:`\sigma_{\min}(W_1) = s_{\min}^{1/L}/c \to 0`."""
    s = _svals(svals)
    if L < 2 or c <= 0:
        raise ValueError("need L >= 2 and c > 0")
    base = np.diag(s ** (1.0 / L))
    Ws = [base.copy() for _ in range(L)]
    Ws[0] = base / c
    Ws[1] = base * c
    return Ws
