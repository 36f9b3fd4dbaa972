r"""Closed forms for "D-SGD is average-direction SAM" (THEORY C6; Zhu et al. 2023).

Plain float64 NumPy computed from the raw coefficients, independently of
:class:`hetlab.problems.CubicQuarticProblem` and of the algorithms, so comparing them with the
library is a real check.

Setting: workers at :math:`w_j=w_a+\delta_j` with :math:`\sum_j\delta_j=0` and consensus
covariance :math:`\Xi=\frac1m\sum_j\delta_j\delta_j^\top`. For a loss with a polynomial gradient,
Taylor's formula is finite, and averaging over the workers kills the first-order term:

.. math::

    \frac1m\sum_j\nabla L(w_a+\delta_j)=\nabla L(w_a)+\tfrac12\nabla\operatorname{tr}\big(H(w_a)\Xi\big)
    +\underbrace{\tfrac16\,\tfrac1m\textstyle\sum_j\nabla^4L[\delta_j,\delta_j,\delta_j]}_{R_3}+\dots

For :math:`L(w)=\frac12w^\top Qw+\sum_ic_i\,(a_i^\top w)^k/k!`:

* quadratic (:math:`c=0`): the correction and every remainder vanish;
* cubic (:math:`k=3`): the identity is exact with :math:`R_3=0`;
* quartic (:math:`k=4`): :math:`R_3=\frac16\frac1m\sum_j\sum_ic_i(a_i^\top\delta_j)^3a_i` exactly,
  and nothing beyond it.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "poly_grad", "poly_hessian", "sam_correction", "sam_correction_isotropic", "third_order_remainder",
    "mean_gradient_prediction", "gaussian_mean_gradient", "heterogeneous_first_order_term",
    "consensus_covariance", "noise_consensus_distance_sq", "linear_scaling_consensus",
]


def _arr(x):
    return np.asarray(x, dtype=np.float64)


def _dphi(s, order: int, degree: int):
    """Derivative ``order`` of ``s^degree / degree!``."""
    k = degree - order
    return np.zeros_like(s) if k < 0 else s ** k / math.factorial(k)


def poly_grad(Q, a, c, w, degree: int):
    r""":math:`\nabla L(w)=Qw+\sum_ic_i\varphi'(a_i^\top w)a_i`; ``w`` may be ``[d]`` or stacked ``[m, d]``."""
    Q, a, c, w = map(_arr, (Q, a, c, w))
    return w @ Q.T + (c * _dphi(w @ a.T, 1, degree)) @ a


def poly_hessian(Q, a, c, w, degree: int):
    r""":math:`H(w)=Q+\sum_ic_i\varphi''(a_i^\top w)a_ia_i^\top` at one point ``w`` ``[d]``."""
    Q, a, c, w = map(_arr, (Q, a, c, w))
    coef = c * _dphi(a @ w, 2, degree)
    return Q + (a.T * coef) @ a


def sam_correction(a, c, w, Xi, degree: int):
    r"""The average-direction SAM correction :math:`\tfrac12\nabla\operatorname{tr}(H(w)\Xi)`:

    cubic :math:`\tfrac12\sum_ic_i(a_i^\top\Xi a_i)a_i`; quartic :math:`\tfrac12\sum_ic_i(a_i^\top w)(a_i^\top\Xi a_i)a_i`;
    ``degree=2`` (a quadratic) gives zero. ``Xi`` is the ``d x d`` covariance."""
    a, c, w, Xi = map(_arr, (a, c, w, Xi))
    if Xi.shape != (a.shape[1], a.shape[1]):
        raise ValueError(f"Xi must be the {a.shape[1]} x {a.shape[1]} consensus covariance, got shape {Xi.shape}")
    if degree == 2:
        return np.zeros(a.shape[1])
    quad = np.einsum("pk,kl,pl->p", a, Xi, a)
    return 0.5 * (c * _dphi(a @ w, 3, degree) * quad) @ a


def sam_correction_isotropic(a, c, w, xi_sq: float, degree: int, per_coordinate: bool = False):
    r"""The *wrong* correction of THEORY C6 pitfall 2: the scalar :math:`\Xi^2` times the identity in
    place of the covariance (``per_coordinate``: :math:`\frac{\Xi^2}{d}I`, same trace as :math:`\Xi`).
    It equals the right one only when :math:`\Xi` is isotropic."""
    d = _arr(a).shape[1]
    return sam_correction(a, c, w, (xi_sq / d if per_coordinate else xi_sq) * np.eye(d), degree)


def third_order_remainder(a, c, deltas, degree: int):
    r""":math:`R_3=\tfrac16\frac1m\sum_j\nabla^4L[\delta_j,\delta_j,\delta_j]`: for the quartic
    :math:`\tfrac16\frac1m\sum_j\sum_ic_i(a_i^\top\delta_j)^3a_i`, zero for lower degrees."""
    a, c, D = map(_arr, (a, c, deltas))
    if degree < 4:
        return np.zeros(a.shape[1])
    return (c * ((D @ a.T) ** 3).mean(0) / 6.0) @ a


def consensus_covariance(X):
    r""":math:`\Xi=\frac1m\sum_j(x_j-\bar x)(x_j-\bar x)^\top` of stacked points ``[m, d]``."""
    X = _arr(X)
    D = X - X.mean(0)
    return D.T @ D / X.shape[0]


def mean_gradient_prediction(Q, a, c, w_a, Xi, degree: int):
    r"""Zhu et al.'s prediction of the workers' mean gradient: :math:`\nabla L(w_a)+\tfrac12\nabla\operatorname{tr}(H(w_a)\Xi)`."""
    return poly_grad(Q, a, c, w_a, degree) + sam_correction(a, c, w_a, Xi, degree)


def gaussian_mean_gradient(Q, a, c, w, Sigma, degree: int):
    r""":math:`\mathbb E_{\epsilon\sim\mathcal N(0,\Sigma)}\nabla L(w+\epsilon)`, exactly.

    The gradient is a polynomial of degree ``degree - 1`` in :math:`\epsilon`; odd Gaussian moments
    vanish and :math:`\mathbb E(a^\top\epsilon)^2=a^\top\Sigma a`, so for the cubic *and* the quartic
    the expectation is :math:`\nabla L(w)+\tfrac12\nabla\operatorname{tr}(H(w)\Sigma)` (the quartic's
    third-order term has zero Gaussian mean)."""
    return poly_grad(Q, a, c, w, degree) + sam_correction(a, c, w, Sigma, degree)


def heterogeneous_first_order_term(hessians, deltas):
    r""":math:`\frac1m\sum_jH_j\delta_j` for per-worker Hessians ``[m, d, d]`` at :math:`w_a`: the term
    that averaging does **not** cancel when the losses differ (THEORY C6(d)); zero if all :math:`H_j` are equal."""
    H, D = _arr(hessians), _arr(deltas)
    return np.einsum("jkl,jl->k", H, D) / D.shape[0]


# ------------------------------------------------------------------ noise-driven consensus distance


def noise_consensus_distance_sq(W, eta: float, s2: float, lam: float = 1.0, d: int = 1,
                                ordering: str = "parallel") -> float:
    r"""Exact stationary :math:`\mathbb E\,\Xi^2` of D-SGD on identical losses :math:`f_i=\frac\lambda2\|x\|^2`
    with i.i.d. gradient noise :math:`\mathcal N(0,s^2I_d)` and a symmetric mixing matrix ``W``.

    Along the eigenvector :math:`u_j` of :math:`W` (eigenvalue :math:`\lambda_j`, :math:`j\ge2`) every
    coordinate evolves as a scalar AR(1) process:

    * ``parallel`` (:math:`X^+=WX-\eta G`): :math:`z^+=(\lambda_j-\eta\lambda)z-\eta\xi`, variance
      :math:`\eta^2s^2/(1-(\lambda_j-\eta\lambda)^2)`;
    * ``atc`` (:math:`X^+=W(X-\eta G)`): :math:`z^+=\lambda_j((1-\eta\lambda)z-\eta\xi)`, variance
      :math:`\eta^2s^2\lambda_j^2/(1-\lambda_j^2(1-\eta\lambda)^2)` (THEORY C2(iii)).

    Then :math:`\mathbb E\,\Xi^2=\frac dn\sum_{j\ge2}\operatorname{var}_j`.
    """
    W = _arr(W)
    if np.abs(W - W.T).max() > 1e-12:
        raise ValueError("noise_consensus_distance_sq needs a symmetric W (it uses its eigen-decomposition)")
    n = W.shape[0]
    ev = np.linalg.eigvalsh(W)
    ev = np.delete(ev, np.argmin(np.abs(ev - 1.0)))  # drop the consensus eigenvalue 1
    if ordering == "parallel":
        rate = ev - eta * lam
        var = eta ** 2 * s2 / (1.0 - rate ** 2)
    elif ordering == "atc":
        rate = ev * (1.0 - eta * lam)
        var = eta ** 2 * s2 * ev ** 2 / (1.0 - rate ** 2)
    else:
        raise ValueError(f"ordering must be 'parallel' or 'atc', got {ordering!r}")
    if np.any(np.abs(rate) >= 1):
        raise ValueError("the consensus modes are not stable for this step size")
    return float(d * var.sum() / n)


def linear_scaling_consensus(W, eta0: float, batches, s2_sample: float, B0: int = 1, lam: float = 1.0,
                             d: int = 1, ordering: str = "parallel"):
    r"""Stationary :math:`\mathbb E\,\Xi^2` under the linear scaling rule: per-worker batch ``B``,
    step :math:`\eta=\eta_0B/B_0`, per-coordinate noise :math:`s^2=s^2_{\rm sample}/B`. Returns
    ``(etas, Xi2)``. For :math:`\eta\ll1-\rho` this is :math:`\approx\eta^2s^2\frac dn\sum_{j\ge2}\frac1{1-\lambda_j^2}
    \propto\eta^2/B\propto B`: the implicit SAM radius of D-SGD *grows* with the total batch."""
    batches = np.asarray(batches, dtype=np.float64)
    etas = eta0 * batches / B0
    xi2 = np.array([noise_consensus_distance_sq(W, e, s2_sample / B, lam, d, ordering)
                    for e, B in zip(etas, batches)])
    return etas, xi2
