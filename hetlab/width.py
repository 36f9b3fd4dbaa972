r"""Gradient diversity against width and depth at initialisation (THEORY E4, a diagnostic, not a check).

Chen, Wang, Zhao, Papailiopoulos & Koutris (NeurIPS 2018) argue that, at a fixed parameter count, wider
networks have larger gradient diversity and so tolerate larger batches (:mod:`hetlab.batch`: the batch
bound is :math:`N\Delta`). THEORY.md could not reproduce a clean monotone trend in width for two-layer
networks, so hetlab reports the quantity with its uncertainty and asserts nothing about its direction.

The estimator is the **ratio of expectations** over random initialisations :math:`\theta` (and a fixed
dataset with random labels),

.. math:: \bar\Delta=\frac{\mathbb E_\theta\sum_{i=1}^N\|\nabla\ell_i(\theta)\|^2}{\mathbb E_\theta\|\sum_{i=1}^N\nabla\ell_i(\theta)\|^2},

not the mean of the per-initialisation ratios (the two differ a lot at small width; THEORY E4 pitfall),
with a percentile bootstrap interval over initialisations. Per-sample gradients come from
``torch.func.vmap(torch.func.grad(...))`` in one call per initialisation.

Networks: :math:`x\mapsto W_\ell\sigma(W_{\ell-1}\cdots\sigma(W_1x))` without biases, LeCun initialisation
(:math:`\mathcal N(0,1/\text{fan-in})`), :math:`\sigma` the identity (deep linear) or ReLU, squared loss
:math:`\ell_i=\frac12\|f(x_i)-y_i\|^2`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["param_count", "width_for_params", "DiversityEstimate", "diversity_at_init"]


def param_count(d_in: int, width: int, depth: int, d_out: int) -> int:
    """Weights of a bias-free network with ``depth`` weight matrices (``depth - 1`` hidden layers of ``width``)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1 (number of weight matrices), got {depth}")
    if depth == 1:
        return d_in * d_out
    return d_in * width + (depth - 2) * width * width + width * d_out


def width_for_params(params: int, depth: int, d_in: int, d_out: int) -> int:
    """The width whose network of ``depth`` layers has the parameter count closest to ``params``."""
    if depth < 2:
        raise ValueError(f"a width needs at least one hidden layer (depth >= 2), got {depth}")
    a, b = depth - 2, d_in + d_out
    h = params / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    cands = [max(1, math.floor(h)), max(1, math.ceil(h))]
    return min(cands, key=lambda w: abs(param_count(d_in, w, depth, d_out) - params))


@dataclass
class DiversityEstimate:
    """Ratio-of-expectations diversity, its bootstrap interval, and the per-initialisation sums."""

    depth: int
    width: int
    params: int
    ratio: float
    ci: tuple[float, float]
    mean_of_ratios: float
    sum_sq: np.ndarray      # per initialisation: sum_i ||g_i||^2
    sq_sum: np.ndarray      # per initialisation: ||sum_i g_i||^2


def _forward(ws, x, act):
    h = x
    for W in ws[:-1]:
        h = act(W @ h)
    return ws[-1] @ h


def diversity_at_init(X, Y, width: int, depth: int, *, activation: str = "linear", inits: int = 200,
                      seed: int = 0, bootstrap: int = 2000, level: float = 0.95) -> DiversityEstimate:
    """Gradient diversity at ``inits`` LeCun initialisations of a ``depth``-layer, ``width``-wide network
    on the data ``X [N, d_in]``, ``Y [N, d_out]`` (float64, seeded)."""
    from torch.func import grad, vmap

    if activation not in ("linear", "relu"):
        raise ValueError(f"activation must be 'linear' or 'relu', got {activation!r}")
    X = torch.as_tensor(X, dtype=torch.float64)
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X must be [N, d_in] and Y [N, d_out] with the same N, got {list(X.shape)}, {list(Y.shape)}")
    if inits < 2:
        raise ValueError(f"need at least 2 initialisations, got {inits}")
    act = (lambda h: h) if activation == "linear" else torch.relu
    d_in, d_out = X.shape[1], Y.shape[1]
    dims = [d_in] + [width] * (depth - 1) + [d_out]

    def loss(ws, x, y):
        return 0.5 * ((_forward(ws, x, act) - y) ** 2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    gen = torch.Generator().manual_seed(seed)
    sum_sq, sq_sum = np.empty(inits), np.empty(inits)
    for r in range(inits):
        ws = [torch.randn(dims[k + 1], dims[k], generator=gen, dtype=torch.float64) / math.sqrt(dims[k])
              for k in range(depth)]
        G = torch.cat([g.reshape(X.shape[0], -1) for g in per_sample(ws, X, Y)], dim=1)
        sum_sq[r] = float((G * G).sum())
        S = G.sum(0)
        sq_sum[r] = float(S @ S)
    rng = np.random.default_rng(seed + 1)
    idx = rng.integers(0, inits, size=(bootstrap, inits))
    boot = sum_sq[idx].mean(1) / sq_sum[idx].mean(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return DiversityEstimate(depth, width, param_count(d_in, width, depth, d_out), float(sum_sq.mean() / sq_sum.mean()),
                             (float(lo), float(hi)), float(np.mean(sum_sq / sq_sum)), sum_sq, sq_sum)
