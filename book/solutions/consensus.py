r"""Reference answers to the exercises of the chapter "Consensus distance".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_consensus.py`` checks each answer against an independent computation with
hetlab (running D-SGD, probing its affine map and solving the Lyapunov equation, Monte Carlo).

Notation (as in the chapter): :math:`n` workers, dimension :math:`d`, symmetric doubly stochastic
mixing matrix :math:`W` with eigenvalues :math:`1=\lambda_1>\lambda_2\ge\dots\ge\lambda_n>-1`,
local objectives :math:`f_i(x)=\frac a2\|x-b_i\|^2` (identical Hessians :math:`aI`), step size
:math:`\eta`, gradient noise :math:`\mathcal N(0,s^2I_d)` per worker (per-coordinate variance
:math:`s^2`). Orderings: ``"atc"`` (:math:`X^+=W(X-\eta G)`) and ``"parallel"``
(:math:`X^+=WX-\eta G`).

============================  ==================================================================
exercise                      functions
============================  ==================================================================
``ex-cons-two-nodes``         :func:`two_node_consensus_sq`
``ex-cons-ratio``             :func:`atc_parallel_ratio`, :func:`ring_eigenvalues`
``ex-cons-gossip-steps``      :func:`ring_mixing`, :func:`gossip_consensus_sq`, :func:`min_gossip_steps`
``ex-cons-complete-noise``    :func:`complete_graph_noise_consensus_sq`
============================  ==================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "two_node_consensus_sq", "atc_parallel_ratio", "ring_eigenvalues", "ring_mixing",
    "gossip_consensus_sq", "min_gossip_steps", "complete_graph_noise_consensus_sq",
]


def _ordering(ordering):
    if ordering not in ("atc", "parallel"):
        raise ValueError(f"ordering must be 'atc' or 'parallel', got {ordering!r}")
    return ordering


# ----------------------------------------------------------------------------- exercise (a)


def two_node_consensus_sq(a: float, eta: float, b1, b2, ordering: str = "atc", curvature: float = 1.0) -> float:
    r"""Stationary :math:`\Xi_\star^2` of deterministic D-SGD on two nodes with
    :math:`W=\begin{pmatrix}1-a&a\\a&1-a\end{pmatrix}`, :math:`0<a\le\frac12`.

    The only non-consensus mode is :math:`u_2=(1,-1)/\sqrt2` with :math:`\lambda_2=1-2a`, and
    :math:`\|u_2^\top B\|^2=\frac12\|b_1-b_2\|^2`, so

    .. math:: \Xi_\star^2=\frac{c^2}{4}\|b_1-b_2\|^2,\qquad
              c^{\rm ATC}=\frac{\eta\kappa(1-2a)}{2a+\eta\kappa(1-2a)},\qquad
              c^{\rm par}=\frac{\eta\kappa}{2a+\eta\kappa}

    (curvature :math:`\kappa`). With :math:`a=\frac12` (:math:`W=J`) the ATC value is 0, the parallel
    one is not. In terms of the models, :math:`x_1-x_2=c\,(b_1-b_2)`.
    """
    if not 0 < a <= 0.5:
        raise ValueError(f"a must lie in (0, 1/2], got {a}")
    h = eta * curvature
    lam = 1.0 - 2.0 * a
    c = h * lam / (2.0 * a + h * lam) if _ordering(ordering) == "atc" else h / (2.0 * a + h)
    diff = np.asarray(b1, dtype=np.float64) - np.asarray(b2, dtype=np.float64)
    return float(c * c * (diff @ diff) / 4.0)


# ----------------------------------------------------------------------------- exercise (b)


def atc_parallel_ratio(lam, eta: float, curvature: float = 1.0):
    r"""Ratio :math:`\Xi^2_{\rm ATC}/\Xi^2_{\rm par}` for heterogeneity in a single mode of eigenvalue
    :math:`\lambda`:

    .. math:: R(\lambda,\eta)=\Big(\frac{\lambda\,(1-\lambda+\eta\kappa)}{1-\lambda+\eta\kappa\lambda}\Big)^2 .

    :math:`R\to\lambda^2` as :math:`\eta\to0`, :math:`R=0` at :math:`\lambda=0`, and :math:`R<1` wherever
    the parallel ordering is stable (:math:`|\lambda-\eta\kappa|<1`).
    """
    lam = np.asarray(lam, dtype=np.float64)
    h = eta * curvature
    return (lam * (1.0 - lam + h) / (1.0 - lam + h * lam)) ** 2


def ring_eigenvalues(n: int) -> np.ndarray:
    r"""Eigenvalues :math:`\frac{1+2\cos(2\pi k/n)}3`, :math:`k=0,\dots,n-1`, of the ring with weights 1/3."""
    k = np.arange(n)
    return (1.0 + 2.0 * np.cos(2.0 * np.pi * k / n)) / 3.0


# ----------------------------------------------------------------------------- exercise (c)


def ring_mixing(n: int) -> np.ndarray:
    """The ring's mixing matrix with weight 1/3 on self and on both neighbours (n >= 3)."""
    W = np.eye(n) / 3.0
    for i in range(n):
        W[i, (i + 1) % n] += 1.0 / 3.0
        W[i, (i - 1) % n] += 1.0 / 3.0
    return W


