r"""Modified losses of backward error analysis on quadratics (THEORY.md §B, machinery M3).

Backward error analysis asks which gradient flow a discrete method follows. On quadratic objectives
every modified loss of §B is again a quadratic,

.. math:: F(x)=\tfrac12x^\top H_Fx-c_F^\top x+e_F ,

and its gradient flow is exact (:func:`hetlab.exact.quadratic_flow`). This module builds
:math:`(H_F,c_F)` from the matrices of a problem and compares a method's one-round map with the flow.

**Building blocks.** For affine gradients :math:`\nabla\phi_j(x)=G_jx-g_j` with symmetric :math:`G_j`,

.. math:: \sum_jw_j\|\nabla\phi_j(x)\|^2=\tfrac12x^\top\Big(2\sum_jw_jG_j^2\Big)x
          -\Big(2\sum_jw_jG_jg_j\Big)^{\!\top}x+\sum_jw_j\|g_j\|^2
   :label: ml-sq-norm

(:func:`affine_grad_sq_norm`). Every named term is of this form, with the problem's rows
:math:`f_i(x)=\frac12x^\top A_ix-c_i^\top x+e_i` and weights :math:`q_i`, :math:`\bar A=\sum_iq_iA_i`,
:math:`\bar c=\sum_iq_ic_i`:

==========================  ======================================  ==================================
term                         gradients :math:`(G_j, g_j, w_j)`       adds to :math:`(H, c)` per unit weight
==========================  ======================================  ==================================
:func:`grad_norm_sq`         :math:`(\bar A,\bar c,1)`               :math:`2\bar A^2,\ 2\bar A\bar c`
:func:`mean_grad_norm_sq`    :math:`(A_i,c_i,q_i)`                   :math:`2\sum_iq_iA_i^2,\ 2\sum_iq_iA_ic_i`
:func:`between_variance`     :math:`(A_i-\bar A,c_i-\bar c,q_i)`     the difference of the two rows above
:func:`within_variance`      rows minus their group's mean            (groups of rows, e.g. clients)
==========================  ======================================  ==================================

(For :math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)`, :math:`c_i=A_ib_i`: the "common facts" of THEORY §B.)
:class:`QuadraticLoss` objects add and scale, so a modified loss is written as it reads:
``objective(p) + h / 4 * grad_norm_sq(p)``.

**Named modified losses.**

* :func:`igr_loss` – gradient descent with step :math:`h` (Barrett & Dherin 2021, B1):
  :math:`f+\frac h4\|\nabla f\|^2`, flow time :math:`h` per step.
* :func:`sgd_rr_loss` – the expected epoch of SGD with random reshuffling over the rows (Smith et al.
  2021, B2): :math:`f+\frac\eta{4m}\sum_k\|\nabla\hat f_k\|^2=f+\frac\eta4\|\nabla f\|^2+\frac\eta4V_b`,
  flow time :math:`m\eta` per epoch.
* :func:`sgd_with_replacement_loss` – the expected epoch of SGD with i.i.d. minibatch indices:
  on quadratics the expected iterate *is* gradient descent, so :math:`f+\frac\eta4\|\nabla f\|^2`.
* :func:`modified_loss` – any combination :math:`f+\alpha\|\nabla f\|^2+\beta\sum_iq_i\|\nabla f_i\|^2
  +\gamma V_b+\delta V_w` (e.g. the local-SGD loss of B3).
* :func:`gd_exact_modified_loss` – the *exact* modified loss of gradient descent: :math:`I-hH=e^{-hM}`
  with :math:`M=-\frac1h\log(I-hH)=H+\frac h2H^2+\frac{h^2}3H^3+\dots` (:func:`gd_exact_modified_hessian`,
  :func:`log_series_hessian`).

**Residual slopes (M3).** :func:`flow_residuals` and :func:`residual_slopes` compare a round map with the
flows of several modified losses at once, through :func:`hetlab.exact.flow_residuals` and
:func:`hetlab.exact.fit_slope`: slope 2 for a loss that is only right to first order, 3 for the correct
second-order modified loss.

Everything is float64 NumPy, computed from the problem's matrices alone (independently of
:mod:`hetlab.algorithms`), so comparing the two is a real check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.linalg

from . import exact

__all__ = [
    "QuadraticLoss", "quadratic_parts", "objective", "affine_grad_sq_norm", "grad_norm_sq",
    "mean_grad_norm_sq", "between_variance", "within_variance", "modified_loss", "igr_loss",
    "sgd_rr_loss", "sgd_with_replacement_loss", "log_series_hessian", "gd_exact_modified_hessian",
    "gd_exact_modified_loss", "flow_residuals", "residual_slopes",
]

# ------------------------------------------------------------------------------ the quadratic type


@dataclass(eq=False)
class QuadraticLoss:
    r"""The quadratic :math:`F(x)=\frac12x^\top Hx-c^\top x+e` (``H`` symmetric ``[d, d]``, ``c [d]``).

    Supports ``+``, ``-``, unary ``-`` and multiplication by a scalar, so modified losses are
    written as sums of terms. ``H`` need not be positive definite (a wrong-sign regulariser may make
    it indefinite); :meth:`minimizer` and :meth:`flow` need it invertible.
    """

    H: np.ndarray
    c: np.ndarray
    e: float = 0.0
    name: str = field(default="", compare=False)

    def __post_init__(self):
        H = np.array(self.H, dtype=np.float64)
        c = np.array(self.c, dtype=np.float64)
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be a square matrix, got shape {H.shape}")
        if c.shape != (H.shape[0],):
            raise ValueError(f"c must have shape [{H.shape[0]}] (the dimension of H), got {c.shape}")
        scale = max(1.0, float(np.abs(H).max()))
        asym = float(np.abs(H - H.T).max())
        if asym > 1e-10 * scale:
            raise ValueError(f"H must be symmetric (max |H - H^T| = {asym:.3g}); a quadratic loss has a "
                             "symmetric Hessian: symmetrise with (H + H^T)/2")
        self.H = 0.5 * (H + H.T)
        self.c = c
        self.e = float(self.e)

    # -- algebra -------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return self.c.shape[0]

    def _same_dim(self, other: "QuadraticLoss") -> None:
        if not isinstance(other, QuadraticLoss):
            raise TypeError(f"can only combine QuadraticLoss objects, got {type(other).__name__}")
        if other.d != self.d:
            raise ValueError(f"dimension mismatch: {self.d} and {other.d}")

    def __add__(self, other):
        self._same_dim(other)
        return QuadraticLoss(self.H + other.H, self.c + other.c, self.e + other.e)

    def __sub__(self, other):
        self._same_dim(other)
        return QuadraticLoss(self.H - other.H, self.c - other.c, self.e - other.e)

    def __mul__(self, s):
        if not np.isscalar(s):
            raise TypeError(f"a QuadraticLoss can only be scaled by a number, got {type(s).__name__}")
        s = float(s)
        return QuadraticLoss(s * self.H, s * self.c, s * self.e)

    __rmul__ = __mul__

    def __neg__(self):
        return -1.0 * self

    def __truediv__(self, s):
        return self * (1.0 / float(s))

    # -- evaluation ----------------------------------------------------------------------------
    def value(self, x) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * x @ self.H @ x - self.c @ x + self.e)

    def grad(self, x) -> np.ndarray:
        return self.H @ np.asarray(x, dtype=np.float64) - self.c

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray]:
        """``(H, c)``, the form :func:`hetlab.exact.quadratic_flow` takes."""
        return self.H, self.c

    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.H)

    def is_positive_definite(self) -> bool:
        return bool(self.eigenvalues()[0] > 0)

    def minimizer(self) -> np.ndarray:
        r"""The stationary point :math:`H^{-1}c` (a minimiser when :math:`H\succ0`)."""
        lam = self.eigenvalues()
        if np.min(np.abs(lam)) <= 1e-14 * max(1.0, np.max(np.abs(lam))):
            raise ValueError("the modified Hessian is singular: the modified loss has no unique stationary point")
        return np.linalg.solve(self.H, self.c)

    def flow(self, x0, T: float) -> np.ndarray:
        r"""Exact gradient flow :math:`\dot x=-\nabla F(x)` from ``x0`` at time ``T`` (M3)."""
        return exact.quadratic_flow(self.H, self.c, np.asarray(x0, dtype=np.float64), T)

    def __repr__(self):
        lam = self.eigenvalues()
        return f"QuadraticLoss(d={self.d}, eig(H) in [{lam[0]:.4g}, {lam[-1]:.4g}])"

# ------------------------------------------------------------------------------ problem matrices


def quadratic_parts(problem):
    r"""``(A [n, d, d], c [n, d], e [n], q [n])`` of a quadratic problem as float64 NumPy arrays.

    ``problem`` is a :class:`~hetlab.problems.QuadraticProblem` (rows
    :math:`f_i=\frac12x^\top A_ix-c_i^\top x+e_i`, weights :math:`q_i`) or anything with the same
    attributes ``A``, ``c`` (and optionally ``e``, ``weights``).
    """
    def arr(t):
        return np.array(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float64)

    if not (hasattr(problem, "A") and hasattr(problem, "c")):
        raise TypeError(f"{type(problem).__name__} is not a quadratic problem (needs Hessians A and linear "
                        "terms c); build one with hetlab.problems.QuadraticProblem")
    A, c = arr(problem.A), arr(problem.c)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or c.shape != A.shape[:2]:
        raise ValueError(f"expected A [n, d, d] and c [n, d], got {A.shape} and {c.shape}")
    n = A.shape[0]
    e = arr(problem.e) if getattr(problem, "e", None) is not None else np.zeros(n)
    q = arr(problem.weights) if getattr(problem, "weights", None) is not None else np.full(n, 1.0 / n)
    return A, c, e, q / q.sum()


def objective(problem) -> QuadraticLoss:
    r"""The global objective :math:`f=\sum_iq_if_i`: :math:`(\bar A,\bar c,\sum_iq_ie_i)`."""
    A, c, e, q = quadratic_parts(problem)
    return QuadraticLoss(np.einsum("i,ijk->jk", q, A), q @ c, float(q @ e), name="f")


def affine_grad_sq_norm(G, g, w=None) -> QuadraticLoss:
    r""":math:`\sum_jw_j\|G_jx-g_j\|^2` as a quadratic: Hessian
    :math:`2\sum_jw_jG_j^\top G_j`, linear term :math:`2\sum_jw_jG_j^\top g_j`, constant
    :math:`\sum_jw_j\|g_j\|^2`. ``G [k, d, d]``, ``g [k, d]``, ``w [k]`` (ones by default)."""
    G = np.asarray(G, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if G.ndim == 2:
        G, g = G[None], g[None]
    if G.ndim != 3 or g.shape != G.shape[:2]:
        raise ValueError(f"expected G [k, d, d] and g [k, d], got {G.shape} and {g.shape}")
    w = np.ones(G.shape[0]) if w is None else np.asarray(w, dtype=np.float64)
    H = 2.0 * np.einsum("j,jlk,jlm->km", w, G, G)
    c = 2.0 * np.einsum("j,jlk,jl->k", w, G, g)
    return QuadraticLoss(H, c, float(np.einsum("j,jk,jk->", w, g, g)))


def grad_norm_sq(problem) -> QuadraticLoss:
    r""":math:`\|\nabla f(x)\|^2`: adds :math:`2\bar A^2` and :math:`2\bar A\bar c` per unit weight."""
    f = objective(problem)
    return affine_grad_sq_norm(f.H, f.c)


def mean_grad_norm_sq(problem) -> QuadraticLoss:
    r""":math:`\sum_iq_i\|\nabla f_i(x)\|^2`: adds :math:`2\sum_iq_iA_i^2` and :math:`2\sum_iq_iA_ic_i`."""
    A, c, _, q = quadratic_parts(problem)
    return affine_grad_sq_norm(A, c, q)


def _groups(groups, n):
    if groups is None:
        return [np.array([i]) for i in range(n)]
    out = [np.asarray(gr, dtype=int).ravel() for gr in groups]
    flat = np.sort(np.concatenate(out)) if out else np.zeros(0, int)
    if not np.array_equal(flat, np.arange(n)):
        raise ValueError(f"groups must partition the rows 0..{n - 1} (every row in exactly one group), got {groups}")
    if any(len(gr) == 0 for gr in out):
        raise ValueError("groups must not be empty")
    return out


def _group_means(problem, groups):
    """Per group: weight Q_g, mean Hessian and linear term of f_g = sum_{i in g} q_i f_i / Q_g."""
    A, c, _, q = quadratic_parts(problem)
    gs = _groups(groups, A.shape[0])
    Q = np.array([q[gr].sum() for gr in gs])
    if np.any(Q <= 0):
        raise ValueError("every group needs a positive total weight")
    Ag = np.stack([np.einsum("i,ijk->jk", q[gr], A[gr]) / Qg for gr, Qg in zip(gs, Q)])
    cg = np.stack([q[gr] @ c[gr] / Qg for gr, Qg in zip(gs, Q)])
    return A, c, q, gs, Q, Ag, cg


def between_variance(problem, groups=None) -> QuadraticLoss:
    r"""Between-group variance :math:`V_b(x)=\sum_gQ_g\|\nabla f_g(x)-\nabla f(x)\|^2`.

    Without ``groups`` every row is its own group: :math:`V_b=\sum_iq_i\|\nabla f_i-\nabla f\|^2`
    (THEORY §1's :math:`V`; for minibatch rows the between-minibatch variance of B2). With ``groups``
    (index lists partitioning the rows, e.g. the minibatches of each client) :math:`f_g` is the
    group's weighted mean and :math:`Q_g` its total weight: the between-client variance of B3.
    """
    _, _, _, _, Q, Ag, cg = _group_means(problem, groups)
    f = objective(problem)
    return affine_grad_sq_norm(Ag - f.H[None], cg - f.c[None], Q)


def within_variance(problem, groups) -> QuadraticLoss:
    r"""Within-group variance :math:`V_w(x)=\sum_g\sum_{i\in g}q_i\|\nabla f_i(x)-\nabla f_g(x)\|^2`
    (THEORY §B: :math:`\frac1{nK}\sum_{i,k}\|\nabla f_{ik}-\nabla f_i\|^2` with uniform weights)."""
    A, c, q, gs, _, Ag, cg = _group_means(problem, groups)
    owner = np.empty(A.shape[0], dtype=int)
    for k, gr in enumerate(gs):
        owner[gr] = k
    return affine_grad_sq_norm(A - Ag[owner], c - cg[owner], q)


def modified_loss(problem, *, grad_norm: float = 0.0, mean_grad_norm: float = 0.0,
                  between: float = 0.0, within: float = 0.0, groups=None) -> QuadraticLoss:
    r""":math:`f+\alpha\|\nabla f\|^2+\beta\sum_iq_i\|\nabla f_i\|^2+\gamma V_b+\delta V_w`
    with ``grad_norm`` :math:`=\alpha`, ``mean_grad_norm`` :math:`=\beta`, ``between`` :math:`=\gamma`,
    ``within`` :math:`=\delta` (``groups`` as in :func:`between_variance`; needed for ``within``).

    Example (B3, uniform weights, ``groups`` = the clients' minibatch rows):
    ``modified_loss(p, grad_norm=eta/4, between=-(K-1)*eta/4, within=eta/4, groups=clients)``.
    """
    F = objective(problem)
    if grad_norm:
        F = F + grad_norm * grad_norm_sq(problem)
    if mean_grad_norm:
        F = F + mean_grad_norm * mean_grad_norm_sq(problem)
    if between:
        F = F + between * between_variance(problem, groups)
    if within:
        if groups is None:
            raise ValueError("the within-group variance needs groups (index lists of the rows of each group)")
        F = F + within * within_variance(problem, groups)
    return F


def igr_loss(problem, h: float) -> QuadraticLoss:
    r"""Implicit gradient regularisation (Barrett & Dherin 2021, THEORY B1): gradient descent with step
    ``h`` follows the flow of :math:`f+\frac h4\|\nabla f\|^2` over time ``h`` per step, to :math:`O(h^3)`."""
    return modified_loss(problem, grad_norm=h / 4.0)


def sgd_rr_loss(problem, eta: float) -> QuadraticLoss:
    r"""SGD with random reshuffling over the rows (minibatch losses :math:`\hat f_k`, uniform weights;
    Smith, Dherin, Barrett & De 2021, THEORY B2): the expected epoch follows the flow over time
    :math:`m\eta` of :math:`f+\frac\eta{4m}\sum_k\|\nabla\hat f_k\|^2`, to :math:`O(\eta^3)`."""
    _check_uniform(problem, "sgd_rr_loss")
    return modified_loss(problem, mean_grad_norm=eta / 4.0)


def sgd_with_replacement_loss(problem, eta: float) -> QuadraticLoss:
    r"""SGD with i.i.d. minibatch indices (probabilities = the row weights): on quadratics the expected
    iterate obeys :math:`\mathbb E x^+=\mathbb Ex-\eta\nabla f(\mathbb Ex)` *exactly* (the update is affine
    and the index independent of the iterate), so an epoch of :math:`m` steps follows
    :math:`f+\frac\eta4\|\nabla f\|^2` over time :math:`m\eta` to :math:`O(\eta^3)`: no variance term."""
    return igr_loss(problem, eta)


def _check_uniform(problem, who):
    q = quadratic_parts(problem)[3]
    if np.ptp(q) > 1e-12 * q.max():
        raise ValueError(f"{who}: random reshuffling visits every row once per epoch, so it needs uniform row "
                         "weights (the epoch averages the rows); rebuild the problem without weights")

# ------------------------------------------------------------------------- exact GD modified loss


def log_series_hessian(H, h: float, order: int) -> np.ndarray:
    r"""Partial sum :math:`\sum_{k=1}^{\rm order}\frac{h^{k-1}}kH^k` of
    :math:`-\frac1h\log(I-hH)` (``order=1``: :math:`H`; ``order=2``: :math:`H+\frac h2H^2`, the IGR Hessian)."""
    H = np.asarray(H, dtype=np.float64)
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    out = np.zeros_like(H)
    P = np.eye(H.shape[0])
    for k in range(1, order + 1):
        P = P @ H
        out = out + h ** (k - 1) / k * P
    return 0.5 * (out + out.T)


def gd_exact_modified_hessian(H, h: float) -> np.ndarray:
    r"""The exact modified Hessian of gradient descent on :math:`\frac12x^\top Hx-c^\top x`:
    :math:`M=-\frac1h\log(I-hH)` (``scipy.linalg.logm``, real part), so that :math:`I-hH=e^{-hM}` exactly.

    A real logarithm needs :math:`I-hH\succ0`, i.e. :math:`h\lambda_{\max}(H)<1` (and :math:`H` symmetric):
    past that, a GD step flips the sign of the error along the top eigenvector and no gradient flow
    reproduces it.
    """
    H = np.asarray(H, dtype=np.float64)
    if h <= 0:
        raise ValueError(f"the step size h must be positive, got {h}")
    if np.abs(H - H.T).max() > 1e-10 * max(1.0, np.abs(H).max()):
        raise ValueError("H must be symmetric")
    lam = np.linalg.eigvalsh(0.5 * (H + H.T))
    if h * lam[-1] >= 1.0:
        raise ValueError(f"h * lambda_max(H) = {h * lam[-1]:.4g} >= 1: I - hH is not positive definite, so "
                         "GD (which oscillates along the top eigenvector) follows no real gradient flow; "
                         f"use h < 1/lambda_max = {1 / lam[-1]:.4g}")
    M = -np.real(scipy.linalg.logm(np.eye(H.shape[0]) - h * H)) / h
    return 0.5 * (M + M.T)


def gd_exact_modified_loss(loss, h: float) -> QuadraticLoss:
    r"""The exact modified loss :math:`\frac12(x-x^\star)^\top M(x-x^\star)` of gradient descent with step
    ``h`` on ``loss`` (a :class:`QuadraticLoss` or a quadratic problem, whose global objective is used):
    its flow over time ``h`` *is* one GD step, and over time :math:`th` it is :math:`t` steps."""
    f = loss if isinstance(loss, QuadraticLoss) else objective(loss)
    M = gd_exact_modified_hessian(f.H, h)
    xs = f.minimizer()
    return QuadraticLoss(M, M @ xs, 0.5 * float(xs @ M @ xs), name="exact GD modified loss")

# ------------------------------------------------------------------------------ residual slopes


LossBuilder = Callable[[float], QuadraticLoss]


def flow_residuals(round_map: Callable[[float, np.ndarray], np.ndarray], losses: Mapping[str, LossBuilder],
                   x0, etas: Sequence[float], time: Callable[[float], float]) -> dict[str, np.ndarray]:
    r"""Residuals :math:`r(\eta)=\|\text{round}_\eta(x_0)-x_F(T(\eta))\|` of ``round_map`` against the flow
    of each modified loss ``losses[name](eta)`` (M3, via :func:`hetlab.exact.flow_residuals`).

    ``round_map(eta, x0)`` returns the method's point after one round as a NumPy vector; ``time(eta)``
    is the flow time of one round (``eta`` for a GD step, ``m * eta`` for an epoch of ``m`` steps).
    The round map is evaluated once per ``eta``, whatever the number of losses.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    cache = {float(e): np.asarray(round_map(float(e), x0), dtype=np.float64) for e in etas}
    out = {}
    for name, build in losses.items():
        out[name] = exact.flow_residuals(lambda e, _x: cache[float(e)], lambda e: build(float(e)).as_tuple(),
                                         x0, [float(e) for e in etas], time)
    return out


def residual_slopes(round_map, losses: Mapping[str, LossBuilder], x0, etas, time):
    """``{name: (slope, residuals)}``: the log–log slope (M4, :func:`hetlab.exact.fit_slope`, at least
    4 points over at least one decade) of each loss's residuals (:func:`flow_residuals`)."""
    res = flow_residuals(round_map, losses, x0, etas, time)
    return {name: (exact.fit_slope(np.asarray(etas, dtype=np.float64), r).slope, r) for name, r in res.items()}
