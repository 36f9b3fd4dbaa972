r"""Heterogeneous quadratics, the workhorse analytic setting of hetlab.

.. math::

    f_i(x)=\tfrac12 x^\top A_i x-c_i^\top x+e_i ,\qquad \nabla f_i(x)=A_ix-c_i .

When every :math:`A_i\succ0` this is :math:`\tfrac12(x-b_i)^\top A_i(x-b_i)` with local minimiser
:math:`b_i=A_i^{-1}c_i` (build it with :meth:`QuadraticProblem.from_minimizers`). The global objective
:math:`f=\sum_iq_if_i` has Hessian :math:`\bar A=\sum_iq_iA_i` and minimiser
:math:`x^\star=\bar A^{-1}\sum_iq_ic_i`. Constants are exact: :math:`L=\max_i\lambda_{\max}(A_i)`,
:math:`\mu=\lambda_{\min}(\bar A)`, :math:`\zeta_\star^2=\sum_iq_i\|A_ix^\star-c_i\|^2`.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from .._validation import as_tensor, check_shape, normalize_weights
from .base import Problem


class QuadraticProblem(Problem):
    """Quadratic local objectives given by Hessians ``A [n, d, d]`` and linear terms ``c [n, d]``.

    Parameters
    ----------
    A : array ``[n, d, d]``
        Symmetric positive semi-definite local Hessians.
    c : array ``[n, d]``
        Linear terms (the local gradient at 0 is ``-c_i``).
    e : array ``[n]``, optional
        Constant terms (only shift the losses).
    weights : array ``[n]``, optional
        Client weights ``q`` (normalised to sum to one); uniform by default.
    """

    name = "quadratic"

    def __init__(self, A, c, e=None, weights=None, *, dtype=torch.float64, sym_tol=1e-10):
        A = as_tensor(A, dtype=dtype, name="A")
        if A.dim() != 3 or A.shape[1] != A.shape[2]:
            raise ValueError(f"A must have shape [n, d, d] (one square Hessian per client), got {list(A.shape)}")
        n, d = A.shape[0], A.shape[1]
        c = as_tensor(c, dtype=dtype, name="c")
        check_shape(c, (n, d), "c")
        asym = (A - A.transpose(1, 2)).abs().amax().item()
        scale = max(1.0, A.abs().amax().item())
        if asym > sym_tol * scale:
            raise ValueError(f"the Hessians A_i must be symmetric (max |A - A^T| = {asym:.3g}); symmetrise with (A + A^T)/2")
        A = 0.5 * (A + A.transpose(1, 2))
        eig = torch.linalg.eigvalsh(A)  # [n, d], ascending
        worst = eig[:, 0].min().item()
        if worst < -1e-10 * scale:
            i = int(eig[:, 0].argmin())
            raise ValueError(
                f"the Hessian of client {i} is not positive semi-definite (smallest eigenvalue {worst:.3g}); "
                "a quadratic with a negative-curvature direction has no minimiser"
            )
        self.n, self.d, self.dtype = n, d, dtype
        self.A, self.c = A, c
        self.e = torch.zeros(n, dtype=dtype) if e is None else as_tensor(e, dtype=dtype, name="e")
        check_shape(self.e, (n,), "e")
        self.weights = normalize_weights(weights, n, dtype=dtype)
        self._eig = eig
        self.b = None  # local minimisers, set by from_minimizers
        Abar = torch.einsum("i,ijk->jk", self.weights, A)
        mu = torch.linalg.eigvalsh(Abar)[0].item()
        if mu <= 1e-12 * scale:
            raise ValueError(
                f"the global Hessian sum_i q_i A_i is singular (smallest eigenvalue {mu:.3g}), so x_star is not "
                "unique; add a ridge term or use positive-definite A_i"
            )

    @classmethod
    def from_minimizers(cls, A, b, weights=None, **kw) -> "QuadraticProblem":
        r""":math:`f_i(x)=\tfrac12(x-b_i)^\top A_i(x-b_i)`: local minimisers ``b [n, d]``, so ``f_i(b_i)=0``."""
        A = as_tensor(A, name="A")
        b = as_tensor(b, name="b")
        if A.dim() != 3:
            raise ValueError(f"A must have shape [n, d, d], got {list(A.shape)}")
        check_shape(b, (A.shape[0], A.shape[1]), "b")
        c = torch.einsum("nij,nj->ni", A, b)
        e = 0.5 * torch.einsum("ni,ni->n", b, c)
        prob = cls(A, c, e, weights, **kw)
        prob.b = b.to(prob.dtype)
        return prob

    # -- stacked evaluation ------------------------------------------------------------------
    def grad(self, X, idx=None):
        self._check_stacked(X, idx)
        return torch.einsum("nij,nj->ni", self._rows(self.A, idx), X) - self._rows(self.c, idx)

    def loss(self, X, idx=None):
        self._check_stacked(X, idx)
        AX = torch.einsum("nij,nj->ni", self._rows(self.A, idx), X)
        return 0.5 * (X * AX).sum(1) - (self._rows(self.c, idx) * X).sum(1) + self._rows(self.e, idx)

    def hessians(self, idx=None) -> torch.Tensor:
        """Local Hessians ``[n, d, d]`` (constant)."""
        return self._rows(self.A, idx)

    def prox(self, X, rho: float, idx=None) -> torch.Tensor:
        r"""Exact proximal points :math:`\arg\min_y f_i(y)+\frac\rho2\|y-x_i\|^2=(A_i+\rho I)^{-1}(c_i+\rho x_i)`, batched."""
        self._check_stacked(X, idx)
        if rho <= 0:
            raise ValueError(f"prox: the proximal weight must be positive, got {rho}")
        A = self._rows(self.A, idx)
        eye = torch.eye(self.d, dtype=self.dtype)
        rhs = self._rows(self.c, idx) + rho * X
        return torch.linalg.solve(A + rho * eye, rhs.unsqueeze(-1)).squeeze(-1)

    # -- exact constants ------------------------------------------------------------------------
    @cached_property
    def A_bar(self) -> torch.Tensor:
        return torch.einsum("i,ijk->jk", self.weights, self.A)

    @cached_property
    def x_star(self) -> torch.Tensor:
        return torch.linalg.solve(self.A_bar, self.weights @ self.c)

    @cached_property
    def L(self) -> float:
        """Smoothness of every local objective: ``max_i lambda_max(A_i)``."""
        return self._eig[:, -1].max().item()

    @cached_property
    def L_global(self) -> float:
        """Smoothness of the global objective: ``lambda_max(A_bar)``."""
        return torch.linalg.eigvalsh(self.A_bar)[-1].item()

    @cached_property
    def mu(self) -> float:
        """Strong convexity of the global objective: ``lambda_min(A_bar)``."""
        return torch.linalg.eigvalsh(self.A_bar)[0].item()


def _random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    Z = rng.standard_normal((d, d))
    Q, R = np.linalg.qr(Z)
    return Q * np.sign(np.diag(R))


def random_quadratics(n: int, d: int, *, spectrum=(0.5, 2.0), hessian_heterogeneity: float = 1.0,
                      minimizer_heterogeneity: float = 1.0, common_minimizer=None, weights=None,
                      seed: int = 0) -> QuadraticProblem:
    r"""Seeded heterogeneous quadratics :math:`f_i=\tfrac12(x-b_i)^\top A_i(x-b_i)`.

    ``A_i = U_i diag(s_i) U_i^T`` with independent Haar-random ``U_i`` and ``s_i ~ U[spectrum]``
    (the construction of THEORY A1). ``hessian_heterogeneity`` ``h`` in ``[0, 1]`` interpolates
    ``A_i <- (1 - h) A_0 + h A_i`` towards one common Hessian ``A_0`` drawn the same way (every
    eigenvalue stays inside ``spectrum``). The minimisers are ``b_i = b_0 + s * xi_i`` with
    ``xi_i ~ N(0, I)`` and ``s = minimizer_heterogeneity``; ``b_0`` is ``common_minimizer``
    (zero by default). With ``h = 0`` or ``s = 0`` there is no fixed-point bias for local methods.
    Draws use ``numpy.random.default_rng(seed)``, in the order: ``U_i, s_i`` per client, then ``b``, then ``A_0``.
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n >= 1 and d >= 1, got n={n}, d={d}")
    lo, hi = spectrum
    if not 0 < lo <= hi:
        raise ValueError(f"spectrum must satisfy 0 < low <= high, got {spectrum}")
    if not 0.0 <= hessian_heterogeneity <= 1.0:
        raise ValueError(f"hessian_heterogeneity must lie in [0, 1], got {hessian_heterogeneity}")
    if minimizer_heterogeneity < 0:
        raise ValueError(f"minimizer_heterogeneity must be >= 0, got {minimizer_heterogeneity}")
    rng = np.random.default_rng(seed)
    A = np.empty((n, d, d))
    for i in range(n):  # construction only, not a hot path
        U = _random_orthogonal(rng, d)
        A[i] = (U * rng.uniform(lo, hi, size=d)) @ U.T
    xi = rng.standard_normal((n, d))
    U0 = _random_orthogonal(rng, d)
    A0 = (U0 * rng.uniform(lo, hi, size=d)) @ U0.T
    h = hessian_heterogeneity
    A = (1 - h) * A0[None] + h * A
    A = 0.5 * (A + A.transpose(0, 2, 1))
    b0 = np.zeros(d) if common_minimizer is None else np.asarray(common_minimizer, dtype=float)
    b = b0[None] + minimizer_heterogeneity * xi
    return QuadraticProblem.from_minimizers(A, b, weights)
