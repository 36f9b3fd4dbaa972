r"""Cubic and quartic test losses with closed-form Hessians and SAM corrections (THEORY C6).

.. math::

    L_j(w)=\tfrac12 w^\top Q_j w+\sum_{i=1}^{p}c_{ji}\,\varphi(a_i^\top w),\qquad
    \varphi(s)=\frac{s^k}{k!},\quad k\in\{3,4\}.

With one ``Q`` ``[d, d]`` and one ``c`` ``[p]`` every worker holds the **same** loss :math:`L`
(the setting of Zhu et al. 2023); per-worker ``Q [n, d, d]`` or ``c [n, p]`` make the losses
heterogeneous (THEORY C6(d)). Setting ``c = 0`` gives a quadratic. Everything is exact:

* gradient :math:`\nabla L_j(w)=Q_jw+\sum_ic_{ji}\varphi'(a_i^\top w)a_i`;
* Hessian :math:`H_j(w)=Q_j+\sum_ic_{ji}\varphi''(a_i^\top w)a_ia_i^\top`;
* SAM correction gradient, for a (consensus) covariance :math:`\Xi`,

  .. math::  \tfrac12\nabla_w\operatorname{tr}\big(H(w)\,\Xi\big)
             =\tfrac12\sum_ic_i\,\varphi'''(a_i^\top w)\,(a_i^\top\Xi a_i)\,a_i ,

  with :math:`\varphi'''=1` (cubic) or :math:`\varphi'''(s)=s` (quartic); it is identically zero
  for a quadratic (``c = 0``).

The point :math:`w=0` is stationary (every polynomial term has zero gradient there). It is the
global minimiser of a quartic with :math:`c\ge0` (then every :math:`L_j` is strongly convex) and a
strict *local* minimiser of a cubic (a cubic is unbounded below). ``x_star`` is therefore ``0``,
and ``L``/``mu`` are the curvature **at** ``x_star`` (``max_j lambda_max(Q_j)`` and
``lambda_min(sum_j q_j Q_j)``): the polynomial terms are not globally smooth, so keep iterates
in a bounded region when using ``L`` to pick a step size.
"""
from __future__ import annotations

import math
from functools import cached_property

import torch

from .._validation import as_tensor, check_shape, normalize_weights
from .base import Problem

__all__ = ["CubicQuarticProblem", "random_cubic_quartic"]


