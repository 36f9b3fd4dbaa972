r"""Reference answers to the exercises of the chapter "Gradient diversity and the batch size".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy (and
``scipy.linalg`` for one generalised eigenvalue), without calling :mod:`hetlab`. The chapter's solution
cells call these functions, and ``tests/test_exercises_batch_size.py`` checks each answer against an
independent computation with hetlab (enumeration of every minibatch, the exact mean-square operators of
:mod:`hetlab.closed_forms_batch`, per-sample gradients of its least-squares problem, its ``AsyncSGD``
method, and the parameter counts of real ``torch`` networks).

Notation: per-sample gradients ``G [N, d]`` with sum :math:`S`; data rows ``A [N, d]`` of an interpolating
least-squares problem, :math:`H_i=a_ia_i^\top`, :math:`H=\frac1N\sum_iH_i`, :math:`L=\lambda_{\max}(H)`,
:math:`\mu=\lambda_{\min}(H)`, :math:`L_{\max}=\max_i\|a_i\|^2`; batch size ``B``, delay ``tau``.

==========================  ==================================================================================
exercise                    functions
==========================  ==================================================================================
``bs-ex-moments``           :func:`sum_second_moment`, :func:`mean_variance`
``bs-ex-interpolation``     :func:`batch_bound_at`, :func:`sup_batch_bound_interpolating`,
                            :func:`worst_direction_interpolating`, :func:`simple_batch_bound_interpolating`
``bs-ex-critical``          :func:`row_constants`, :func:`expected_smoothness`, :func:`critical_batch`,
                            :func:`predicted_speedup`, :func:`guaranteed_rate`
``bs-ex-superlinear``       :func:`scalar_optimal_rate`, :func:`scalar_speedup`
``bs-ex-delay``             :func:`delayed_gd_stability_limit`, :func:`delayed_gd_spectral_radius`,
                            :func:`tau1_second_moment_step`
``bs-ex-width``             :func:`param_count`, :func:`matched_width`
==========================  ==================================================================================
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg

__all__ = ["sum_second_moment", "mean_variance", "batch_bound_at", "sup_batch_bound_interpolating",
           "worst_direction_interpolating", "simple_batch_bound_interpolating", "row_constants",
           "expected_smoothness", "critical_batch", "predicted_speedup", "guaranteed_rate",
           "scalar_optimal_rate", "scalar_speedup", "delayed_gd_stability_limit", "delayed_gd_spectral_radius",
           "tau1_second_moment_step", "param_count", "matched_width"]


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)

# ---------------------------------------------------------------------------------------- bs-ex-moments


def sum_second_moment(G, B: int, replace: bool = False) -> float:
    r""":math:`\mathbb E\|\sum_{k=1}^Bg_{i_k}\|^2` for a batch of ``B`` of the ``N`` rows of ``G``.

    Expand the square into :math:`B` diagonal terms and :math:`B(B-1)` ordered pairs of draws. A single draw
    has :math:`\mathbb E\|g_{i}\|^2=\frac1N\sum_i\|g_i\|^2`. A pair of *distinct* positions gives
    :math:`\mathbb E\langle g_{i},g_{j}\rangle=\frac{\|S\|^2-\sum_i\|g_i\|^2}{N(N-1)}` without replacement
    (the pair :math:`(i,j)` is uniform over the :math:`N(N-1)` ordered pairs with :math:`i\ne j`) and
    :math:`\|S\|^2/N^2` with replacement (independent draws).
    """
    G = _arr(G)
    N = G.shape[0]
    sq = float((G * G).sum())
    S = G.sum(0)
    S2 = float(S @ S)
    pair = S2 / N ** 2 if replace else (S2 - sq) / (N * (N - 1))
    return B * sq / N + B * (B - 1) * pair


def mean_variance(G, B: int, replace: bool = False) -> float:
    r""":math:`\mathbb E\|\frac1B\sum_kg_{i_k}-\frac SN\|^2`: (a) applied to the centred rows
    :math:`g_i-S/N` (whose sum vanishes), divided by :math:`B^2`. Without replacement this is
    :math:`\frac{N-B}{B(N-1)}V`, with replacement :math:`V/B`, where :math:`V=\frac1N\sum_i\|g_i-S/N\|^2`."""
    G = _arr(G)
    return sum_second_moment(G - G.mean(0), B, replace) / B ** 2

# ---------------------------------------------------------------------------------- bs-ex-interpolation


def _hessians(A):
    A = _arr(A)
    N = A.shape[0]
    H = A.T @ A / N
    K = (A * ((A * A).sum(1))[:, None]).T @ A / N        # (1/N) sum_i ||a_i||^2 a_i a_i^T
    return H, K


def batch_bound_at(A, e) -> float:
    r"""Yin's batch bound :math:`N\Delta` of interpolating least squares at the error :math:`e=x-x^\star`:
    :math:`g_i=a_i(a_i^\top e)`, so :math:`N\Delta=N\frac{\sum_i\|a_i\|^2(a_i^\top e)^2}{\|NHe\|^2}
    =\frac{e^\top Ke}{e^\top H^2e}` with :math:`K=\frac1N\sum_i\|a_i\|^2H_i`."""
    H, K = _hessians(A)
    e = _arr(e)
    return float(e @ K @ e) / float(e @ H @ H @ e)


def sup_batch_bound_interpolating(A) -> float:
    r""":math:`\sup_eN\Delta(e)`: the largest generalised eigenvalue of :math:`(K,H^2)` (finite when
    :math:`H\succ0`)."""
    H, K = _hessians(A)
    return float(scipy.linalg.eigh(K, H @ H, eigvals_only=True)[-1])


def worst_direction_interpolating(A) -> np.ndarray:
    """The error direction (unit norm) at which :math:`N\\Delta` attains its supremum."""
    H, K = _hessians(A)
    v = scipy.linalg.eigh(K, H @ H)[1][:, -1]
    return v / np.linalg.norm(v)


def simple_batch_bound_interpolating(A) -> float:
    r"""The bound :math:`L_{\max}/\mu` (from :math:`K\preceq L_{\max}H` and :math:`H^2\succeq\mu H`)."""
    L, L_max, mu = row_constants(A)
    return L_max / mu

# ------------------------------------------------------------------------------------- bs-ex-critical


def row_constants(A) -> tuple[float, float, float]:
    r"""``(L, L_max, mu)``: extreme eigenvalues of :math:`H=\frac1NA^\top A` and :math:`\max_i\|a_i\|^2`."""
    A = _arr(A)
    ev = np.linalg.eigvalsh(A.T @ A / A.shape[0])
    return float(ev[-1]), float((A * A).sum(1).max()), float(ev[0])


def expected_smoothness(B: int, N: int, L: float, L_max: float) -> float:
    r""":math:`\mathcal L(B)` with :math:`\mathbb E\hat H_B^2\preceq\mathcal L(B)H` (batch without replacement):
    :math:`\mathbb E\hat H_B^2=\frac{N-B}{B(N-1)}\frac1N\sum_iH_i^2+\frac{N(B-1)}{B(N-1)}H^2`, and
    :math:`H_i^2=\|a_i\|^2H_i\preceq L_{\max}H_i`, :math:`H^2\preceq LH`."""
    return (N - B) / (B * (N - 1)) * L_max + N * (B - 1) / (B * (N - 1)) * L


def critical_batch(A) -> float:
    r""":math:`B_{\rm crit}=L_{\max}/L`, where the two terms of :math:`\mathcal L(B)\approx L+L_{\max}/B` are equal."""
    L, L_max, _ = row_constants(A)
    return L_max / L


def predicted_speedup(A, B: int) -> float:
    r""":math:`\mathcal L(1)/\mathcal L(B)=L_{\max}/\mathcal L(B)`: iterations of the guaranteed rate
    :math:`1-\mu/\mathcal L(B)` scale like :math:`\mathcal L(B)/\mu`."""
    L, L_max, _ = row_constants(A)
    N = _arr(A).shape[0]
    return L_max / expected_smoothness(B, N, L, L_max)


def guaranteed_rate(A, B: int) -> float:
    r"""The mean-square contraction guaranteed at :math:`\eta=1/\mathcal L(B)`: :math:`1-\mu/\mathcal L(B)`."""
    L, L_max, mu = row_constants(A)
    return 1.0 - mu / expected_smoothness(B, _arr(A).shape[0], L, L_max)

# ---------------------------------------------------------------------------------- bs-ex-superlinear


def scalar_optimal_rate(h, B: int, replace: bool = False) -> float:
    r"""Best mean-square rate of minibatch SGD on the 1-D interpolating problem with curvatures ``h``:
    :math:`\mathbb E e_+^2=(1-2\eta\bar h+\eta^2\mathbb E\hat h_B^2)e^2`, minimised at
    :math:`\eta=\bar h/\mathbb E\hat h_B^2`: :math:`r(B)=\frac{qc_B}{1+qc_B}`, :math:`q=v/\bar h^2`,
    :math:`v=\frac1N\sum_i(h_i-\bar h)^2`, :math:`c_B=\frac{N-B}{B(N-1)}` (without) or :math:`\frac1B` (with)."""
    h = _arr(h)
    N = len(h)
    q = h.var() / h.mean() ** 2
    c = 1.0 / B if replace else (N - B) / (B * (N - 1))
    return q * c / (1.0 + q * c)


def scalar_speedup(h, B: int, replace: bool = False) -> float:
    r""":math:`S(B)=\log r(B)/\log r(1)` for :func:`scalar_optimal_rate` (``inf`` when :math:`r(B)=0`)."""
    rB = scalar_optimal_rate(h, B, replace)
    return math.inf if rB == 0 else math.log(rB) / math.log(scalar_optimal_rate(h, 1, replace))

# -------------------------------------------------------------------------------------- bs-ex-delay


def delayed_gd_stability_limit(tau: int) -> float:
    r"""Largest :math:`a=\eta h` for which :math:`e_{t+1}=e_t-ae_{t-\tau}` is stable:
    :math:`2\sin\frac{\pi}{2(2\tau+1)}` (the first root of :math:`z^{\tau+1}-z^\tau+a` to reach the unit
    circle does so at :math:`z=e^{\pm i\pi/(2\tau+1)}`)."""
    return 2.0 * math.sin(math.pi / (2 * (2 * tau + 1)))


def delayed_gd_spectral_radius(a: float, tau: int) -> float:
    r"""Largest root modulus of the characteristic polynomial :math:`z^{\tau+1}-z^\tau+a`."""
    coeffs = np.zeros(tau + 2)
    coeffs[0], coeffs[1], coeffs[-1] = 1.0, -1.0, a
    if tau == 0:
        coeffs = np.array([1.0, a - 1.0])
    return float(np.abs(np.roots(coeffs)).max())


def tau1_second_moment_step(A, eta: float, P, Q, R):
    r"""One step of the second moments of SGD with delay 1 on interpolating least squares, state
    :math:`z_t=(e_t,e_{t-1})`, :math:`P=\mathbb Ee_te_t^\top`, :math:`Q=\mathbb Ee_te_{t-1}^\top`,
    :math:`R=\mathbb Ee_{t-1}e_{t-1}^\top`; returns :math:`(P^+,Q^+,R^+)` with
    :math:`P^+=P-\eta(QH+HQ^\top)+\eta^2\frac1N\sum_iH_iRH_i`, :math:`Q^+=P-\eta HQ^\top`, :math:`R^+=P`."""
    A = _arr(A)
    N = A.shape[0]
    P, Q, R = _arr(P), _arr(Q), _arr(R)
    H = A.T @ A / N
    proj = np.einsum("ni,ij,nj->n", A, R, A)               # a_i^T R a_i
    HRH = (A * proj[:, None]).T @ A / N                    # (1/N) sum_i H_i R H_i
    return P - eta * (Q @ H + H @ Q.T) + eta ** 2 * HRH, P - eta * H @ Q.T, P.copy()

# -------------------------------------------------------------------------------------- bs-ex-width


def param_count(d_in: int, width: int, depth: int, d_out: int) -> int:
    """Weights of a bias-free network with ``depth`` weight matrices: one ``d_in x width``, ``depth - 2``
    square ``width x width``, one ``width x d_out``."""
    return d_in * width + (depth - 2) * width * width + width * d_out


def matched_width(params: int, depth: int, d_in: int, d_out: int) -> int:
    r"""The width whose count :func:`param_count` is nearest to ``params``: the positive root of
    :math:`(\ell-2)h^2+(d_{\rm in}+d_{\rm out})h-P=0`, rounded to the better of its two neighbours."""
    a, b = depth - 2, d_in + d_out
    h = params / b if a == 0 else (math.sqrt(b * b + 4 * a * params) - b) / (2 * a)
    cands = {max(1, math.floor(h)), max(1, math.ceil(h))}
    return min(sorted(cands), key=lambda w: abs(param_count(d_in, w, depth, d_out) - params))
