r"""Base class of the stacked-worker problems.

A problem holds ``n`` local objectives :math:`f_i:\mathbb R^d\to\mathbb R` and the global objective
:math:`f=\sum_i q_i f_i` with client weights :math:`q_i\ge 0,\ \sum_i q_i=1` (uniform by default).
Every method evaluates the *stacked* form: ``grad(X)`` takes ``X`` of shape ``[n, d]`` whose row ``i``
is the point at which worker ``i`` evaluates its own :math:`\nabla f_i`, and returns ``[n, d]``.
With ``idx`` (a LongTensor of worker ids) only those workers are evaluated: ``X`` is then
``[len(idx), d]``. No Python loop over workers happens anywhere in this path.
"""
from __future__ import annotations

from functools import cached_property

import torch

from .._validation import check_shape


class Problem:
    """Abstract stacked-worker problem. Subclasses implement ``loss`` and ``grad``."""

    n: int
    d: int
    weights: torch.Tensor
    dtype: torch.dtype = torch.float64
    name: str = "problem"

    # -- stacked evaluation -------------------------------------------------------------------
    def loss(self, X: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Local losses ``[f_i(x_i)]`` for stacked ``X`` (``[n, d]`` or ``[len(idx), d]``)."""
        raise NotImplementedError

    def grad(self, X: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Local gradients ``[grad f_i(x_i)]``, same shape as ``X``."""
        raise NotImplementedError

    # -- global objective -----------------------------------------------------------------------
    def _check_point(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=self.dtype)
        check_shape(x, (self.d,), "x")
        return x

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """The point ``x`` (``[d]``) repeated for every worker (a view, no copy)."""
        return self._check_point(x).expand(self.n, self.d)

    def local_grads(self, x: torch.Tensor) -> torch.Tensor:
        """All local gradients at one common point: ``[grad f_i(x)]_i``, shape ``[n, d]``."""
        return self.grad(self.stack(x))

    def global_loss(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`f(x)=\\sum_i q_i f_i(x)`."""
        return self.weights @ self.loss(self.stack(x))

    def global_grad(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\nabla f(x)=\\sum_i q_i \\nabla f_i(x)`."""
        return self.weights @ self.local_grads(x)

    # -- exact constants --------------------------------------------------------------------
    @cached_property
    def x_star(self) -> torch.Tensor:
        raise NotImplementedError

    @cached_property
    def f_star(self) -> float:
        return float(self.global_loss(self.x_star))

    @cached_property
    def zeta_star_sq(self) -> float:
        r""":math:`\zeta_\star^2=\sum_i q_i\|\nabla f_i(x^\star)\|^2` (equal to the gradient variance at
        :math:`x^\star`, since :math:`\nabla f(x^\star)=0`)."""
        G = self.local_grads(self.x_star)
        return float(self.weights @ (G * G).sum(1))

    def suboptimality(self, x: torch.Tensor) -> float:
        return float(self.global_loss(x)) - self.f_star

    def constants(self) -> dict:
        """The exact constants as plain floats (for reports)."""
        return {
            "n": self.n, "d": self.d, "L": float(self.L), "mu": float(self.mu),
            "f_star": self.f_star, "zeta_star_sq": self.zeta_star_sq,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, d={self.d})"

    # -- helpers ----------------------------------------------------------------------------------
    def _rows(self, t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Rows of a per-worker tensor for the workers in ``idx`` (all when ``idx`` is None)."""
        return t if idx is None else t[idx]

    def _check_stacked(self, X: torch.Tensor, idx: torch.Tensor | None) -> None:
        m = self.n if idx is None else len(idx)
        if X.dim() != 2 or X.shape[0] != m or X.shape[1] != self.d:
            raise ValueError(
                f"{type(self).__name__}: stacked points must have shape [{m}, {self.d}] "
                f"(one row per {'worker' if idx is None else 'selected worker'}), got {list(X.shape)}"
            )