def _modes(W):
    """Non-consensus eigenpairs of a symmetric doubly stochastic W (the consensus vector projected out)."""
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    lam, U = np.linalg.eigh(W)
    k = int(np.argmax(np.abs(U.T @ np.ones(n))))       # the eigenvector 1/sqrt(n) (eigenvalue 1)
    keep = np.arange(n) != k
    return lam[keep], U[:, keep]


def gossip_consensus_sq(W, B, eta: float, s2: float, r: int = 1, curvature: float = 1.0):
    r"""Stationary :math:`\mathbb E\,\Xi^2` of ATC D-SGD with :math:`r` gossip steps (mixing matrix :math:`W^r`),
    identical Hessians :math:`\kappa I`, minimisers :math:`B` and noise :math:`\mathcal N(0,s^2I_d)`.

    Mode :math:`j` of :math:`W^r` has eigenvalue :math:`\mu_j=\lambda_j^r`. The deterministic fixed point and
    the zero-mean fluctuation add up (the cross term vanishes in expectation):

    .. math:: \mathbb E\,\Xi^2=\frac1n\sum_{j\ge2}\Big[c_j^2\|\hat B_j\|^2
              +\frac{d\,\eta^2s^2\mu_j^2}{1-\mu_j^2(1-\eta\kappa)^2}\Big],\qquad
              c_j=\frac{\eta\kappa\mu_j}{1-(1-\eta\kappa)\mu_j}.

    Returns ``(total, deterministic, noise)``.
    """
    B = np.asarray(B, dtype=np.float64)
    n, d = B.shape
    lam, U = _modes(W)
    mu = lam ** int(r)
    h = eta * curvature
    c = h * mu / (1.0 - (1.0 - h) * mu)
    w = ((U.T @ B) ** 2).sum(1)
    det = float((c * c * w).sum() / n)
    noise = float(d * (eta * eta * s2 * mu * mu / (1.0 - mu * mu * (1.0 - h) ** 2)).sum() / n)
    return det + noise, det, noise


def min_gossip_steps(W, B, eta: float, s2: float, L: float, curvature: float = 1.0, r_max: int = 10_000) -> int:
    r"""Smallest :math:`r\ge1` with :math:`\mathbb E\,\Xi^2(W^r)\le\Gamma^2=\eta s^2/(Ln)` (the threshold with the
    per-coordinate noise variance, as in check C7). :math:`\mathbb E\,\Xi^2` decreases with :math:`r`, so the
    first :math:`r` that passes is the answer."""
    n = np.asarray(B).shape[0]
    gamma2 = eta * s2 / (L * n)
    for r in range(1, r_max + 1):
        if gossip_consensus_sq(W, B, eta, s2, r, curvature)[0] <= gamma2:
            return r
    raise ValueError(f"no r <= {r_max} brings the consensus distance below Gamma^2")


# ----------------------------------------------------------------------------- exercise (d)


def complete_graph_noise_consensus_sq(n: int, d: int, eta: float, s2: float = 1.0, curvature: float = 1.0,
                                      ordering: str = "atc") -> float:
    r"""Noise-driven :math:`\mathbb E\,\Xi^2` on the complete graph :math:`W=J` (all :math:`\lambda_j=0`, :math:`j\ge2`),
    identical :math:`f_i=\frac\kappa2\|x\|^2`:

    * ATC: :math:`0` exactly (the noisy steps are averaged before anyone uses them);
    * parallel: :math:`\frac{(n-1)d}{n}\,\frac{\eta^2s^2}{1-\eta^2\kappa^2}` (each worker adds its own noise
      after the averaging, and the mode factor is :math:`-\eta\kappa`).
    """
    if _ordering(ordering) == "atc":
        return 0.0
    h = eta * curvature
    if abs(h) >= 1:
        raise ValueError("the parallel ordering on W = J needs |eta * curvature| < 1")
    return float((n - 1) * d / n * eta * eta * s2 / (1.0 - h * h))
