r"""Reference answers to the exercises of the chapter "Local steps, large batches and GradAlign".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_gradalign.py`` checks each answer against an independent computation with
hetlab (one round of the library's GradAlign, the exact expectation over orders of its local
reshuffled SGD with residual-slope fits, minimisers of the modified losses, the measures module).

Notation: two 1-D clients :math:`f_i(x)=\frac{a_i}2(x-b_i)^2`, uniform weights,
:math:`\bar a=\frac{a_1+a_2}2`, :math:`\Delta a=a_1-a_2`, :math:`\Delta(ab)=a_1b_1-a_2b_2`; local step
size :math:`\eta`, :math:`\tau` local steps per round, GradAlign displacement :math:`\beta`.

========================  ==================================================================
exercise                  functions
========================  ==================================================================
``ex-ga-two-clients``     :func:`gradalign_step_two_clients`, :func:`vb_two_clients`
``ex-ga-beta``            :func:`beta_cancelling_vb`, :func:`beta_matching_sgd`,
                          :func:`fedga_vb_coefficient`
``ex-ga-epochs``          :func:`vb_coefficient_local_sgd`
``ex-ga-minimiser``       :func:`modified_minimiser_two_clients`, :func:`vb_ratio_two_clients`
``ex-ga-cosine``          :func:`mean_inner_product_at_stationary`, :func:`mean_cosine_equal_norms`
========================  ==================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "gradalign_step_two_clients", "vb_two_clients",
    "beta_cancelling_vb", "beta_matching_sgd", "fedga_vb_coefficient",
    "vb_coefficient_local_sgd",
    "modified_minimiser_two_clients", "vb_ratio_two_clients",
    "mean_inner_product_at_stationary", "mean_cosine_equal_norms",
]


def _two(v, name):
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (2,):
        raise ValueError(f"{name} must hold exactly two numbers (one per client), got shape {v.shape}")
    return v


# ------------------------------------------------------------------------- ex-ga-two-clients


def vb_two_clients(a, b, x: float) -> float:
    r""":math:`V_b(x)=\big(\frac{g_1-g_2}2\big)^2=\frac14\big(\Delta a\,x-\Delta(ab)\big)^2` for two clients."""
    a, b = _two(a, "a"), _two(b, "b")
    g = a * (x - b)
    return float(((g[0] - g[1]) / 2) ** 2)


def gradalign_step_two_clients(a, b, x: float, gamma: float, beta: float) -> float:
    r"""One GradAlign round (displacement :math:`+\beta(g_i-\bar g)`, one local step, :math:`\eta_g\eta=\gamma`):

    .. math:: x^+=x-\gamma\Big[\bar g+\frac\beta4\,\Delta a\,(g_1-g_2)\Big],\qquad g_i=a_i(x-b_i),

    because :math:`\frac12\sum_ia_ig_i-\bar a\bar g=\frac14(a_1-a_2)(g_1-g_2)`. A negative ``beta``
    is the flipped displacement."""
    a, b = _two(a, "a"), _two(b, "b")
    g = a * (x - b)
    return float(x - gamma * (g.mean() + beta / 4 * (a[0] - a[1]) * (g[0] - g[1])))

# ----------------------------------------------------------------------------------- ex-ga-beta


def beta_cancelling_vb(eta: float, K: int) -> float:
    r""":math:`\beta=(K-1)\eta/2` removes the :math:`-\frac{(K-1)\eta}4V_b` of :math:`K` local steps
    (FedGA's modified loss then has no :math:`V_b` term, like large-batch parallel SGD)."""
    return (K - 1) * eta / 2


def beta_matching_sgd(eta: float, K: int) -> float:
    r""":math:`\beta=K\eta/2` turns :math:`-\frac{(K-1)\eta}4V_b` into centralised SGD's :math:`+\frac\eta4V_b`."""
    return K * eta / 2


def fedga_vb_coefficient(eta: float, K: int, beta: float) -> float:
    r"""Coefficient of :math:`V_b` in FedGA's modified loss: :math:`-\frac{(K-1)\eta}4+\frac\beta2`."""
    return -(K - 1) * eta / 4 + beta / 2

# --------------------------------------------------------------------------------- ex-ga-epochs


def vb_coefficient_local_sgd(eta: float, steps: int) -> float:
    r"""Coefficient of :math:`V_b` for :math:`\tau` = ``steps`` local steps per round (e.g. :math:`E` reshuffled
    passes over :math:`K` minibatches, :math:`\tau=EK`): :math:`\frac\eta4-\frac{\tau\eta}4=-\frac{(\tau-1)\eta}4`.
    Zero for :math:`\tau=1`, negative for every :math:`\tau\ge2`."""
    return -(steps - 1) * eta / 4

# ------------------------------------------------------------------------------ ex-ga-minimiser


def modified_minimiser_two_clients(a, b, s: float) -> float:
    r"""Minimiser of :math:`f+\frac s2V_b` for two 1-D clients:
    :math:`x_s=\dfrac{\overline{ab}+\frac s4\Delta a\,\Delta(ab)}{\bar a+\frac s4\Delta a^2}`
    (:math:`\overline{ab}=\frac{a_1b_1+a_2b_2}2`); needs :math:`\bar a+\frac s4\Delta a^2>0`."""
    a, b = _two(a, "a"), _two(b, "b")
    da, dab = a[0] - a[1], a[0] * b[0] - a[1] * b[1]
    den = a.mean() + s / 4 * da ** 2
    if den <= 0:
        raise ValueError(f"f + s/2 V_b is not strongly convex for s = {s} (curvature {den:.3g}): no minimiser")
    return float(((a * b).mean() + s / 4 * da * dab) / den)


def vb_ratio_two_clients(a, b, s: float) -> float:
    r""":math:`V_b(x_s)/V_b(x^\star)=\big(1+\frac{s\,\Delta a^2}{4\bar a}\big)^{-2}`: below one for :math:`s>0`
    (alignment), above one for :math:`s<0`, exactly one when :math:`a_1=a_2` (then :math:`V_b` is constant)."""
    a = _two(a, "a")
    _two(b, "b")
    return float((1 + s * (a[0] - a[1]) ** 2 / (4 * a.mean())) ** -2)

# --------------------------------------------------------------------------------- ex-ga-cosine


def mean_inner_product_at_stationary(client_sq_norms) -> float:
    r"""At a stationary point of :math:`f` (:math:`\sum_ig_i=0`):
    :math:`\frac1{n(n-1)}\sum_{i\ne j}\langle g_i,g_j\rangle=-\frac{\sum_i\|g_i\|^2}{n(n-1)}=-\frac{\zeta_\star^2}{n-1}`."""
    s = np.asarray(client_sq_norms, dtype=np.float64)
    n = s.size
    return float(-s.sum() / (n * (n - 1)))


def mean_cosine_equal_norms(n: int) -> float:
    r"""If the :math:`n` client gradients sum to zero and have equal norms, every mean of the off-diagonal
    cosines is :math:`-\frac1{n-1}`."""
    return -1.0 / (n - 1)
