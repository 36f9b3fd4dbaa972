r"""Closed-form predictions for median- and sign-based aggregation (THEORY D1, D2).

Everything here is computed from formulas, bisection, exact subset sums and ``scipy.integrate.quad``
(NumPy/SciPy float64), independently of :mod:`hetlab.aggregate` and :mod:`hetlab.algorithms`, so that
comparing the two is a real check.

**Median fixed point** (D1(b)). On separable quadratics :math:`f_i(x)=\frac12\sum_ca_{ic}(x_c-m_{ic})^2`
(:math:`a_{ic}>0`) the median gradient of coordinate :math:`c`,
:math:`x_c\mapsto\mathrm{med}_i\,a_{ic}(x_c-m_{ic})`, is continuous and strictly increasing, so medianGD's
fixed point :math:`x_{\rm med}` is its unique root (:func:`median_fixed_point`, by bisection). With
equal curvatures it is :math:`\mathrm{med}_i(m_i)`, while :math:`x^\star=\sum_ia_im_i/\sum_ia_i`.

**Noisy median** (D2). For :math:`n=2k+1` scalar values :math:`g_i` and i.i.d. noise :math:`\xi_i` with a
symmetric density :math:`\varphi` and CDF :math:`\Phi`, the median of :math:`g_i+b\xi_i` has the CDF

.. math:: P(\mathrm{med}\le z)=\sum_{S\subseteq[n],\,|S|\ge k+1}\ \prod_{i\in S}F_i(z)\prod_{i\notin S}(1-F_i(z)),
          \qquad F_i(z)=\Phi\big((z-g_i)/b\big)

(:func:`median_cdf`, an exact sum over the :math:`2^n` subsets), and

* :math:`\mathbb E[\mathrm{med}]=\int_0^\infty\big(1-P(\mathrm{med}\le z)-P(\mathrm{med}\le -z)\big)\,dz`
  (:func:`expected_median`, one ``quad`` on :math:`[0,\max_i|g_i|+50b]`, tolerance 1e-13), which is
  :math:`\bar g+O(b^{-2})`;
* :math:`\mathbb E[\mathrm{sign}\,\mathrm{med}]=1-2P(\mathrm{med}\le0)` (:func:`expected_sign_median`),
  which is :math:`\frac{c_n}b\bar g+O(b^{-3})` with :math:`c_n=2\varphi(0)\,n\binom{2k}k4^{-k}`
  (:func:`sign_slope_constant`);
* on 1-D heterogeneous quadratics, the zero of the expected noisy-signGD update
  (:func:`noisy_sign_root`, ``brentq``) is :math:`O(b^{-2})` away from :math:`x^\star`.

Noise kinds: ``"gaussian"`` (:math:`\xi\sim\mathcal N(0,1)`) and ``"uniform"`` (:math:`\xi\sim\mathcal U[-1,1]`).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import integrate, optimize, special

__all__ = ["median_fixed_point", "median_fixed_point_problem", "noise_cdf", "noise_density_at_zero",
           "median_cdf", "prob_median_positive", "expected_median", "expected_sign_median",
           "sign_slope_constant", "noisy_sign_root", "global_grad_norm_separable"]

MAX_SUBSET_N = 20


# ------------------------------------------------------------------------------ D1: x_med


def _median_np(V: np.ndarray, axis=0) -> np.ndarray:
    """The median with the mean-of-the-two-middle-values convention (``numpy.median``)."""
    return np.median(V, axis=axis)


def median_fixed_point(a, m, tol: float = 0.0, max_iter: int = 400) -> np.ndarray:
    r"""Root :math:`x_{\rm med}` of :math:`x_c\mapsto\mathrm{med}_i\,a_{ic}(x_c-m_{ic})` for every coordinate,
    by bisection on :math:`[\min_im_{ic},\max_im_{ic}]` (the root lies there: below every :math:`m_{ic}`
    all values are negative, above every one all are positive).

    ``a``, ``m``: ``[n, d]`` (or ``[n]`` for one coordinate) curvatures (positive) and local minimisers.
    Bisection runs until the bracket stops shrinking in float64 (or is narrower than ``tol``).
    """
    a = np.asarray(a, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    scalar = a.ndim == 1
    if scalar:
        a, m = a[:, None], m[:, None]
    if a.shape != m.shape or a.ndim != 2:
        raise ValueError(f"a and m must have the same shape [n, d] (or [n]), got {a.shape} and {m.shape}")
    if not np.all(a > 0):
        raise ValueError("median_fixed_point: the curvatures a must be positive (else the median gradient can be flat)")
    lo, hi = m.min(0).copy(), m.max(0).copy()
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        v = _median_np(a * (mid[None] - m))
        neg = v < 0
        new_lo, new_hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
        if np.all(hi - lo <= tol):
            break
    x = 0.5 * (lo + hi)
    return x[0] if scalar else x


def _separable(problem):
    A = problem.A.numpy() if hasattr(problem.A, "numpy") else np.asarray(problem.A)
    diag = np.diagonal(A, axis1=1, axis2=2)
    off = A - np.stack([np.diag(r) for r in diag])
    if np.abs(off).max() > 0:
        raise ValueError("the problem is not separable: its Hessians A_i are not diagonal")
    c = problem.c.numpy() if hasattr(problem.c, "numpy") else np.asarray(problem.c)
    return diag, c / diag


def median_fixed_point_problem(problem) -> np.ndarray:
    r""":math:`x_{\rm med}` of a separable :class:`~hetlab.problems.QuadraticProblem` (diagonal :math:`A_i`):
    curvatures :math:`a_{ic}=(A_i)_{cc}`, minimisers :math:`m_{ic}=c_{ic}/a_{ic}`."""
    a, m = _separable(problem)
    return median_fixed_point(a, m)


def global_grad_norm_separable(a, m, x) -> np.ndarray:
    r""":math:`\|\nabla f(x)\|` for :math:`f=\frac1n\sum_if_i` separable, :math:`\nabla f(x)=\bar a\odot x-\overline{a\odot m}`
    (``x`` ``[..., d]``)."""
    a = np.asarray(a, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return np.linalg.norm(a.mean(0) * np.asarray(x) - (a * m).mean(0), axis=-1)

# ------------------------------------------------------------------------------ D2: noise


def noise_cdf(t, noise: str = "gaussian"):
    """CDF of the standardised perturbation: standard normal, or uniform on [-1, 1]."""
    if noise == "gaussian":
        return special.ndtr(t)
    if noise == "uniform":
        return np.clip((np.asarray(t, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    raise ValueError(f"unknown noise {noise!r}; choose 'gaussian' or 'uniform'")


def noise_density_at_zero(noise: str = "gaussian") -> float:
    if noise == "gaussian":
        return 1.0 / math.sqrt(2.0 * math.pi)
    if noise == "uniform":
        return 0.5
    raise ValueError(f"unknown noise {noise!r}; choose 'gaussian' or 'uniform'")


def _check_odd(g) -> tuple[np.ndarray, int]:
    g = np.asarray(g, dtype=np.float64).ravel()
    n = g.size
    if n % 2 == 0:
        raise ValueError(f"the subset-sum formulas are for an odd number of values (n = 2k + 1), got n = {n}")
    if n > MAX_SUBSET_N:
        raise ValueError(f"the exact subset sum enumerates 2^n subsets; n = {n} > {MAX_SUBSET_N} is too many")
    return g, (n - 1) // 2


_MASKS: dict[int, np.ndarray] = {}


def _masks(n: int) -> np.ndarray:
    if n not in _MASKS:
        _MASKS[n] = np.array(list(itertools.product((False, True), repeat=n)), dtype=bool)
    return _MASKS[n]


def _at_least(F: np.ndarray, k1: int) -> np.ndarray:
    """P(at least k1 of n independent events happen), event i with probability F[..., i]: the subset sum."""
    masks = _masks(F.shape[-1])                                   # [2^n, n]
    keep = masks.sum(1) >= k1
    masks = masks[keep]
    P = np.where(masks, F[..., None, :], 1.0 - F[..., None, :])   # [..., S, n]
    return P.prod(-1).sum(-1)


def median_cdf(z, g, b: float, noise: str = "gaussian"):
    r""":math:`P(\mathrm{med}_i(g_i+b\xi_i)\le z)` by the exact subset sum (odd ``n``); ``z`` scalar or array."""
    g, k = _check_odd(g)
    if b <= 0:
        raise ValueError(f"the noise scale b must be positive, got {b}")
    z = np.asarray(z, dtype=np.float64)
    F = noise_cdf((z[..., None] - g) / b, noise)
    return _at_least(F, k + 1)


def prob_median_positive(g, b: float, noise: str = "gaussian") -> float:
    r""":math:`P(\mathrm{med}_i(g_i+b\xi_i)>0)`: at least :math:`k+1` successes with :math:`p_i=P(g_i+b\xi_i>0)
    =\Phi(g_i/b)` (symmetric noise)."""
    g, k = _check_odd(g)
    if b <= 0:
        raise ValueError(f"the noise scale b must be positive, got {b}")
    p = noise_cdf(g / b, noise)
    return float(_at_least(p, k + 1))


def expected_sign_median(g, b: float, noise: str = "gaussian") -> float:
    r""":math:`\mathbb E[\mathrm{sign}\,\mathrm{med}_i(g_i+b\xi_i)]=2P(\mathrm{med}>0)-1` (the median is 0 with
    probability 0). For odd ``n`` this is also the expected majority vote."""
    return 2.0 * prob_median_positive(g, b, noise) - 1.0


def expected_median(g, b: float, noise: str = "gaussian", tol: float = 1e-13) -> float:
    r""":math:`\mathbb E[\mathrm{med}_i(g_i+b\xi_i)]` by quadrature of the exact CDF:
    :math:`\int_0^L\big(1-P(\mathrm{med}\le z)-P(\mathrm{med}\le-z)\big)dz` with :math:`L=\max_i|g_i|+50b`
    (Gaussian; :math:`\max_i|g_i|+b` for uniform noise, whose support is bounded)."""
    g, _ = _check_odd(g)
    if b <= 0:
        raise ValueError(f"the noise scale b must be positive, got {b}")
    L = float(np.abs(g).max()) + (50.0 * b if noise == "gaussian" else b)

    def h(z):
        return float(1.0 - median_cdf(z, g, b, noise) - median_cdf(-z, g, b, noise))

    pts = sorted({float(abs(v)) for v in g if 0 < abs(v) < L})
    val, _err = integrate.quad(h, 0.0, L, epsabs=tol, epsrel=tol, limit=500, points=pts or None)
    return float(val)


def sign_slope_constant(n: int, noise: str = "gaussian") -> float:
    r""":math:`c_n=2\varphi(0)\,n\binom{2k}{k}4^{-k}` for :math:`n=2k+1`: the slope of
    :math:`\mathbb E[\mathrm{sign}\,\mathrm{med}_i(g_i+b\xi_i)]` in :math:`\bar g/b` at large :math:`b`.
    (The derivative of :math:`P(\text{at least }k+1\text{ of }n)` in one :math:`p_i` at :math:`p=\frac12` is
    :math:`P(\text{exactly }k\text{ of the other }2k)=\binom{2k}k4^{-k}`.)"""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n % 2 == 0:
        raise ValueError(f"sign_slope_constant: n must be a positive odd integer, got {n!r}")
    k = (n - 1) // 2
    return 2.0 * noise_density_at_zero(noise) * n * (math.comb(2 * k, k) / 4 ** k)  # exact ratio, no overflow


def noisy_sign_root(a, m, b: float, noise: str = "gaussian") -> float:
    r"""Zero of :math:`x\mapsto\mathbb E[\mathrm{sign}\,\mathrm{med}_i(a_i(x-m_i)+b\xi_i)]` on a 1-D
    heterogeneous quadratic (``brentq`` on :math:`[\min m-1,\max m+1]`, ``xtol = 1e-15``): the point where
    noisy signGD's expected step vanishes, :math:`O(b^{-2})` away from :math:`x^\star`."""
    a = np.asarray(a, dtype=np.float64).ravel()
    m = np.asarray(m, dtype=np.float64).ravel()
    if a.shape != m.shape or not np.all(a > 0):
        raise ValueError("noisy_sign_root: a and m must be 1-D arrays of the same length with a > 0")
    lo, hi = float(m.min()) - 1.0, float(m.max()) + 1.0
    return float(optimize.brentq(lambda x: expected_sign_median(a * (x - m), b, noise), lo, hi,
                                 xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))
