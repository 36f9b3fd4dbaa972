r"""A non-convex family satisfying the Polyak–Łojasiewicz (PL) inequality.

.. math:: f_i(x)=a_i\sum_{k=1}^d g(x_k-s_{ik}),\qquad g(t)=t^2+3\sin^2t ,

a classic PL but non-convex function (Karimi, Nutini & Schmidt 2016): :math:`g''(t)=2+6\cos 2t`
takes negative values, yet :math:`\frac12 g'(t)^2\ge\mu_g\,g(t)` for all :math:`t`. Without shifts
(``s = 0``) every :math:`f_i` is minimised at :math:`0`: heterogeneity only scales the curvature
and local methods have no fixed-point bias (THEORY A5b). Shifts :math:`s_{ik}` make the minimisers
differ. Constants: :math:`L=8\max_ia_i` (since :math:`\sup g''=8`); ``mu`` is the PL constant of
:math:`f`, computed by a dense grid plus bounded refinement (to 1e-12 relative); ``x_star`` by a
grid search plus Newton's method per coordinate (the problem is separable).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from .._validation import as_tensor, check_shape, normalize_weights
from .base import Problem


def _g(t):
    return t * t + 3 * np.sin(t) ** 2


def _dg(t):
    return 2 * t + 3 * np.sin(2 * t)


def _ddg(t):
    return 2 + 6 * np.cos(2 * t)


class PLProblem(Problem):
    """``f_i(x) = a_i * sum_k g(x_k - s_ik)`` with ``g(t) = t^2 + 3 sin^2 t`` (PL, non-convex)."""

    name = "pl_sin"

    def __init__(self, a, shifts=None, d: int = 1, weights=None, *, dtype=torch.float64):
        a = as_tensor(a, dtype=dtype, name="a")
        if a.dim() != 1 or (a <= 0).any():
            raise ValueError("a must be a 1-D array of positive scales a_i")
        self.n, self.d, self.dtype = a.shape[0], int(d), dtype
        self.a = a
        if shifts is None:
            shifts = torch.zeros(self.n, self.d, dtype=dtype)
        self.s = as_tensor(shifts, dtype=dtype, name="shifts")
        check_shape(self.s, (self.n, self.d), "shifts")
        self.weights = normalize_weights(weights, self.n, dtype=dtype)

    def loss(self, X, idx=None):
        self._check_stacked(X, idx)
        T = X - self._rows(self.s, idx)
        return self._rows(self.a, idx) * (T * T + 3 * torch.sin(T) ** 2).sum(1)

    def grad(self, X, idx=None):
        self._check_stacked(X, idx)
        T = X - self._rows(self.s, idx)
        return self._rows(self.a, idx)[:, None] * (2 * T + 3 * torch.sin(2 * T))

    # per coordinate, the global objective is h_k(t) = sum_i q_i a_i g(t - s_ik)
    def _coord(self, k):
        w = (self.weights * self.a).numpy()
        s = self.s[:, k].numpy()
        h = lambda t: float(np.sum(w * _g(t - s)))  # noqa: E731
        dh = lambda t: float(np.sum(w * _dg(t - s)))  # noqa: E731
        ddh = lambda t: float(np.sum(w * _ddg(t - s)))  # noqa: E731
        return h, dh, ddh, s

    @cached_property
    def x_star(self) -> torch.Tensor:
        out = np.empty(self.d)
        for k in range(self.d):  # separable: one 1-D global minimisation per coordinate
            h, dh, ddh, s = self._coord(k)
            grid = np.linspace(s.min() - 4, s.max() + 4, 20001)
            w = (self.weights * self.a).numpy()
            vals = (w[:, None] * _g(grid[None, :] - s[:, None])).sum(0)
            t = grid[int(np.argmin(vals))]
            for _ in range(50):
                step = dh(t) / ddh(t)
                t -= step
                if abs(step) < 1e-15:
                    break
            out[k] = t
        return torch.as_tensor(out, dtype=self.dtype)

    @cached_property
    def L(self) -> float:
        return 8.0 * float(self.a.max())

    @cached_property
    def mu(self) -> float:
        r"""PL constant of :math:`f`: :math:`\inf_x \|\nabla f(x)\|^2/(2(f(x)-f^\star))` (min over coordinates)."""
        xs = self.x_star.numpy()
        mus = []
        for k in range(self.d):
            h, dh, _, s = self._coord(k)
            hs = h(xs[k])
            ratio = lambda t: dh(t) ** 2 / (2 * (h(t) - hs))  # noqa: E731
            span = max(60.0, 10 * float(np.abs(s).max()))
            grid = xs[k] + np.concatenate([-np.geomspace(1e-3, span, 6000)[::-1], np.geomspace(1e-3, span, 6000)])
            w = (self.weights * self.a).numpy()[:, None]
            T = grid[None, :] - s[:, None]
            vals = (w * _dg(T)).sum(0) ** 2 / (2 * ((w * _g(T)).sum(0) - hs))  # the ratio on the whole grid at once
            j = int(np.argmin(vals))
            lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
            res = minimize_scalar(ratio, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13})
            mus.append(min(float(res.fun), float(vals[j])))
        return min(mus)


def pl_family(n: int, *, a_range=(0.5, 2.0), shift_scale: float = 0.0, d: int = 1, seed: int = 0) -> PLProblem:
    """Seeded PL family: ``a_i ~ U[a_range]`` and shifts ``s_ik = shift_scale * N(0, 1)`` (THEORY A5b uses no shift).

    Without shifts the global objective is PL. With shifts the sum of shifted copies of ``g`` need
    not be PL: it can have a spurious stationary point, and then ``mu`` (computed, not assumed)
    comes out as 0 (e.g. ``shift_scale=1, d=2, seed=3``). Check ``problem.mu > 0`` before using a
    PL rate on a shifted instance.
    """
    rng = np.random.default_rng(seed)
    a = rng.uniform(*a_range, size=n)
    s = shift_scale * rng.standard_normal((n, d))
    return PLProblem(a, s, d=d)
