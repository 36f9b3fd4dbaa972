r"""Reference answers to the exercises of the chapter "Gossip, topology and heterogeneity".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_gossip.py`` checks each answer against an independent computation with hetlab
(the library's mixing matrices and spectral quantities, its D-SGD implementation, its RelaySum messaging).

=========================  ======================================================================
exercise                   functions
=========================  ======================================================================
``ex-go-ring-spectrum``    :func:`ring_eigenvalues`, :func:`ring_rho`, :func:`ring_best_self_weight`
``ex-go-hypercube``        :func:`hypercube_spectrum`, :func:`hypercube_rho`, :func:`hypercube_p`
``ex-go-dsgd-two-nodes``   :func:`dsgd_two_nodes_fixed_point`, :func:`dsgd_two_nodes_gap_equal_curvature`
``ex-go-rounds``           :func:`rounds_to_eps`, :func:`ring_rounds`, :func:`exponential_rounds`,
                           :func:`one_peer_rounds`
``ex-go-chain-delays``     :func:`chain_delays`, :func:`chain_full_count_step`, :func:`chain_mean_delay`,
                           :func:`star_mean_delay`
=========================  ======================================================================
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ring_eigenvalues", "ring_rho", "ring_best_self_weight",
    "hypercube_spectrum", "hypercube_rho", "hypercube_p",
    "dsgd_two_nodes_fixed_point", "dsgd_two_nodes_gap_equal_curvature",
    "rounds_to_eps", "ring_rounds", "exponential_rounds", "one_peer_rounds",
    "chain_delays", "chain_full_count_step", "chain_mean_delay", "star_mean_delay",
]


def _tau(n: int) -> int:
    tau = int(round(math.log2(n)))
    if n < 2 or 2 ** tau != n:
        raise ValueError(f"n must be a power of two, got {n}")
    return tau

# ------------------------------------------------------------------------ ex-go-ring-spectrum


def ring_eigenvalues(n: int, a: float) -> np.ndarray:
    r"""Ring with weight :math:`a` on self and :math:`(1-a)/2` on each neighbour. The matrix is circulant, so the
    Fourier vectors :math:`(\omega^{jk})_j`, :math:`\omega=e^{2\pi i/n}`, are eigenvectors with eigenvalues
    :math:`a+\frac{1-a}2(\omega^k+\omega^{-k})=a+(1-a)\cos(2\pi k/n)`, ``k = 0..n-1``."""
    k = np.arange(n)
    return a + (1 - a) * np.cos(2 * np.pi * k / n)


def ring_rho(n: int, a: float) -> float:
    r""":math:`\rho=\max_{k\ne0}|a+(1-a)\cos(2\pi k/n)|`: the extremes are ``k = 1`` (largest) and
    ``k = floor(n/2)`` (smallest; :math:`2a-1` for even ``n``)."""
    c1 = math.cos(2 * math.pi / n)
    cm = math.cos(2 * math.pi * (n // 2) / n)
    return max(abs(a + (1 - a) * c1), abs(a + (1 - a) * cm))


def ring_best_self_weight(n: int) -> tuple[float, float]:
    r"""The self weight that minimises :math:`\rho` and the minimum, ``(a_star, rho_star)``.

    For :math:`a\ge0` the largest eigenvalue :math:`\lambda_1(a)=c_1+a(1-c_1)` increases with :math:`a`, and the
    most negative :math:`\lambda_m(a)=c_m+a(1-c_m)` (:math:`c_m=\cos(2\pi\lfloor n/2\rfloor/n)<0`) moves up to 0.
    :math:`\rho=\max(\lambda_1,-\lambda_m)` is smallest where they balance, :math:`\lambda_1=-\lambda_m`:
    :math:`a^\star=-\frac{c_1+c_m}{2-c_1-c_m}`. For even ``n`` (:math:`c_m=-1`) this is
    :math:`a^\star=\frac{1-c_1}{3-c_1}` and :math:`\rho^\star=\frac{1+c_1}{3-c_1}`.
    """
    c1 = math.cos(2 * math.pi / n)
    cm = math.cos(2 * math.pi * (n // 2) / n)
    a = -(c1 + cm) / (2 - c1 - cm)
    return a, a + (1 - a) * c1

# --------------------------------------------------------------------------- ex-go-hypercube


def hypercube_spectrum(n: int) -> dict:
    r"""``{eigenvalue: multiplicity}`` of the hypercube with weights :math:`1/(\tau+1)`, ``n = 2^tau``.

    For every bit mask :math:`s` the character :math:`\chi_s(x)=(-1)^{\langle s,x\rangle}` is an eigenvector:
    flipping bit :math:`\ell` multiplies it by :math:`-1` if :math:`s_\ell=1`, so
    :math:`W\chi_s=\frac{1+(\tau-w)-w}{\tau+1}\chi_s` with :math:`w=|s|`, multiplicity :math:`\binom\tau w`.
    """
    tau = _tau(n)
    return {(1 + tau - 2 * w) / (tau + 1): math.comb(tau, w) for w in range(tau + 1)}


def hypercube_rho(n: int) -> float:
    r""":math:`\rho=\frac{\tau-1}{\tau+1}=1-\frac2{\tau+1}` (``w = 1`` and ``w = tau`` tie)."""
    tau = _tau(n)
    return (tau - 1) / (tau + 1)


def hypercube_p(n: int) -> float:
    r"""Koloskova et al.'s :math:`p=1-\rho^2=\frac{4\tau}{(\tau+1)^2}`."""
    tau = _tau(n)
    return 4 * tau / (tau + 1) ** 2

