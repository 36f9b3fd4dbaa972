r"""Heterogeneity, diversity, alignment and consensus measures (THEORY.md §1), exactly.

Conventions: ``G`` is a stacked ``[n, d]`` tensor of gradients (client, worker or per-sample),
``q`` optional weights summing to one (uniform when ``None``); the weighted mean is
:math:`\bar g=\sum_iq_ig_i`. Every ratio that divides by a vanishing quantity returns ``inf``
(or ``nan`` where ``inf`` would be meaningless, as said per function) instead of raising.
Names are distinct on purpose: Yin's gradient diversity :math:`\Delta` and FedProx's
:math:`B^2` differ by a factor :math:`n`, and FedAWARE's "diversity" is :math:`B`.

Core identity: :math:`\sum_iq_i\|g_i\|^2=\|\bar g\|^2+V`, with :math:`V=\sum_iq_i\|g_i-\bar g\|^2`.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "weighted_mean", "mean_sq_norm", "gradient_variance", "zeta_star_sq", "heterogeneity_at",
    "b_dissimilarity", "b_dissimilarity_sq", "gradient_diversity", "weighted_gradient_diversity",
    "gradient_coherence", "pairwise_cosine", "mean_pairwise_inner_product", "gradalign_variance",
    "fedaware_diversity", "gb_dissimilarity_holds", "consensus_distance_sq", "consensus_distance",
    "consensus_covariance",
]


def _weights(G: torch.Tensor, q) -> torch.Tensor:
    if G.dim() != 2:
        raise ValueError(f"expected stacked vectors of shape [n, d], got {list(G.shape)}")
    if q is None:
        return torch.full((G.shape[0],), 1.0 / G.shape[0], dtype=G.dtype, device=G.device)
    q = torch.as_tensor(q, dtype=G.dtype, device=G.device)
    if q.shape != (G.shape[0],):
        raise ValueError(f"weights must have shape [{G.shape[0]}], got {list(q.shape)}")
    return q / q.sum()


def _ratio(num: float, den: float) -> float:
    if den <= 0.0:
        return math.inf if num > 0 else math.nan
    return num / den


def weighted_mean(G, q=None) -> torch.Tensor:
    r""":math:`\bar g=\sum_iq_ig_i`."""
    return _weights(G, q) @ G


def mean_sq_norm(G, q=None) -> float:
    r""":math:`\sum_iq_i\|g_i\|^2`."""
    return float(_weights(G, q) @ (G * G).sum(1))


def gradient_variance(G, q=None) -> float:
    r"""Between-worker variance :math:`V=\sum_iq_i\|g_i-\bar g\|^2` (THEORY's :math:`V(x)`, :math:`V_b`)."""
    q = _weights(G, q)
    D = G - q @ G
    return float(q @ (D * D).sum(1))


def zeta_star_sq(problem) -> float:
    r""":math:`\zeta_\star^2=\sum_iq_i\|\nabla f_i(x^\star)\|^2` of a problem (its exact ``x_star``)."""
    return gradient_variance(problem.local_grads(problem.x_star), problem.weights)


def heterogeneity_at(problem, x) -> dict:
    """Every gradient measure at the point ``x`` of ``problem``, as a dict of floats."""
    G = problem.local_grads(x)
    q = problem.weights
    return {
        "grad_norm_sq": float((q @ G).pow(2).sum()),
        "gradient_variance": gradient_variance(G, q),
        "b_dissimilarity": b_dissimilarity(G, q),
        "weighted_gradient_diversity": weighted_gradient_diversity(G, q),
        "gradient_coherence": gradient_coherence(G, q),
        "gradient_diversity": gradient_diversity(G),
    }


def b_dissimilarity_sq(G, q=None) -> float:
    r"""FedProx's :math:`B(x)^2=\sum_iq_i\|g_i\|^2/\|\bar g\|^2` (``inf`` when :math:`\bar g=0`)."""
    gbar = weighted_mean(G, q)
    return _ratio(mean_sq_norm(G, q), float(gbar @ gbar))


def b_dissimilarity(G, q=None) -> float:
    """FedProx's local dissimilarity :math:`B(x)` (the square root of :func:`b_dissimilarity_sq`)."""
    return math.sqrt(b_dissimilarity_sq(G, q))


def gradient_diversity(G) -> float:
    r"""Yin et al.'s :math:`\Delta=\sum_i\|g_i\|^2/\|\sum_ig_i\|^2` (unweighted; ``inf`` when the sum vanishes).
    :math:`\Delta\ge1/n`, with equality iff all :math:`g_i` are equal; :math:`\Delta=B^2/n`."""
    s = G.sum(0)
    return _ratio(float((G * G).sum()), float(s @ s))


def weighted_gradient_diversity(G, q=None) -> float:
    r"""Haddadpour–Mahdavi's :math:`\Lambda=\sum_jq_j\|g_j\|^2/\|\sum_jq_jg_j\|^2` (equals :math:`B^2`)."""
    return b_dissimilarity_sq(G, q)


def gradient_coherence(G, q=None) -> float:
    r"""Chatterjee's coherence :math:`\alpha=\|\bar g\|^2/\sum_iq_i\|g_i\|^2\in[0,1]` (``nan`` if all :math:`g_i=0`)."""
    gbar = weighted_mean(G, q)
    return _ratio(float(gbar @ gbar), mean_sq_norm(G, q)) if mean_sq_norm(G, q) > 0 else math.nan


def pairwise_cosine(G) -> torch.Tensor:
    r"""Matrix of :math:`\cos_{ij}=\langle g_i,g_j\rangle/(\|g_i\|\|g_j\|)`; rows of zero norm give ``nan``."""
    norms = G.norm(dim=1)
    return (G @ G.T) / (norms[:, None] * norms[None, :])


def mean_pairwise_inner_product(G) -> float:
    r""":math:`\frac1{n(n-1)}\sum_{i\ne j}\langle g_i,g_j\rangle`; positive iff :math:`\Delta<1`."""
    n = G.shape[0]
    if n < 2:
        raise ValueError("the mean pairwise inner product needs at least two vectors")
    s = G.sum(0)
    return (float(s @ s) - float((G * G).sum())) / (n * (n - 1))


def gradalign_variance(G, q=None, normalized: bool = False) -> float:
    r"""GradAlign's logging metric: :math:`\sum_iq_i\|\bar g-g_i\|` (norms, *not* squared), divided
    by :math:`\|\bar g\|` when ``normalized`` (``inf`` if :math:`\bar g=0`)."""
    qq = _weights(G, q)
    gbar = qq @ G
    v = float(qq @ (G - gbar).norm(dim=1))
    return _ratio(v, float(gbar.norm())) if normalized else v


def fedaware_diversity(G, q=None) -> float:
    r"""FedAWARE's logged "diversity" :math:`\sqrt{\sum_iq_i\|g_i\|^2}/\|\bar g\|` (this is :math:`B`, not Yin's :math:`\Delta`)."""
    return b_dissimilarity(G, q)


def gb_dissimilarity_holds(G, G2: float, B2: float, q=None) -> bool:
    r"""Whether :math:`\sum_iq_i\|g_i\|^2\le G^2+B^2\|\bar g\|^2` holds at this point (SCAFFOLD's assumption)."""
    gbar = weighted_mean(G, q)
    return mean_sq_norm(G, q) <= G2 + B2 * float(gbar @ gbar) + 1e-12


def consensus_distance_sq(X, q=None) -> float:
    r"""Kong et al.'s :math:`\Xi^2=\frac1n\sum_i\|x_i-\bar x\|^2` (weighted by ``q`` if given)."""
    return gradient_variance(X, q)


def consensus_distance(X, q=None) -> float:
    r""":math:`\Xi` (not squared)."""
    return math.sqrt(consensus_distance_sq(X, q))


def consensus_covariance(X, q=None) -> torch.Tensor:
    r""":math:`\Xi_{\rm cov}=\sum_iq_i(x_i-\bar x)(x_i-\bar x)^\top`, with trace :math:`\Xi^2`."""
    qq = _weights(X, q)
    D = X - qq @ X
    return torch.einsum("i,ij,ik->jk", qq, D, D)