class CubicQuarticProblem(Problem):
    r"""Stacked cubic (``degree=3``) or quartic (``degree=4``) losses, shared or per worker.

    Parameters
    ----------
    Q : array ``[d, d]`` or ``[n, d, d]``
        Symmetric quadratic part, shared or one per worker.
    a : array ``[p, d]``
        Directions :math:`a_i` of the polynomial terms (shared by all workers).
    c : array ``[p]`` or ``[n, p]``
        Coefficients :math:`c_i` (shared) or :math:`c_{ji}` (per worker). ``c = 0``: a quadratic.
    degree : 3 or 4
        Power :math:`k` of the polynomial terms (:math:`\varphi(s)=s^k/k!`).
    n : int, optional
        Number of workers; required when both ``Q`` and ``c`` are shared.
    weights : array ``[n]``, optional
        Worker weights (uniform by default; the gossip methods require uniform weights).
    """

    name = "cubic_quartic"

    def __init__(self, Q, a, c, degree: int = 3, n: int | None = None, weights=None, *,
                 dtype=torch.float64, sym_tol: float = 1e-10):
        if degree not in (3, 4):
            raise ValueError(f"degree must be 3 (cubic) or 4 (quartic), got {degree!r}")
        Q = as_tensor(Q, dtype=dtype, name="Q")
        a = as_tensor(a, dtype=dtype, name="a")
        c = as_tensor(c, dtype=dtype, name="c")
        if a.dim() != 2:
            raise ValueError(f"a must have shape [p, d] (one direction a_i per row), got {list(a.shape)}")
        p, d = a.shape
        sizes = set()
        if Q.dim() == 3:
            sizes.add(Q.shape[0])
        elif Q.dim() != 2:
            raise ValueError(f"Q must have shape [d, d] (shared) or [n, d, d] (per worker), got {list(Q.shape)}")
        if c.dim() == 2:
            sizes.add(c.shape[0])
        elif c.dim() != 1:
            raise ValueError(f"c must have shape [p] (shared) or [n, p] (per worker), got {list(c.shape)}")
        if n is not None:
            sizes.add(int(n))
        if len(sizes) != 1:
            raise ValueError("the number of workers is ambiguous: pass n when Q and c are shared, and make the "
                             f"leading sizes of a per-worker Q [n, d, d] / c [n, p] agree (got {sorted(sizes)})")
        n = sizes.pop()
        if n < 1:
            raise ValueError(f"need at least one worker, got n={n}")
        Qs = Q.expand(n, d, d) if Q.dim() == 2 else Q
        check_shape(Qs, (n, d, d), "Q")
        cs = c.expand(n, p) if c.dim() == 1 else c
        check_shape(cs, (n, p), "c")
        asym = (Qs - Qs.transpose(1, 2)).abs().amax().item()
        if asym > sym_tol * max(1.0, Qs.abs().amax().item()):
            raise ValueError(f"Q must be symmetric (max |Q - Q^T| = {asym:.3g}); symmetrise with (Q + Q^T)/2")
        self.n, self.d, self.p, self.dtype, self.degree = n, d, p, dtype, int(degree)
        self.Q = (0.5 * (Qs + Qs.transpose(1, 2))).contiguous()
        self.a = a
        self.c = cs.contiguous()
        self.weights = normalize_weights(weights, n, dtype=dtype)
        self.shared = bool((self.Q - self.Q[0]).abs().max() == 0 and (self.c - self.c[0]).abs().max() == 0)
        self.name = "quadratic" if bool((self.c == 0).all()) else ("cubic" if degree == 3 else "quartic")

    # -- phi and its derivatives ------------------------------------------------------------
    def _phi(self, s, order: int):
        """:math:`\\varphi^{(order)}(s)` for :math:`\\varphi(s)=s^k/k!` (zero past order k)."""
        k = self.degree - order
        if k < 0:
            return torch.zeros_like(s)
        return s ** k / math.factorial(k)

    def _s(self, X):
        return X @ self.a.T  # [m, p]: a_i^T x_j

    # -- stacked evaluation -------------------------------------------------------------------
    def loss(self, X, idx=None):
        self._check_stacked(X, idx)
        QX = torch.einsum("nij,nj->ni", self._rows(self.Q, idx), X)
        return 0.5 * (X * QX).sum(1) + (self._rows(self.c, idx) * self._phi(self._s(X), 0)).sum(1)

    def grad(self, X, idx=None):
        self._check_stacked(X, idx)
        QX = torch.einsum("nij,nj->ni", self._rows(self.Q, idx), X)
        return QX + (self._rows(self.c, idx) * self._phi(self._s(X), 1)) @ self.a

    def hessians(self, X, idx=None) -> torch.Tensor:
        """Local Hessians :math:`H_j(x_j)` at the stacked points, ``[m, d, d]``."""
        self._check_stacked(X, idx)
        coef = self._rows(self.c, idx) * self._phi(self._s(X), 2)  # [m, p]
        return self._rows(self.Q, idx) + torch.einsum("mp,pk,pl->mkl", coef, self.a, self.a)

    # -- the global loss at one point -----------------------------------------------------------
    def hessian(self, w) -> torch.Tensor:
        r"""Hessian of the global loss :math:`\sum_jq_jL_j` at ``w`` (``[d, d]``)."""
        return torch.einsum("j,jkl->kl", self.weights, self.hessians(self.stack(w)))

    def third_derivative(self, w) -> torch.Tensor:
        r"""Third-derivative tensor :math:`\nabla^3L(w)_{klm}=\sum_jq_j\sum_ic_{ji}\varphi'''(a_i^\top w)a_{ik}a_{il}a_{im}`."""
        w = self._check_point(w)
        coef = (self.weights @ self.c) * self._phi(self.a @ w, 3)
        return torch.einsum("p,pk,pl,pm->klm", coef, self.a, self.a, self.a)

    def _check_cov(self, Xi) -> torch.Tensor:
        Xi = as_tensor(Xi, dtype=self.dtype, name="Xi")
        check_shape(Xi, (self.d, self.d), "Xi (a d x d covariance, not the scalar Xi^2)")
        return Xi

    def sam_regularizer(self, w, Xi) -> torch.Tensor:
        r""":math:`\tfrac12\operatorname{tr}(H(w)\,\Xi)` for the global loss (the average-direction SAM term)."""
        return 0.5 * torch.einsum("kl,lk->", self.hessian(w), self._check_cov(Xi))

    def sam_correction_grad(self, w, Xi) -> torch.Tensor:
        r""":math:`\tfrac12\nabla_w\operatorname{tr}(H(w)\,\Xi)=\tfrac12\sum_i\bar c_i\varphi'''(a_i^\top w)(a_i^\top\Xi a_i)a_i`
        (``[d]``), with :math:`\bar c_i=\sum_jq_jc_{ji}`. Zero for a quadratic; independent of ``w`` for a cubic."""
        w = self._check_point(w)
        Xi = self._check_cov(Xi)
        quad = torch.einsum("pk,kl,pl->p", self.a, Xi, self.a)  # a_i^T Xi a_i
        coef = 0.5 * (self.weights @ self.c) * self._phi(self.a @ w, 3) * quad
        return coef @ self.a

    # -- exact constants ----------------------------------------------------------------------
    @cached_property
    def x_star(self) -> torch.Tensor:
        """``0``: stationary for every worker; a global minimiser for a quartic with ``c >= 0``, a local one for a cubic."""
        return torch.zeros(self.d, dtype=self.dtype)

    @cached_property
    def Q_bar(self) -> torch.Tensor:
        return torch.einsum("j,jkl->kl", self.weights, self.Q)

    @cached_property
    def L(self) -> float:
        """Curvature at ``x_star``: ``max_j lambda_max(Q_j)`` (not a global smoothness constant)."""
        return torch.linalg.eigvalsh(self.Q)[:, -1].max().item()

    @cached_property
    def mu(self) -> float:
        """``lambda_min(sum_j q_j Q_j)`` (the curvature of the global loss at ``x_star``)."""
        return torch.linalg.eigvalsh(self.Q_bar)[0].item()


