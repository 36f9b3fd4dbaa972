r"""Communication compressors, applied row-wise to stacked ``[n, d]`` tensors (one row per worker).

Every compressor is a small object with ``__call__(X, generator) -> C(X)`` (same shape as ``X``),
vectorised over the rows, with **independent randomness per row** (THEORY F1 pitfall 2: shared
randomness changes the :math:`1/n` factor), drawn only from the ``torch.Generator`` passed in, and
``bits(X) -> [rows]`` tensor: the number of bits each worker sends for its message this round.

Two families, kept as two distinct classes (THEORY C8 pitfall 2):

* :class:`UnbiasedCompressor` with constant ``omega``: :math:`\mathbb E\,C(v)=v` and
  :math:`\mathbb E\|C(v)-v\|^2\le\omega\|v\|^2` (rand-k scaled by d/k, QSGD);
* :class:`ContractiveCompressor` with constant ``delta`` in (0, 1]:
  :math:`\mathbb E\|C(v)-v\|^2\le(1-\delta)\|v\|^2` (top-k, unscaled rand-k, scaled sign).

Plain :class:`Sign` is neither (its error can exceed :math:`\|v\|^2`); it derives only from
:class:`Compressor`.

Adding a compressor: subclass :class:`UnbiasedCompressor` (set ``self.omega``) or
:class:`ContractiveCompressor` (set ``self.delta``) and implement ``_compress(X, generator)`` and
``_bits_per_row(d)``; :meth:`Compressor.__call__` validates the input (float tensor, last dimension
``d``) before calling ``_compress``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["Compressor", "UnbiasedCompressor", "ContractiveCompressor", "Identity", "RandK",
           "QSGD", "TopK", "RandKUnscaled", "ScaledSign", "Sign", "FLOAT_BITS"]

FLOAT_BITS = 64  # float64 payload


def _check_int(name, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must lie in {rng}, got {v}")


def _index_bits(d: int) -> int:
    return max(1, math.ceil(math.log2(d))) if d > 1 else 1


class Compressor:
    """Base class: ``__call__(X, generator)`` compresses each row of ``X [n, d]`` (or a single ``[d]``)."""

    name = "compressor"

    def __init__(self, d: int):
        _check_int("d", d, 1)
        self.d = int(d)

    def _check(self, X: torch.Tensor) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(X).__name__}")
        if not X.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point tensor, got {X.dtype}")
        if X.dim() not in (1, 2) or X.shape[-1] != self.d:
            raise ValueError(f"{type(self).__name__} was built for d={self.d}: expected [n, {self.d}] or "
                             f"[{self.d}], got {list(X.shape)}")
        return X

    def __call__(self, X: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        X = self._check(X)
        if X.dim() == 1:
            return self._compress(X[None], generator)[0]
        return self._compress(X, generator)

    def _compress(self, X, generator):
        raise NotImplementedError

    def _bits_per_row(self, d: int) -> int:
        raise NotImplementedError

    def bits(self, X: torch.Tensor) -> torch.Tensor:
        """Bits sent per row (``[rows]``, int64) for the messages ``C(X)`` of one round."""
        X = self._check(X)
        rows = 1 if X.dim() == 1 else X.shape[0]
        return torch.full((rows,), int(self._bits_per_row(self.d)), dtype=torch.int64)

    def __repr__(self):
        keys = {k: v for k, v in vars(self).items() if isinstance(v, (int, float))}
        return f"{type(self).__name__}({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in keys.items())})"


class UnbiasedCompressor(Compressor):
    r"""Unbiased: :math:`\mathbb E\,C(v)=v`, :math:`\mathbb E\|C(v)-v\|^2\le\omega\|v\|^2` (attribute ``omega``)."""

    omega: float


class ContractiveCompressor(Compressor):
    r"""Biased contractive: :math:`\mathbb E\|C(v)-v\|^2\le(1-\delta)\|v\|^2`, ``delta`` in (0, 1]."""

    delta: float


class Identity(UnbiasedCompressor, ContractiveCompressor):
    """No compression (omega = 0, delta = 1): both unbiased and contractive; for reductions."""

    name = "identity"

    def __init__(self, d: int):
        super().__init__(d)
        self.omega, self.delta = 0.0, 1.0

    def _compress(self, X, generator):
        return X.clone()

    def _bits_per_row(self, d):
        return FLOAT_BITS * d


def _randk_mask(X: torch.Tensor, k: int, generator) -> torch.Tensor:
    """A uniform random k-subset per row (independent rows): top-k of i.i.d. uniform keys."""
    keys = torch.rand(X.shape, generator=generator, dtype=X.dtype, device=X.device)
    idx = keys.topk(k, dim=1, sorted=False).indices
    return torch.zeros_like(X).scatter_(1, idx, 1.0)


class _KSparse:
    """Shared part of the k-coordinate compressors: ``k`` in ``[1, d]``; k values plus their indices sent."""

    def __init__(self, k: int, d: int):
        super().__init__(d)
        _check_int("k", k, 1, self.d)
        self.k = int(k)

    def _bits_per_row(self, d):
        return self.k * (FLOAT_BITS + _index_bits(d))


class RandK(_KSparse, UnbiasedCompressor):
    r"""Unbiased rand-k: :math:`\frac dk\,v\odot\mathbb 1_S`, :math:`|S|=k` uniform; :math:`\omega=d/k-1`."""

    name = "rand_k"

    def __init__(self, k: int, d: int):
        super().__init__(k, d)
        self.omega = self.d / self.k - 1.0

    def _compress(self, X, generator):
        return X * _randk_mask(X, self.k, generator) * (self.d / self.k)


class QSGD(UnbiasedCompressor):
    r"""QSGD with ``s`` levels (Alistarh et al. 2017): :math:`\|v\|\,\mathrm{sign}(v_j)\,\xi_j/s` with
    :math:`\xi_j` the stochastic rounding of :math:`s|v_j|/\|v\|`; :math:`\omega=\min(d/s^2,\sqrt d/s)`."""

    name = "qsgd"

    def __init__(self, s: int, d: int):
        super().__init__(d)
        _check_int("s", s, 1)
        self.s = int(s)
        self.omega = min(self.d / self.s ** 2, math.sqrt(self.d) / self.s)

    def _compress(self, X, generator):
        norm = X.norm(dim=1, keepdim=True)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        r = self.s * X.abs() / safe
        low = torch.floor(r)
        u = torch.rand(X.shape, generator=generator, dtype=X.dtype, device=X.device)
        xi = low + (u < (r - low)).to(X.dtype)
        return torch.where(norm > 0, norm * torch.sign(X) * xi / self.s, torch.zeros_like(X))

    def _bits_per_row(self, d):
        # the norm (one float), and per coordinate a sign bit plus the level in {0..s}
        return FLOAT_BITS + d * (1 + max(1, math.ceil(math.log2(self.s + 1))))


class TopK(_KSparse, ContractiveCompressor):
    r"""Top-k (largest magnitudes, ties broken by ``torch.topk``), deterministic; :math:`\delta=k/d`."""

    name = "top_k"

    def __init__(self, k: int, d: int):
        super().__init__(k, d)
        self.delta = self.k / self.d

    def _compress(self, X, generator):
        idx = X.abs().topk(self.k, dim=1, sorted=False).indices
        return torch.zeros_like(X).scatter_(1, idx, X.gather(1, idx))


class RandKUnscaled(_KSparse, ContractiveCompressor):
    r"""Unscaled rand-k :math:`v\odot\mathbb 1_S` (biased): :math:`\mathbb E\|C(v)-v\|^2=(1-k/d)\|v\|^2`, :math:`\delta=k/d`."""

    name = "rand_k_unscaled"

    def __init__(self, k: int, d: int):
        super().__init__(k, d)
        self.delta = self.k / self.d

    def _compress(self, X, generator):
        return X * _randk_mask(X, self.k, generator)


class ScaledSign(ContractiveCompressor):
    r"""Scaled sign :math:`\frac{\|v\|_1}{d}\mathrm{sign}(v)`: error :math:`(1-\delta(v))\|v\|^2` with
    :math:`\delta(v)=\|v\|_1^2/(d\|v\|^2)\ge1/d`; ``delta = 1/d`` is the worst case
    (:meth:`delta_of` gives the per-row value)."""

    name = "scaled_sign"

    def __init__(self, d: int):
        super().__init__(d)
        self.delta = 1.0 / self.d

    def delta_of(self, X: torch.Tensor) -> torch.Tensor:
        X = self._check(X)
        return X.abs().sum(-1) ** 2 / (self.d * (X * X).sum(-1))

    def _compress(self, X, generator):
        return X.abs().sum(1, keepdim=True) / self.d * torch.sign(X)

    def _bits_per_row(self, d):
        return FLOAT_BITS + d


class Sign(Compressor):
    r"""Plain sign :math:`\mathrm{sign}(v)` (``torch.sign``: 0 maps to 0). Neither unbiased nor contractive."""

    name = "sign"

    def _compress(self, X, generator):
        return torch.sign(X)

    def _bits_per_row(self, d):
        return d
