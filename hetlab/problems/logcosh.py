r"""Log-cosh (robust) regression: a smooth, convex, *non-quadratic* stacked problem.

.. math:: f_i(x)=\frac1m\sum_{r=1}^m\log\cosh(z_{ir}^\top x-y_{ir}),\qquad
          \nabla f_i=\frac1m\sum_r\tanh(t_{ir})z_{ir},\qquad
          \nabla^2f_i=\frac1m\sum_r\operatorname{sech}^2(t_{ir})z_{ir}z_{ir}^\top ,

with residuals :math:`t_{ir}=z_{ir}^\top x-y_{ir}`. Gradients and Hessians are exact (closed form).
Used by THEORY B4(a) to check that GradAlign equals gradient descent on :math:`f+\frac\beta2V_b`
up to :math:`O(\beta^2)` when the Hessians are not constant. Constants:
:math:`L=\max_i\lambda_{\max}(Z_i^\top Z_i/m)` (since :math:`\operatorname{sech}^2\le1`); the loss is
not strongly convex globally (``mu = 0``), ``mu_local`` is the curvature at ``x_star``, which is
computed by Newton's method to a gradient norm below 1e-12.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch

from .._validation import as_tensor, check_shape
from .base import Problem


def _logcosh(t: torch.Tensor) -> torch.Tensor:
    """Overflow-free :math:`\\log\\cosh t=|t|+\\log(1+e^{-2|t|})-\\log2`."""
    a = t.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class LogCoshRegression(Problem):
    """``n`` clients with ``m`` samples each: ``Z [n, m, d]``, targets ``y [n, m]`` (uniform weights)."""

    name = "logcosh"

    def __init__(self, Z, y, *, dtype=torch.float64):
        Z = as_tensor(Z, dtype=dtype, name="Z")
        if Z.dim() != 3:
            raise ValueError(f"Z must have shape [n, m, d] (samples of each client), got {list(Z.shape)}")
        y = as_tensor(y, dtype=dtype, name="y")
        check_shape(y, tuple(Z.shape[:2]), "y")
        self.n, self.m, self.d = Z.shape
        self.dtype = dtype
        self.Z, self.y = Z, y
        self.weights = torch.full((self.n,), 1.0 / self.n, dtype=dtype)

    def _resid(self, X, idx):
        self._check_stacked(X, idx)
        Z = self._rows(self.Z, idx)
        return Z, torch.einsum("nmd,nd->nm", Z, X) - self._rows(self.y, idx)

    def loss(self, X, idx=None):
        _, t = self._resid(X, idx)
        return _logcosh(t).mean(1)

    def grad(self, X, idx=None):
        Z, t = self._resid(X, idx)
        return torch.einsum("nm,nmd->nd", torch.tanh(t), Z) / self.m

    def hessians(self, X, idx=None) -> torch.Tensor:
        """Local Hessians ``[n_sel, d, d]`` at the stacked points (exact)."""
        Z, t = self._resid(X, idx)
        w = 1.0 / torch.cosh(t) ** 2
        return torch.einsum("nm,nma,nmb->nab", w, Z, Z) / self.m

    def global_hessian(self, x) -> torch.Tensor:
        """:math:`\\nabla^2f(x)=\\frac1n\\sum_i\\nabla^2f_i(x)`."""
        return torch.einsum("i,ijk->jk", self.weights, self.hessians(self.stack(x)))

    @cached_property
    def x_star(self) -> torch.Tensor:
        x = torch.zeros(self.d, dtype=self.dtype)
        for _ in range(200):
            g = self.global_grad(x)
            if g.norm() < 1e-14:
                break
            step = torch.linalg.solve(self.global_hessian(x), g)
            t, f0 = 1.0, self.global_loss(x)
            while self.global_loss(x - t * step) > f0 - 0.25 * t * (g @ step) and t > 1e-10:
                t *= 0.5  # backtracking keeps Newton globally convergent
            x = x - t * step
        gn = self.global_grad(x).norm().item()
        if gn > 1e-12:
            raise RuntimeError(f"log-cosh regression: Newton's method stopped at gradient norm {gn:.3g} > 1e-12")
        return x

    @cached_property
    def L(self) -> float:
        return torch.linalg.eigvalsh(torch.einsum("nmi,nmj->nij", self.Z, self.Z) / self.m)[:, -1].max().item()

    @property
    def mu(self) -> float:
        return 0.0

    @cached_property
    def mu_local(self) -> float:
        """Smallest eigenvalue of the global Hessian at ``x_star``."""
        return torch.linalg.eigvalsh(self.global_hessian(self.x_star))[0].item()


def random_logcosh(n: int = 6, m: int = 3, d: int = 4, *, heterogeneity: float = 1.0, seed: int = 0) -> LogCoshRegression:
    r"""Seeded log-cosh regression (THEORY B4(a): ``n = 6``, ``m = 3``, ``d = 4``): features
    :math:`z\sim\mathcal N(0,I)`, targets :math:`y_{ir}=z_{ir}^\top(w_0+h\,\omega_i)+0.1\,\epsilon_{ir}`,
    so that the clients' minimisers differ by about ``heterogeneity``."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(d)
    W = w0[None] + heterogeneity * rng.standard_normal((n, d))
    Z = rng.standard_normal((n, m, d))
    y = np.einsum("nmd,nd->nm", Z, W) + 0.1 * rng.standard_normal((n, m))
    return LogCoshRegression(Z, y)
