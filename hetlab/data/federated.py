r"""From a partitioned data set ``(X, y, parts)`` to hetlab's stacked finite-sum problems.

The finite-sum problems (:mod:`hetlab.problems.finite_sum`) store client :math:`i`'s
:math:`m_i` samples padded to a common length :math:`m_{\max}=\max_im_i`:
``Z [n, m_max, d]``, ``y [n, m_max]`` and ``counts [n]`` (rows past ``counts[i]`` are ignored), and
weight clients by :math:`q_i=m_i/\sum_jm_j` by default, so that the global objective is the plain
average over all samples.

:class:`~hetlab.problems.LogisticRegressionProblem` is **binary** with labels :math:`\pm1`. For a
multiclass data set, :func:`binary_labels` makes a one-vs-rest problem (``positive`` = one class or
a set of classes, e.g. digits 0-4 against 5-9); :func:`federated_logistic` calls it for you.

The heterogeneity a partition induces on the problem is measured by the gradient dissimilarity

.. math:: \zeta^2(x)=\sum_iq_i\|\nabla f_i(x)-\nabla f(x)\|^2,\qquad \nabla f=\sum_iq_i\nabla f_i

(:func:`zeta_sq_at`; with uniform weights this is :math:`\frac1n\sum_i\|\nabla f_i(x)-\nabla f(x)\|^2`),
which is :func:`hetlab.measures.gradient_variance` of the local gradients; at :math:`x^\star` it is
:math:`\zeta_\star^2`.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import measures
from ..problems.finite_sum import LeastSquaresProblem, LogisticRegressionProblem
from .partition import check_partition

__all__ = ["pad_clients", "unpad_clients", "binary_labels", "add_intercept", "federated_logistic",
           "federated_least_squares", "zeta_sq_at"]


def _as_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"X must have shape [N, d] (one row per sample), got {X.shape}")
    X = X.reshape(X.shape[0], -1)  # images [N, c, h, w] are flattened
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape [{X.shape[0]}] (one label per row of X), got {y.shape}")
    return X, y


def pad_clients(X, y, parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack the clients' samples, padded with zeros: ``Z [n, m_max, d]``, ``Y [n, m_max]``, ``counts [n]``.

    Client ``k``'s rows are ``X[parts[k]]`` in the order of ``parts[k]``; ``Z[k, :counts[k]]`` holds
    them and the rest is zero. ``X`` of shape ``[N, ...]`` is flattened to ``[N, d]``. ``parts`` must be
    a disjoint cover of ``range(N)`` (checked). Dtypes are kept (NumPy arrays out).
    """
    X, y = _as_xy(X, y)
    parts = check_partition(parts, X.shape[0])
    n = len(parts)
    if n == 0:
        raise ValueError("pad_clients: parts is empty (no clients)")
    counts = np.array([p.size for p in parts], dtype=np.int64)
    m_max = int(counts.max())
    Z = np.zeros((n, m_max, X.shape[1]), dtype=X.dtype)
    Y = np.zeros((n, m_max), dtype=y.dtype)
    for k, p in enumerate(parts):  # a one-off copy, not an evaluation path
        Z[k, :p.size] = X[p]
        Y[k, :p.size] = y[p]
    return Z, Y, counts


