r"""Gradient diversity and batch size (THEORY E1): Yin et al.'s bound, exact minibatch moments, DiveBatch.

Per-sample gradients ``G [N, d]`` at a fixed point, :math:`S=\sum_ig_i`, Yin's diversity
:math:`\Delta=\sum_i\|g_i\|^2/\|S\|^2` (:func:`hetlab.measures.gradient_diversity`) and batch-size bound
:math:`B_S=N\Delta`. For a batch :math:`\mathcal B` of size ``B`` drawn **without replacement**:

(a) :math:`\mathbb E\|\sum_{\mathcal B}g_i\|^2=\frac BN\sum\|g_i\|^2+\frac{B(B-1)}{N(N-1)}(\|S\|^2-\sum\|g_i\|^2)`;
(b) :math:`\mathbb E\|\frac1B\sum_{\mathcal B}g_i-\frac SN\|^2=\frac{N-B}{B(N-1)}\frac1N\sum\|g_i-\frac SN\|^2`;
(c) if :math:`B-1\le\delta N\Delta` then (a) :math:`\le(1+\frac{\delta N}{N-1})\frac BN\sum\|g_i\|^2`.

With replacement the factors become :math:`\frac{B-1}{N}`-type (``replace=True``). The ``enumerate_*``
functions compute the same expectations by brute force over all subsets (small ``N`` only).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .measures import gradient_diversity


def _np(G):
    try:
        import torch
        if isinstance(G, torch.Tensor):
            return G.detach().cpu().numpy().astype(np.float64)
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(G, dtype=np.float64)


def diversity(G) -> float:
    r"""Yin's :math:`\Delta=\sum\|g_i\|^2/\|\sum g_i\|^2` (``inf`` when the sum vanishes; never its inverse)."""
    import torch
    return gradient_diversity(torch.as_tensor(_np(G)))


def batch_size_bound(G) -> float:
    r"""Yin's :math:`B_S=N\Delta`."""
    return _np(G).shape[0] * diversity(G)


def _check_B(N, B, replace=False):
    if B < 1 or (not replace and B > N):
        raise ValueError(f"batch size must lie in [1, N={N}], got {B}")


def minibatch_sum_second_moment(G, B: int, replace: bool = False) -> float:
    r"""Closed form of :math:`\mathbb E\|\sum_{i\in\mathcal B}g_i\|^2` (prediction (a)); with replacement
    :math:`\frac BN\sum\|g_i\|^2+\frac{B(B-1)}{N^2}\|S\|^2`."""
    G = _np(G)
    N = G.shape[0]
    _check_B(N, B, replace)
    sq, S2 = float((G * G).sum()), float(G.sum(0) @ G.sum(0))
    if replace:
        return B / N * sq + B * (B - 1) / N ** 2 * S2
    pair = B * (B - 1) / (N * (N - 1)) if N > 1 else 0.0
    return B / N * sq + pair * (S2 - sq)


def minibatch_mean_variance(G, B: int, replace: bool = False) -> float:
    r"""Closed form of :math:`\mathbb E\|\frac1B\sum_{\mathcal B}g_i-\frac SN\|^2` (prediction (b));
    with replacement :math:`\frac1B\cdot\frac1N\sum\|g_i-\frac SN\|^2`."""
    G = _np(G)
    N = G.shape[0]
    _check_B(N, B, replace)
    V = float(((G - G.mean(0)) ** 2).sum()) / N
    if replace:
        return V / B
    return (N - B) / (B * (N - 1)) * V if N > 1 else 0.0


def _all_batches(N, B, limit=200_000):
    if math.comb(N, B) > limit:
        raise ValueError(f"C({N}, {B}) subsets is too many to enumerate")
    return np.array(list(itertools.combinations(range(N), B)), dtype=np.int64)


def enumerate_sum_second_moment(G, B: int) -> float:
    """Brute force of (a): average of ``||sum_{i in batch} g_i||^2`` over all ``C(N, B)`` subsets."""
    G = _np(G)
    sums = G[_all_batches(G.shape[0], B)].sum(1)
    return float((sums * sums).sum(1).mean())


