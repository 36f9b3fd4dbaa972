r"""Reference answers to the exercises of the chapter "Compression under heterogeneity".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy and the
standard library, without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_compression.py`` checks each answer against an independent computation with hetlab
(Monte Carlo over the library's compressors with ``hetlab.exact.mc_interval``, the library's D-QSGD, DIANA,
CHOCO-SGD and LEAD iterated, the library's bit counts and D-SGD fixed points).

=========================  ===============================================================================
exercise                   functions
=========================  ===============================================================================
``cmp-ex-variance``        :func:`randk_variance`, :func:`randk_variance_by_enumeration`,
                           :func:`qsgd_variance`, :func:`qsgd_variance_bound`
``cmp-ex-floor``           :func:`dqsgd_recursion`, :func:`dqsgd_second_moment`, :func:`dqsgd_floor`,
                           :func:`shared_mask_factor`
``cmp-ex-bits``            :func:`index_bits`, :func:`bits_per_message`, :func:`break_even_ratio`,
                           :func:`bits_ratio`
``cmp-ex-lead``            :func:`lead_fixed_point`
``cmp-ex-diana``           :func:`diana_shift_limit`, :func:`diana_shift_factor`, :func:`diana_best_alpha`
``cmp-ex-choco``           :func:`lazy_mixing`, :func:`choco_fixed_point`, :func:`rms_error`
=========================  ===============================================================================
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "randk_variance", "randk_variance_by_enumeration", "qsgd_variance", "qsgd_variance_bound",
    "dqsgd_recursion", "dqsgd_second_moment", "dqsgd_floor", "shared_mask_factor",
    "index_bits", "bits_per_message", "break_even_ratio", "bits_ratio",
    "lead_fixed_point",
    "diana_shift_limit", "diana_shift_factor", "diana_best_alpha",
    "lazy_mixing", "choco_fixed_point", "rms_error",
]

FLOAT_BITS = 64

# ---------------------------------------------------------------------------- cmp-ex-variance


def randk_variance(v, k: int) -> float:
    r""":math:`\mathbb E\|\frac dk v\odot\mathbb 1_S-v\|^2` for a uniform :math:`k`-subset :math:`S`.

    Coordinate :math:`j` is kept with probability :math:`k/d` (error :math:`(d/k-1)^2v_j^2`) and dropped
    otherwise (error :math:`v_j^2`), so the error is
    :math:`\sum_jv_j^2[\frac kd(\frac dk-1)^2+1-\frac kd]=(\frac dk-1)\|v\|^2`: the bound
    :math:`\omega\|v\|^2` holds with equality, :math:`\omega=d/k-1`."""
    v = np.asarray(v, dtype=float)
    d = v.size
    return (d / k - 1.0) * float(v @ v)


def randk_variance_by_enumeration(v, k: int) -> float:
    r"""The same expectation as the plain average over all :math:`\binom dk` subsets (a check of the algebra)."""
    v = np.asarray(v, dtype=float)
    d = v.size
    total, count = 0.0, 0
    for S in itertools.combinations(range(d), k):
        q = np.zeros(d)
        q[list(S)] = v[list(S)] * d / k
        total += float(((q - v) ** 2).sum())
        count += 1
    return total / count


def qsgd_variance(v, s: int) -> float:
    r"""Exact :math:`\mathbb E\|Q_s(v)-v\|^2` of QSGD with :math:`s` levels.

    With :math:`r_j=s|v_j|/\|v\|` and :math:`p_j=r_j-\lfloor r_j\rfloor`, coordinate :math:`j` is
    :math:`\frac{\|v\|}s\mathrm{sign}(v_j)\xi_j` with :math:`\xi_j\in\{\lfloor r_j\rfloor,\lfloor r_j\rfloor+1\}`
    a Bernoulli rounding of mean :math:`r_j` and variance :math:`p_j(1-p_j)`; the coordinates are
    independent, so the error is :math:`\frac{\|v\|^2}{s^2}\sum_jp_j(1-p_j)`."""
    v = np.asarray(v, dtype=float)
    nv = float(np.linalg.norm(v))
    if nv == 0.0:
        return 0.0
    r = s * np.abs(v) / nv
    p = r - np.floor(r)
    return nv ** 2 / s ** 2 * float((p * (1.0 - p)).sum())


def qsgd_variance_bound(d: int, s: int) -> float:
    r"""A constant :math:`\omega` with :math:`\mathbb E\|Q_s(v)-v\|^2\le\omega\|v\|^2` for every :math:`v`:
    :math:`p(1-p)\le\min(\frac14,p)` and :math:`p_j\le r_j`, :math:`\sum_jr_j=s\|v\|_1/\|v\|\le s\sqrt d`, so
    :math:`\sum_jp_j(1-p_j)\le\min(\frac d4,s\sqrt d)` and :math:`\omega=\min(\frac d{4s^2},\frac{\sqrt d}s)`."""
    return min(d / (4.0 * s ** 2), math.sqrt(d) / s)

# ------------------------------------------------------------------------------- cmp-ex-floor


def dqsgd_recursion(eta: float, omega: float, zeta_sq: float, n: int) -> tuple[float, float]:
    r"""D-QSGD on :math:`f_i=\frac12\|x-b_i\|^2` with exact gradients and independent compressors whose
    error is exactly :math:`\omega\|v\|^2` (rand-k): :math:`m_{t+1}=a\,m_t+c` for
    :math:`m_t=\mathbb E\|x_t-x^\star\|^2`, with :math:`a=(1-\eta)^2+\eta^2\omega/n` and
    :math:`c=\eta^2\omega\zeta_\star^2/n`. Returns ``(a, c)``."""
    return (1.0 - eta) ** 2 + eta ** 2 * omega / n, eta ** 2 * omega * zeta_sq / n


def dqsgd_second_moment(eta: float, omega: float, zeta_sq: float, n: int, m0: float, t: int) -> float:
    r""":math:`m_t=m_\infty+a^t(m_0-m_\infty)` (for :math:`a<1`), or the recursion iterated if :math:`a\ge1`."""
    a, c = dqsgd_recursion(eta, omega, zeta_sq, n)
    m = float(m0)
    for _ in range(int(t)):
        m = a * m + c
    return m


def dqsgd_floor(eta: float, omega: float, zeta_sq: float, n: int) -> float:
    r"""The fixed point :math:`m_\infty=c/(1-a)=\frac{\eta\omega\zeta_\star^2}{n(2-\eta-\eta\omega/n)}`
    (finite iff :math:`a<1`, i.e. :math:`0<\eta<2/(1+\omega/n)`)."""
    a, c = dqsgd_recursion(eta, omega, zeta_sq, n)
    if not a < 1.0:
        return math.inf
    return c / (1.0 - a)


def shared_mask_factor(eta: float, omega: float) -> float:
    r"""All workers use the same rand-k mask: the server receives :math:`Q(\frac1n\sum_i(x-b_i))=Q(e)`, and
    :math:`\mathbb E\|e-\eta Q(e)\|^2=(1-2\eta+\eta^2(1+\omega))\|e\|^2`: no floor, linear convergence for
    :math:`\eta<2/(1+\omega)`."""
    return 1.0 - 2.0 * eta + eta ** 2 * (1.0 + omega)

# -------------------------------------------------------------------------------- cmp-ex-bits


def index_bits(d: int) -> int:
    r"""Bits to name one of :math:`d` coordinates: :math:`\lceil\log_2d\rceil` (at least 1)."""
    return max(1, math.ceil(math.log2(d))) if d > 1 else 1


def bits_per_message(name: str, d: int, k: int | None = None, s: int | None = None) -> int:
    r"""Bits of one worker's message with 64-bit floats, no entropy coding.

    ``identity``: :math:`64d`; ``rand_k``, ``rand_k_unscaled``, ``top_k``: :math:`k(64+\lceil\log_2d\rceil)`
    (values and indices); ``qsgd``: :math:`64+d(1+\lceil\log_2(s+1)\rceil)` (the norm, then a sign and a
    level in :math:`\{0,\dots,s\}` per coordinate); ``scaled_sign``: :math:`64+d`; ``sign``: :math:`d`."""
    if name == "identity":
        return FLOAT_BITS * d
    if name in ("rand_k", "rand_k_unscaled", "top_k"):
        return k * (FLOAT_BITS + index_bits(d))
    if name == "qsgd":
        return FLOAT_BITS + d * (1 + max(1, math.ceil(math.log2(s + 1))))
    if name == "scaled_sign":
        return FLOAT_BITS + d
    if name == "sign":
        return d
    raise ValueError(f"unknown compressor {name!r}")


def break_even_ratio(bits_compressed: int, bits_uncompressed: int) -> float:
    r"""A compressed method that needs :math:`r` times as many rounds as the uncompressed one sends fewer bits
    iff :math:`r<b_{\rm unc}/b_{\rm comp}`: the break-even iteration ratio."""
    return bits_uncompressed / bits_compressed


def bits_ratio(iters_compressed: int, iters_uncompressed: int, bits_compressed: int,
               bits_uncompressed: int) -> float:
    r"""Total bits of the compressed run over the uncompressed one (same number of workers, one message per
    worker per round): :math:`\frac{T_c}{T_u}\cdot\frac{b_c}{b_u}`."""
    return (iters_compressed / iters_uncompressed) * (bits_compressed / bits_uncompressed)

# -------------------------------------------------------------------------------- cmp-ex-lead


def _quadratic_minimiser(A, B) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    return np.linalg.solve(A.sum(0), np.einsum("nij,nj->i", A, B))


def lead_fixed_point(A, B, W) -> dict:
    r"""The fixed point of LEAD on :math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)`.

    At a fixed point the compressed messages must vanish for every draw, so :math:`Y=H`, :math:`\hat Y=Y=X`;
    :math:`D^+=D` forces :math:`(I-W)\hat Y=0`, i.e. consensus :math:`X=\mathbf 1x^\top`; :math:`X^+=X` forces
    :math:`G(X)+D=0`, and summing the rows with :math:`\mathbf 1^\top D=0` gives :math:`\nabla f(x)=0`, so
    :math:`x=x^\star` and :math:`D_i=-\nabla f_i(x^\star)`. Returns ``X``, ``D``, ``H``, ``H_w`` (``[n, d]``)."""
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    W = np.asarray(W, dtype=float)
    x = _quadratic_minimiser(A, B)
    X = np.broadcast_to(x, B.shape).copy()
    G = np.einsum("nij,nj->ni", A, X - B)
    return {"X": X, "D": -G, "H": X.copy(), "H_w": W @ X}

# ------------------------------------------------------------------------------- cmp-ex-diana


def diana_shift_limit(A, B) -> np.ndarray:
    r"""DIANA's shifts at its fixed point: :math:`h_i=\nabla f_i(x^\star)=A_i(x^\star-b_i)` (rows), because
    the message :math:`Q(\nabla f_i(x)-h_i)` must vanish for every draw."""
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    x = _quadratic_minimiser(A, B)
    return np.einsum("nij,nj->ni", A, x[None] - B)


def diana_shift_factor(alpha: float, omega: float) -> float:
    r"""With the model frozen at :math:`x^\star`, :math:`u=h-h^\star` becomes :math:`u-\alpha Q(u)` and
    :math:`\mathbb E\|u-\alpha Q(u)\|^2=(1-2\alpha+\alpha^2(1+\omega))\|u\|^2` (exact for rand-k, where
    :math:`\mathbb E\|Q(u)\|^2=(1+\omega)\|u\|^2`)."""
    return 1.0 - 2.0 * alpha + alpha ** 2 * (1.0 + omega)


def diana_best_alpha(omega: float) -> tuple[float, float]:
    r"""The factor is minimised at :math:`\alpha=1/(1+\omega)`, where it equals :math:`\omega/(1+\omega)`."""
    a = 1.0 / (1.0 + omega)
    return a, diana_shift_factor(a, omega)

# ------------------------------------------------------------------------------- cmp-ex-choco


def lazy_mixing(W, gamma: float) -> np.ndarray:
    r""":math:`W_\gamma=I+\gamma(W-I)=(1-\gamma)I+\gamma W`."""
    W = np.asarray(W, dtype=float)
    return (1.0 - gamma) * np.eye(W.shape[0]) + gamma * W


def choco_fixed_point(A, B, W, eta: float, gamma: float) -> np.ndarray:
    r"""Fixed point of CHOCO-SGD on :math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)` with exact gradients.

    The message :math:`C(X^{+1/2}-\hat X)` vanishes for every draw only if :math:`\hat X=X^{+1/2}=X-\eta G(X)`;
    then :math:`X=X^{+1/2}+\gamma(W-I)X^{+1/2}=W_\gamma(X-\eta G(X))`: the fixed point of D-SGD (adapt then
    combine) with the lazy matrix :math:`W_\gamma`. With :math:`G(X)_i=A_i(x_i-b_i)` this is the linear system
    :math:`x_i-\sum_j(W_\gamma)_{ij}(x_j-\eta A_j(x_j-b_j))=0`, solved here as one :math:`nd\times nd` system."""
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    n, d = B.shape
    Wg = lazy_mixing(W, gamma)
    # z = vec(X) row-major; (X - eta G(X))_j = (I - eta A_j) x_j + eta A_j b_j
    M = np.zeros((n * d, n * d))
    rhs = np.zeros(n * d)
    for i in range(n):
        M[i * d:(i + 1) * d, i * d:(i + 1) * d] += np.eye(d)
        for j in range(n):
            M[i * d:(i + 1) * d, j * d:(j + 1) * d] -= Wg[i, j] * (np.eye(d) - eta * A[j])
            rhs[i * d:(i + 1) * d] += Wg[i, j] * eta * A[j] @ B[j]
    return np.linalg.solve(M, rhs).reshape(n, d)


def rms_error(X, x_star) -> float:
    r""":math:`\sqrt{\frac1n\sum_i\|x_i-x^\star\|^2}`."""
    X = np.asarray(X, dtype=float)
    return float(np.sqrt(((X - np.asarray(x_star, dtype=float)[None]) ** 2).sum(1).mean()))