def unpad_clients(Z, Y, counts) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`pad_clients`: the list of per-client ``(X_k, y_k)`` without padding."""
    Z, Y, counts = np.asarray(Z), np.asarray(Y), np.asarray(counts)
    if Z.ndim != 3 or Y.shape != Z.shape[:2] or counts.shape != (Z.shape[0],):
        raise ValueError(f"expected Z [n, m, d], Y [n, m], counts [n]; got {Z.shape}, {Y.shape}, {counts.shape}")
    if (counts < 0).any() or (counts > Z.shape[1]).any():
        raise ValueError(f"counts must lie in [0, {Z.shape[1]}], got {counts.tolist()}")
    return [(Z[k, :c].copy(), Y[k, :c].copy()) for k, c in enumerate(counts.tolist())]


def binary_labels(y, positive) -> np.ndarray:
    """One-vs-rest relabelling: ``+1.0`` where ``y`` is in ``positive`` (a label or a collection of
    labels), ``-1.0`` elsewhere. Raises if one of the two sides is empty."""
    y = np.asarray(y)
    pos = np.atleast_1d(np.asarray(list(positive) if isinstance(positive, (set, frozenset, range)) else positive))
    out = np.where(np.isin(y, pos), 1.0, -1.0)
    if (out > 0).all() or (out < 0).all():
        raise ValueError(f"binary_labels: positive={positive!r} makes every label the same sign; choose a "
                         f"proper, non-empty subset of the classes {np.unique(y).tolist()}")
    return out


def add_intercept(X) -> np.ndarray:
    """Append a constant feature 1 (``[N, d] -> [N, d+1]``): an intercept for the linear models
    (note that the ridge term then also shrinks the intercept)."""
    X = np.asarray(X)
    return np.concatenate([X.reshape(X.shape[0], -1), np.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)


def _check_nonempty(parts, what: str) -> None:
    empty = [k for k, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(f"{what}: clients {empty[:10]} hold no sample (every f_i needs data); partition with "
                         "min_size >= 1 (e.g. hetlab.data.dirichlet(..., min_size=1))")


def federated_logistic(X, y, parts, lam: float = 1e-2, *, positive=None, intercept: bool = False,
                       weights="samples", dtype=torch.float64) -> LogisticRegressionProblem:
    r"""A :class:`~hetlab.problems.LogisticRegressionProblem` whose client :math:`k` holds ``X[parts[k]]``.

    Labels: if ``y`` is already :math:`\pm1` it is used as is; otherwise ``positive`` must name the
    positive class(es) and :func:`binary_labels` makes a one-vs-rest problem (the problem class is
    binary). ``intercept=True`` appends a constant feature. ``weights="samples"`` weights clients by
    size (every sample counts once), ``None`` uniformly, or pass explicit weights.
    """
    X, y = _as_xy(X, y)
    parts = check_partition(parts, X.shape[0])
    _check_nonempty(parts, "federated_logistic")
    if positive is not None:
        yb = binary_labels(y, positive)
    elif np.isin(y, (-1, 1)).all():
        yb = y.astype(np.float64)
    else:
        raise ValueError(
            "federated_logistic: LogisticRegressionProblem is binary (labels -1/+1) but y has classes "
            f"{np.unique(y)[:12].tolist()}; pass positive=<class or classes> for a one-vs-rest problem "
            "(e.g. positive=range(5) for digits 0-4 against 5-9)"
        )
    if intercept:
        X = add_intercept(X)
    Z, Y, counts = pad_clients(X, yb, parts)
    return LogisticRegressionProblem(Z, Y, counts=counts, lam=lam, weights=weights, dtype=dtype)


def federated_least_squares(X, y, parts, lam: float = 0.0, *, positive=None, intercept: bool = False,
                            weights="samples", dtype=torch.float64) -> LeastSquaresProblem:
    r"""A :class:`~hetlab.problems.LeastSquaresProblem` (exact constants) whose client :math:`k` holds
    ``X[parts[k]]``, with real targets ``y`` or, given ``positive``, the :math:`\pm1` one-vs-rest targets
    of :func:`binary_labels` (least-squares classification)."""
    X, y = _as_xy(X, y)
    parts = check_partition(parts, X.shape[0])
    _check_nonempty(parts, "federated_least_squares")
    t = binary_labels(y, positive) if positive is not None else y.astype(np.float64)
    if intercept:
        X = add_intercept(X)
    Z, Y, counts = pad_clients(X, t, parts)
    return LeastSquaresProblem(Z, Y, counts=counts, lam=lam, weights=weights, dtype=dtype)


def zeta_sq_at(problem, x=None) -> float:
    r"""Gradient dissimilarity at ``x`` (zeros if ``None``):
    :math:`\zeta^2(x)=\sum_iq_i\|\nabla f_i(x)-\nabla f(x)\|^2` with the problem's client weights
    :math:`q` (:func:`hetlab.measures.gradient_variance` of ``problem.local_grads(x)``)."""
    x = torch.zeros(problem.d, dtype=problem.dtype) if x is None else torch.as_tensor(x, dtype=problem.dtype)
    return measures.gradient_variance(problem.local_grads(x), problem.weights)