# ---------------------------------------------------------------------- ex-go-dsgd-two-nodes


def dsgd_two_nodes_fixed_point(a, b, w: float, eta: float) -> np.ndarray:
    r"""D-SGD (ATC) fixed point ``[x_1, x_2]`` for :math:`f_i=\frac{a_i}2(x-b_i)^2` and
    :math:`W=\begin{pmatrix}1-w&w\\w&1-w\end{pmatrix}`.

    The fixed point solves :math:`x=W(Ux+v)` with :math:`U=\mathrm{diag}(1-\eta a_i)`, :math:`v_i=\eta a_ib_i`, i.e.
    the 2x2 system :math:`(I-WU)x=Wv`, solved here by Cramer's rule.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    u1, u2 = 1 - eta * a
    v1, v2 = eta * a * b
    r1, r2 = (1 - w) * v1 + w * v2, w * v1 + (1 - w) * v2
    m11, m12 = 1 - (1 - w) * u1, -w * u2
    m21, m22 = -w * u1, 1 - (1 - w) * u2
    det = m11 * m22 - m12 * m21
    return np.array([(r1 * m22 - m12 * r2) / det, (m11 * r2 - m21 * r1) / det])


def dsgd_two_nodes_gap_equal_curvature(a: float, b, w: float, eta: float) -> float:
    r"""With equal curvatures :math:`a_1=a_2=a` the mean of the fixed point is exactly :math:`\bar b=x^\star`, and the
    gap :math:`\delta=x_1-x_2` solves :math:`\delta=(1-2w)\big((1-\eta a)\delta+\eta a(b_1-b_2)\big)`:
    :math:`\delta=\frac{(1-2w)\eta a(b_1-b_2)}{1-(1-2w)(1-\eta a)}`, which is :math:`O(\eta)` and vanishes for
    :math:`w=1/2` (:math:`W=J`)."""
    b = np.asarray(b, dtype=np.float64)
    lam = 1 - 2 * w
    return float(lam * eta * a * (b[0] - b[1]) / (1 - lam * (1 - eta * a)))

# ------------------------------------------------------------------------------ ex-go-rounds


def rounds_to_eps(rho: float, eps: float) -> int:
    r"""Smallest ``r`` with :math:`\rho^r\le\varepsilon`. For a normal :math:`W` (symmetric, or circulant like the
    static exponential graph) :math:`\|W^r-J\|_2=\rho^r` exactly, so this is the number of gossip rounds after which
    every disagreement :math:`X-JX` has shrunk by at least ``eps``."""
    if rho == 0:
        return 1
    r = math.ceil(math.log(eps) / math.log(rho))
    while rho ** r > eps:
        r += 1
    while r > 1 and rho ** (r - 1) <= eps:
        r -= 1
    return r


def ring_rounds(n: int, eps: float) -> int:
    r"""Ring with weights 1/3: :math:`\rho=\frac{1+2\cos(2\pi/n)}3`; asymptotically
    :math:`r\approx\frac{3n^2}{4\pi^2}\ln\frac1\varepsilon`."""
    return rounds_to_eps((1 + 2 * math.cos(2 * math.pi / n)) / 3, eps)


def exponential_rounds(n: int, eps: float) -> int:
    r"""Static exponential graph: :math:`\rho=1-\frac2{\tau+1}`; :math:`r\approx\frac{\tau+1}2\ln\frac1\varepsilon`."""
    tau = _tau(n)
    return rounds_to_eps(1 - 2 / (tau + 1), eps)


def one_peer_rounds(n: int) -> int:
    r"""One-peer exponential schedule: the product of its first :math:`\tau=\log_2n` steps is exactly :math:`J`
    (and the product of fewer steps averages only blocks of :math:`2^r` nodes), so :math:`\tau` rounds reach exact
    consensus, for every :math:`\varepsilon`."""
    return _tau(n)

# ------------------------------------------------------------------------ ex-go-chain-delays


def chain_delays(n: int) -> np.ndarray:
    r"""RelaySum delays on the chain :math:`0-1-\dots-(n-1)`: :math:`\tau_{ik}=\max(|i-k|-1,0)`."""
    i = np.arange(n)
    return np.maximum(np.abs(i[:, None] - i[None, :]) - 1, 0)


def chain_full_count_step(n: int) -> int:
    r"""First step at which every worker has received all ``n`` models: the largest delay, :math:`n-2`
    (the two ends, at distance :math:`n-1`)."""
    return max(n - 2, 0)


def chain_mean_delay(n: int) -> float:
    r""":math:`\frac1{n^2}\sum_{i,k}\max(|i-k|-1,0)`: the :math:`2(n-m)` ordered pairs at distance :math:`m`
    contribute :math:`m-1` each, and :math:`\sum_{m=1}^{n-1}(n-m)(m-1)=\frac{n(n-1)(n-2)}6`, so the mean is
    :math:`\frac{(n-1)(n-2)}{3n}`."""
    return (n - 1) * (n - 2) / (3 * n)


def star_mean_delay(n: int) -> float:
    r"""Star (hub and ``n - 1`` leaves): only the :math:`(n-1)(n-2)` ordered leaf pairs have delay 1, so the mean
    delay is :math:`\frac{(n-1)(n-2)}{n^2}<1`."""
    return (n - 1) * (n - 2) / n ** 2
