r"""Reference answers to the exercises of the chapter "On-manifold augmentation with an invertible flow".

Every function computes the answer of one exercise from its closed form, in plain float64 NumPy / SciPy,
without calling :mod:`hetlab`. The chapter's solution cells call these functions, and
``tests/test_exercises_flow_augmentation.py`` checks each answer against an independent computation with
hetlab (latent and input-space PGD with :mod:`hetlab.flows`, its affine flows and distances, and Monte Carlo
with its mixture sampler).

=====================  ================================================================================
exercise               functions
=====================  ================================================================================
``fa-ex-factor``       :func:`cholesky_factor`, :func:`symmetric_factor`, :func:`decoded_adversary`,
                       :func:`margin_drop`
``fa-ex-euclid``       :func:`euclidean_efficiency`, :func:`efficiency_eigenvector_case`
``fa-ex-offmanifold``  :func:`offmanifold_distance`
``fa-ex-gap``          :func:`latent_position_1d`, :func:`latent_mode_distance`, :func:`latent_mode_distance_limit`
=====================  ================================================================================
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["cholesky_factor", "symmetric_factor", "decoded_adversary", "margin_drop", "euclidean_efficiency",
           "efficiency_eigenvector_case", "offmanifold_distance", "latent_position_1d", "latent_mode_distance",
           "latent_mode_distance_limit"]

# ------------------------------------------------------------------------------------ fa-ex-factor


def cholesky_factor(Sigma) -> np.ndarray:
    """The lower-triangular square root of a positive definite ``Sigma``."""
    return np.linalg.cholesky(np.asarray(Sigma, float))


def symmetric_factor(Sigma) -> np.ndarray:
    r"""The symmetric square root :math:`V\Lambda^{1/2}V^\top` of a positive semi-definite ``Sigma``."""
    lam, V = np.linalg.eigh(np.asarray(Sigma, float))
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T


def decoded_adversary(Sigma, w, y, eps) -> np.ndarray:
    r"""The data-space image :math:`L\delta^\star = -\varepsilon\,y\,\Sigma w/\sqrt{w^\top\Sigma w}` of the worst
    latent perturbation of norm :math:`\varepsilon` for the score :math:`w^\top x + b` (any factor
    :math:`LL^\top = \Sigma`)."""
    S, w = np.asarray(Sigma, float), np.asarray(w, float)
    return -eps * y * (S @ w) / np.sqrt(w @ S @ w)


def margin_drop(Sigma, w, eps) -> float:
    r"""The margin decrease :math:`\varepsilon\|L^\top w\| = \varepsilon\sqrt{w^\top\Sigma w}`."""
    S, w = np.asarray(Sigma, float), np.asarray(w, float)
    return float(eps * np.sqrt(w @ S @ w))

# ------------------------------------------------------------------------------------ fa-ex-euclid


def euclidean_efficiency(Sigma, w) -> float:
    r"""Margin decrease per unit of Euclidean displacement of the latent adversary, relative to the input-space
    adversary: :math:`\dfrac{w^\top\Sigma w}{\|\Sigma w\|\,\|w\|}\in(0, 1]` (Cauchy-Schwarz; 1 iff :math:`w` is an
    eigenvector of :math:`\Sigma`)."""
    S, w = np.asarray(Sigma, float), np.asarray(w, float)
    return float(w @ S @ w / (np.linalg.norm(S @ w) * np.linalg.norm(w)))


def efficiency_eigenvector_case() -> float:
    """For an eigenvector w of Sigma the efficiency is exactly 1."""
    return 1.0

# ------------------------------------------------------------------------------------ fa-ex-offmanifold


def offmanifold_distance(B, w, r) -> float:
    r"""Distance to the manifold :math:`\mu + \operatorname{range}B` of :math:`x - r\,y\,w/\|w\|` for :math:`x` on it:
    :math:`r\,\|(I - P)w\|/\|w\|` with :math:`P` the orthogonal projector onto :math:`\operatorname{range}B`."""
    B, w = np.asarray(B, float), np.asarray(w, float)
    Q, _ = np.linalg.qr(B)
    return float(r * np.linalg.norm(w - Q @ (Q.T @ w)) / np.linalg.norm(w))

# ------------------------------------------------------------------------------------ fa-ex-gap


def latent_position_1d(x, a, s) -> np.ndarray:
    r"""The increasing 1-D flow of :math:`\frac12\mathcal N(-a, s^2) + \frac12\mathcal N(a, s^2)`:
    :math:`z = \Phi^{-1}(F(x))`, :math:`F(x) = \frac12\Phi(\frac{x+a}s) + \frac12\Phi(\frac{x-a}s)`."""
    x = np.asarray(x, float)
    F = 0.5 * norm.cdf((x + a) / s) + 0.5 * norm.cdf((x - a) / s)
    return norm.ppf(F)


def latent_mode_distance(a, s) -> float:
    r"""Latent distance between the two modes: :math:`z(a) - z(-a) = 2\Phi^{-1}\big(\frac14 + \frac12\Phi(2a/s)\big)`
    (symmetry :math:`z(-x) = -z(x)`, and :math:`F(a) = \frac12\Phi(2a/s) + \frac14`)."""
    return float(2 * norm.ppf(0.25 + 0.5 * norm.cdf(2 * a / s)))


def latent_mode_distance_limit() -> float:
    r""":math:`\lim_{a/s\to\infty} = 2\Phi^{-1}(3/4) \approx 1.349`: however far apart the modes are in data space."""
    return float(2 * norm.ppf(0.75))