def enumerate_mean_variance(G, B: int) -> float:
    """Brute force of (b): average of ``||mean_batch - S/N||^2`` over all subsets."""
    G = _np(G)
    dev = G[_all_batches(G.shape[0], B)].mean(1) - G.mean(0)
    return float((dev * dev).sum(1).mean())


def yin_bound(G, B: int, delta: float) -> tuple[bool, float, float]:
    r"""(c): returns ``(condition B - 1 <= delta N Delta, E||sum_B g||^2, (1 + delta N/(N-1)) B/N sum||g||^2)``."""
    G = _np(G)
    N = G.shape[0]
    cond = B - 1 <= delta * N * diversity(G)
    rhs = (1 + delta * N / (N - 1)) * B / N * float((G * G).sum())
    return bool(cond), minibatch_sum_second_moment(G, B), rhs


class DiveBatch:
    r"""Diversity-driven batch size: :math:`B_{k+1}=\min(\max(\lfloor\delta N\hat\Delta_k\rfloor,B_k),B_{\max})`
    (never decreasing), learning rate :math:`\min(\text{lr}_0B_k/B_0,\text{lr}_{\max})`."""

    def __init__(self, B0: int = 16, B_max: int = 512, delta: float = 0.1, lr0: float = 0.01,
                 lr_max: float = 0.5):
        if not 1 <= B0 <= B_max:
            raise ValueError(f"need 1 <= B0 <= B_max, got B0={B0}, B_max={B_max}")
        if delta <= 0 or lr0 <= 0 or lr_max <= 0:
            raise ValueError("delta, lr0 and lr_max must be positive")
        self.B0, self.B_max, self.delta, self.lr0, self.lr_max = int(B0), int(B_max), float(delta), float(lr0), float(lr_max)

    def next_batch_size(self, B: int, N: int, div_hat: float) -> int:
        cand = math.floor(self.delta * N * div_hat) if math.isfinite(div_hat) else self.B_max
        return int(min(max(cand, B), self.B_max))

    def lr(self, B: int) -> float:
        return min(self.lr0 * B / self.B0, self.lr_max)

    def run_least_squares(self, Z, y, epochs: int, seed: int = 0, w0=None) -> dict:
        r"""Minibatch SGD on :math:`\frac1N\sum_i\frac12(z_i^\top w-y_i)^2` with shuffling; :math:`\hat\Delta_k` from all
        per-sample gradients computed during epoch ``k``. Returns per-epoch ``B``, ``lr``, ``div``, ``grad_norm``
        (full gradient norm at the end of the epoch; ``grad_norm0`` at the start)."""
        Z, y = _np(Z), _np(y)
        N, d = Z.shape
        rng = np.random.default_rng(seed)
        w = np.zeros(d) if w0 is None else np.array(w0, dtype=np.float64)
        full = lambda w: Z.T @ (Z @ w - y) / N  # noqa: E731
        out = {"B": [], "lr": [], "div": [], "grad_norm": [], "grad_norm0": float(np.linalg.norm(full(w)))}
        B = self.B0
        for _ in range(epochs):
            lr = self.lr(B)
            perm = rng.permutation(N)
            sq, S = 0.0, np.zeros(d)
            for s in range(0, N, B):
                idx = perm[s:s + B]
                Gs = (Z[idx] @ w - y[idx])[:, None] * Z[idx]
                sq += float((Gs * Gs).sum())
                S += Gs.sum(0)
                w = w - lr * Gs.mean(0)
            div = sq / float(S @ S) if S @ S > 0 else math.inf
            out["B"].append(B)
            out["lr"].append(lr)
            out["div"].append(div)
            out["grad_norm"].append(float(np.linalg.norm(full(w))))
            B = self.next_batch_size(B, N, div)
        out["w"] = w
        return {k: (np.array(v) if isinstance(v, list) else v) for k, v in out.items()}