def random_cubic_quartic(d: int = 4, p: int = 3, n: int = 8, degree: int = 3, *, spectrum=(0.5, 2.0),
                         coef_range=(0.5, 1.5), hessian_heterogeneity: float = 0.0, seed: int = 0
                         ) -> CubicQuarticProblem:
    r"""Seeded instance of THEORY C6: :math:`Q=U\operatorname{diag}(s)U^\top` with Haar ``U`` and
    :math:`s\sim\mathcal U[\text{spectrum}]`, :math:`a_i\sim\mathcal N(0,I_d)`, :math:`c_i\sim\mathcal U[\text{coef\_range}]`
    (shared by all ``n`` workers). ``hessian_heterogeneity = h > 0`` gives worker ``j`` the quadratic part
    :math:`Q_j=Q+h(S_j-\bar S)` with :math:`S_j` symmetric Gaussian (so :math:`\sum_jQ_j/n=Q`).
    Draw order: ``Q``, ``a``, ``c``, then the ``S_j``."""
    import numpy as np

    if d < 1 or p < 1 or n < 1:
        raise ValueError(f"need d, p, n >= 1, got d={d}, p={p}, n={n}")
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((d, d))
    U, R = np.linalg.qr(Z)
    U = U * np.sign(np.diag(R))
    Q = (U * rng.uniform(*spectrum, size=d)) @ U.T
    Q = 0.5 * (Q + Q.T)
    a = rng.standard_normal((p, d))
    c = rng.uniform(*coef_range, size=p)
    if hessian_heterogeneity:
        S = rng.standard_normal((n, d, d))
        S = 0.5 * (S + S.transpose(0, 2, 1))
        S -= S.mean(0)
        Q = Q[None] + hessian_heterogeneity * S
    return CubicQuarticProblem(Q, a, c, degree=degree, n=n)
