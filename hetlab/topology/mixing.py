r"""Mixing (gossip) matrices and their validation.

A mixing matrix :math:`W\in\mathbb R^{n\times n}` is non-negative and **doubly stochastic**
(:math:`W\mathbf1=\mathbf1`, :math:`\mathbf1^\top W=\mathbf1^\top`), usually symmetric, with
:math:`W_{ij}>0` only on edges of the communication graph. Gossip is :math:`X\leftarrow WX`.
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np

from .graphs import _log2


class MixingMatrixError(ValueError):
    """A matrix that cannot be used for gossip (the message says which property fails)."""


def validate_mixing(W, *, symmetric: bool = True, connected: bool = True, graph: nx.Graph | None = None,
                    tol: float = 1e-12) -> np.ndarray:
    """Check that ``W`` is a valid mixing matrix and return it as a float64 array.

    Raises :class:`MixingMatrixError` when ``W`` is not square, has negative entries, is not doubly
    stochastic (rows or columns not summing to 1), is not symmetric (if ``symmetric``), puts weight
    on a pair that is not an edge of ``graph``, or does not mix (``connected``: the consensus
    subspace must be the only eigenvalue-1 direction, i.e. ``||W - J||_2 < 1`` for a static matrix).
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise MixingMatrixError(f"a mixing matrix must be square [n, n], got shape {W.shape}")
    n = W.shape[0]
    if not np.all(np.isfinite(W)):
        raise MixingMatrixError("the mixing matrix has non-finite entries")
    if W.min() < -tol:
        i, j = np.unravel_index(np.argmin(W), W.shape)
        raise MixingMatrixError(f"mixing weights must be non-negative; W[{i},{j}] = {W[i, j]:.3g}")
    rows, cols = W.sum(1), W.sum(0)
    if np.abs(rows - 1).max() > 1e3 * tol or np.abs(cols - 1).max() > 1e3 * tol:
        raise MixingMatrixError(
            "the mixing matrix is not doubly stochastic: row sums lie in "
            f"[{rows.min():.6g}, {rows.max():.6g}] and column sums in [{cols.min():.6g}, {cols.max():.6g}]; "
            "gossip then changes the average of the models. Use metropolis_hastings(G) for any undirected graph"
        )
    if symmetric and np.abs(W - W.T).max() > 1e3 * tol:
        raise MixingMatrixError(f"the mixing matrix is not symmetric (max |W - W^T| = {np.abs(W - W.T).max():.3g}); "
                                "pass symmetric=False for directed graphs")
    if graph is not None:
        A = nx.to_numpy_array(graph, nodelist=range(n)) + np.eye(n)
        off = (W > tol) & (A == 0)
        if off.any():
            i, j = map(int, np.argwhere(off)[0])
            raise MixingMatrixError(f"W[{i},{j}] = {W[i, j]:.3g} > 0 but ({i}, {j}) is not an edge of the graph")
    if connected and n > 1:
        rho = float(np.linalg.norm(W - np.full((n, n), 1.0 / n), 2))
        if rho >= 1 - 1e-12:
            raise MixingMatrixError(
                f"gossip with this matrix does not reach consensus (||W - J||_2 = {rho:.6g} >= 1): the graph is "
                "disconnected, or the matrix is periodic (e.g. a ring with zero self-weight); add self-loops "
                "(lazy(W)) or connect the graph"
            )
    return W


def uniform_weights(G: nx.Graph) -> np.ndarray:
    r"""On a ``k``-regular graph: :math:`W=(I+\text{Adj})/(k+1)` (ring 1/3, torus 1/5, hypercube :math:`1/(\tau+1)`)."""
    degs = {d for _, d in G.degree()}
    if len(degs) != 1:
        raise MixingMatrixError(f"uniform weights need a regular graph; degrees here range over {sorted(degs)}. "
                                "Use metropolis_hastings(G)")
    k = degs.pop()
    n = G.number_of_nodes()
    return (np.eye(n) + nx.to_numpy_array(G, nodelist=range(n))) / (k + 1)


def metropolis_hastings(G: nx.Graph) -> np.ndarray:
    r"""Metropolis–Hastings weights :math:`W_{ij}=1/(1+\max(d_i,d_j))` on edges, the rest on the diagonal:
    symmetric and doubly stochastic on any undirected graph."""
    n = G.number_of_nodes()
    deg = dict(G.degree())
    W = np.zeros((n, n))
    for i, j in G.edges():
        if i != j:
            W[i, j] = W[j, i] = 1.0 / (1 + max(deg[i], deg[j]))
    W[np.diag_indices(n)] = 1.0 - W.sum(1)
    return W


def lazy(W, alpha: float = 0.5) -> np.ndarray:
    r""":math:`(1-\alpha)I+\alpha W`: keeps double stochasticity and removes periodicity (eigenvalue -1)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    W = np.asarray(W, dtype=np.float64)
    return (1 - alpha) * np.eye(W.shape[0]) + alpha * W


def complete_mixing(n: int) -> np.ndarray:
    """``J = 11^T / n``: exact averaging in one step (the server / all-reduce)."""
    return np.full((n, n), 1.0 / n)


def shift_matrix(n: int, s: int) -> np.ndarray:
    """Cyclic shift ``P^s``: row ``i`` has its 1 in column ``(i + s) mod n``."""
    return np.roll(np.eye(n), s, axis=1)


def static_exponential(n: int) -> np.ndarray:
    r"""Static exponential graph weights :math:`W=\frac1{\tau+1}(I+\sum_{k<\tau}P^{2^k})`, ``n = 2^tau``
    (directed, circulant, doubly stochastic, not symmetric)."""
    tau = _log2(n, "the static exponential graph")
    return (np.eye(n) + sum(shift_matrix(n, 2 ** k) for k in range(tau))) / (tau + 1)


def one_peer_exponential(n: int) -> list[np.ndarray]:
    r"""One-peer exponential schedule :math:`W^{(t)}=\frac12(I+P^{2^{t\bmod\tau}})`, one period of ``tau``
    matrices; the product over a period is exactly ``J`` (Ying et al. 2021)."""
    tau = _log2(n, "the one-peer exponential graph")
    return [0.5 * (np.eye(n) + shift_matrix(n, 2 ** k)) for k in range(tau)]


def gossip_power(W, r: int) -> np.ndarray:
    """``W^r``: ``r`` gossip steps per iteration (more communication, smaller consensus distance)."""
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    return np.linalg.matrix_power(np.asarray(W, dtype=np.float64), r)


def ring_rho(n: int) -> float:
    """Closed form of ``||W - J||_2`` for the ring with weights 1/3 (THEORY C1)."""
    return (1 + 2 * math.cos(2 * math.pi / n)) / 3
