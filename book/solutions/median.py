r"""Reference answers to the exercises of the chapter "Median versus mean".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy and the
standard library, without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_median.py`` checks each answer against an independent computation with hetlab
(its median-based methods iterated, its aggregators over every subset of workers, its Byzantine faults,
and the exact subset-sum formulas of :mod:`hetlab.closed_forms_median`).

=========================  ===============================================================================
exercise                   functions
=========================  ===============================================================================
``med-ex-fixed-point``     :func:`median_point_1d`
``med-ex-cn``              :func:`sign_slope_constant`, :func:`sign_slope_asymptotic`
``med-ex-subsample``       :func:`subsample_median_weights`, :func:`expected_subsample_median`
``med-ex-byzantine``       :func:`mean_factor`, :func:`median_factor`, :func:`min_attackers_reversing_mean`,
                           :func:`min_attackers_breaking_median`
``med-ex-trimmed``         :func:`trimmed_fixed_point_equal_curvature`
=========================  ===============================================================================
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["median_point_1d", "sign_slope_constant", "sign_slope_asymptotic", "subsample_median_weights",
           "expected_subsample_median", "mean_factor", "median_factor", "min_attackers_reversing_mean",
           "min_attackers_breaking_median", "trimmed_fixed_point_equal_curvature"]

# ------------------------------------------------------------------------- med-ex-fixed-point


def median_point_1d(a, m) -> float:
    r"""Fixed point of medianGD on :math:`f_i(x)=\frac{a_i}2(x-m_i)^2`, :math:`a_i>0`.

    Odd :math:`n`: :math:`a_i(x-m_i)` has the sign of :math:`x-m_i`, so the middle value is zero exactly at
    :math:`x=\mathrm{med}_i\,m_i`, whatever the curvatures. Even :math:`n=2k`: at the root the two middle
    values average to zero. Below the root are the :math:`k` workers with the largest :math:`m_i` (negative
    values, the largest of them is the :math:`k`-th value) and above it the :math:`k` with the smallest
    (positive values, the smallest is the :math:`(k+1)`-th), so the root solves
    :math:`\max_{i\in U}a_i(x-m_i)+\min_{j\in L}a_j(x-m_j)=0`; for the active pair it is
    :math:`x=(a_im_i+a_jm_j)/(a_i+a_j)`. We try every pair and keep the one that is consistent.
    """
    a = np.asarray(a, dtype=float)
    m = np.asarray(m, dtype=float)
    n = len(m)
    if n % 2:
        return float(np.median(m))
    order = np.argsort(m, kind="stable")
    k = n // 2
    L, U = order[:k], order[k:]
    for i in U:
        for j in L:
            x = (a[i] * m[i] + a[j] * m[j]) / (a[i] + a[j])
            v = np.sort(a * (x - m))
            if abs(v[k - 1] + v[k]) <= 1e-12 * (1.0 + np.abs(v).max()):  # the median gradient vanishes
                return float(x)
    raise RuntimeError("no consistent pair found")  # cannot happen for a > 0 (the root is unique)

# --------------------------------------------------------------------------------- med-ex-cn


def sign_slope_constant(n: int, density_at_zero: float = 1 / math.sqrt(2 * math.pi)) -> float:
    r""":math:`c_n=2\varphi(0)\,n\binom{2k}{k}4^{-k}`, :math:`n=2k+1`: the derivative of
    :math:`2P(\text{at least }k+1\text{ of }n)-1` in each :math:`p_i` at :math:`p=\frac12` is
    :math:`2\binom{2k}k4^{-k}`, and :math:`p_i=\Phi(g_i/b)\approx\frac12+\varphi(0)g_i/b`."""
    k = (n - 1) // 2
    return 2.0 * density_at_zero * n * (math.comb(2 * k, k) / 4 ** k)  # exact integer ratio: no overflow


def sign_slope_asymptotic(n: int, density_at_zero: float = 1 / math.sqrt(2 * math.pi)) -> float:
    r"""Large-:math:`n` form: :math:`\binom{2k}k4^{-k}\sim1/\sqrt{\pi k}` gives
    :math:`c_n\sim 4\varphi(0)\sqrt{k/\pi}\approx 2\varphi(0)\sqrt{2n/\pi}`, i.e. :math:`\frac2\pi\sqrt n` for
    Gaussian noise."""
    return 2.0 * density_at_zero * math.sqrt(2.0 * n / math.pi)

# -------------------------------------------------------------------------- med-ex-subsample


def subsample_median_weights(n: int, m: int) -> np.ndarray:
    r"""Probability that the median of a uniformly random :math:`m`-subset (:math:`m=2k+1`) of :math:`n`
    values is the :math:`j`-th smallest, :math:`j=1..n`: choose :math:`k` of the :math:`j-1` smaller and
    :math:`k` of the :math:`n-j` larger values, :math:`\binom{j-1}k\binom{n-j}k/\binom nm`."""
    if m % 2 == 0 or not 1 <= m <= n:
        raise ValueError("m must be odd and between 1 and n")
    k = (m - 1) // 2
    return np.array([math.comb(j - 1, k) * math.comb(n - j, k) for j in range(1, n + 1)], dtype=float) / math.comb(n, m)


def expected_subsample_median(g, m: int) -> float:
    r""":math:`\mathbb E_S\,\mathrm{med}(g_S)=\sum_jw_jg_{(j)}`: the mean for :math:`m=1`, the median for :math:`m=n`."""
    g = np.sort(np.asarray(g, dtype=float))
    return float(subsample_median_weights(len(g), m) @ g)

# -------------------------------------------------------------------------- med-ex-byzantine


def mean_factor(n: int, f: int, lam: float) -> float:
    r"""Identical honest gradients :math:`g`, :math:`f` attackers send :math:`-\lambda g`: the mean is
    :math:`\frac{(n-f)-f\lambda}{n}\,g`."""
    return ((n - f) - f * lam) / n


def median_factor(n: int, f: int, lam: float) -> float:
    r"""Same setting, coordinate-wise median (mean of the middle pair for even :math:`n`), :math:`\lambda>-1`
    so that the attackers' values lie on the other side of the honest ones: :math:`g` while
    :math:`f<n/2`, :math:`-\lambda g` when :math:`f>n/2`, and :math:`\frac{1-\lambda}2g` at :math:`f=n/2`."""
    if 2 * f < n:
        return 1.0
    if 2 * f > n:
        return -lam
    return (1.0 - lam) / 2.0


def min_attackers_reversing_mean(n: int, lam: float) -> int:
    r"""Smallest :math:`f` with :math:`f(1+\lambda)>n`, i.e. the mean points uphill:
    :math:`\lfloor n/(1+\lambda)\rfloor+1`."""
    return math.floor(n / (1.0 + lam)) + 1


def min_attackers_breaking_median(n: int) -> int:
    r"""Smallest :math:`f` for which the median stops being :math:`g` (for any :math:`\lambda>0`):
    :math:`\lceil n/2\rceil` (for even :math:`n`, :math:`n/2` attackers already pull it to
    :math:`\frac{1-\lambda}2g`)."""
    return (n + 1) // 2

# ---------------------------------------------------------------------------- med-ex-trimmed


def trimmed_fixed_point_equal_curvature(m, trim: int) -> float:
    r"""Trimmed-mean GD on :math:`f_i=\frac a2(x-m_i)^2` (one curvature :math:`a`): the values
    :math:`a(x-m_i)` are ordered like :math:`-m_i`, so dropping the extremes of the gradients drops the
    extremes of the :math:`m_i`, and the fixed point is the trimmed mean of the :math:`m_i`."""
    m = np.sort(np.asarray(m, dtype=float))
    return float(m[trim: len(m) - trim].mean())
