"""Topologies: graphs (networkx), mixing matrices with validation, spectral quantities, spanning trees.

:class:`Topology` bundles a graph with its mixing matrix (or a time-varying schedule) so that the
gossip algorithms can ask for ``W`` at step ``t``.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from . import graphs, mixing, spectral, trees
from .graphs import (binary_tree, chain, complete, erdos_renyi, exponential_digraph, hypercube, ring,
                     social_network, star, torus)
from .mixing import (MixingMatrixError, complete_mixing, gossip_power, lazy, metropolis_hastings,
                     one_peer_exponential, static_exponential, uniform_weights, validate_mixing)
from .spectral import one_minus_lambda2, p_koloskova, rho, schedule_rho, spectral_gap
from .trees import TreeMessaging, bfs_spanning_tree, minimum_diameter_spanning_tree, tree_delays


class Topology:
    """A (possibly time-varying) gossip topology: ``W(t)`` returns the mixing matrix of step ``t``.

    Build with :meth:`from_graph`, :meth:`from_matrix`, :meth:`time_varying` or :func:`make_topology`.
    Every matrix is validated (:func:`validate_mixing`) on construction.
    """

    def __init__(self, matrices, name: str, graph=None, symmetric: bool = True):
        mats = [validate_mixing(W, symmetric=symmetric, connected=len(matrices) == 1, graph=graph) for W in matrices]
        n = mats[0].shape[0]
        if any(M.shape != (n, n) for M in mats):
            raise MixingMatrixError("all matrices of a schedule must have the same size")
        if len(mats) > 1 and spectral.schedule_rho(mats) >= 1 - 1e-12:
            raise MixingMatrixError(f"the schedule {name!r} does not reach consensus over one period")
        self.name, self.graph, self.n = name, graph, n
        self._np = mats
        self._torch = [torch.as_tensor(M, dtype=torch.float64) for M in mats]

    @classmethod
    def from_graph(cls, G: nx.Graph, weights: str = "metropolis", name: str | None = None) -> "Topology":
        """``weights``: ``"metropolis"`` (any graph), ``"uniform"`` (regular graphs), or ``"lazy-metropolis"``."""
        G = nx.convert_node_labels_to_integers(G, ordering="sorted") if sorted(G.nodes) != list(range(len(G))) else G
        if weights == "uniform":
            W = uniform_weights(G)
        elif weights == "metropolis":
            W = metropolis_hastings(G)
        elif weights == "lazy-metropolis":
            W = lazy(metropolis_hastings(G))
        else:
            raise ValueError(f"weights must be 'uniform', 'metropolis' or 'lazy-metropolis', got {weights!r}")
        return cls([W], name or f"graph-{weights}", graph=G)

    @classmethod
    def from_matrix(cls, W, name: str = "custom", symmetric: bool = True) -> "Topology":
        return cls([np.asarray(W, dtype=np.float64)], name, symmetric=symmetric)

    @classmethod
    def time_varying(cls, schedule, name: str = "time-varying", symmetric: bool = False) -> "Topology":
        return cls([np.asarray(W, dtype=np.float64) for W in schedule], name, symmetric=symmetric)

    @property
    def time_varying_(self) -> bool:
        return len(self._np) > 1

    @property
    def period(self) -> int:
        return len(self._np)

    def W(self, t: int = 0) -> torch.Tensor:
        """Mixing matrix used at step ``t`` (float64 tensor)."""
        return self._torch[t % len(self._torch)]

    def W_numpy(self, t: int = 0) -> np.ndarray:
        return self._np[t % len(self._np)]

    @property
    def rho(self) -> float:
        """``||W - J||_2`` (static) or over one period (time-varying)."""
        return spectral.rho(self._np[0]) if len(self._np) == 1 else spectral.schedule_rho(self._np)

    @property
    def spectral_gap(self) -> float:
        return 1.0 - self.rho

    @property
    def p(self) -> float:
        return 1.0 - self.rho ** 2

    def __repr__(self):
        return f"Topology({self.name!r}, n={self.n}, rho={self.rho:.4g})"


def make_topology(name: str, n: int, **kw) -> Topology:
    """Named topologies: ``ring``, ``chain``, ``torus`` (n = m^2), ``star``, ``complete``, ``hypercube``,
    ``exponential`` (static, directed), ``one_peer_exponential`` (time-varying), ``erdos_renyi`` (kw ``p``,
    ``seed``), ``binary_tree``, ``social`` (kw ``network``; ``n`` must match its size)."""
    if name == "ring":
        return Topology.from_graph(ring(n), "uniform", "ring")
    if name == "chain":
        return Topology.from_graph(chain(n), "metropolis", "chain")
    if name == "torus":
        m = int(round(n ** 0.5))
        if m * m != n:
            raise ValueError(f"a square torus needs n = m^2, got n={n}")
        return Topology.from_graph(torus(m), "uniform", "torus")
    if name == "star":
        return Topology.from_graph(star(n), "metropolis", "star")
    if name == "complete":
        return Topology([complete_mixing(n)], "complete", graph=complete(n))
    if name == "hypercube":
        return Topology.from_graph(hypercube(n), "uniform", "hypercube")
    if name == "exponential":
        return Topology([static_exponential(n)], "exponential", symmetric=False)
    if name == "one_peer_exponential":
        return Topology.time_varying(one_peer_exponential(n), "one_peer_exponential")
    if name == "erdos_renyi":
        return Topology.from_graph(erdos_renyi(n, kw.get("p", 0.3), kw.get("seed", 0)), "metropolis", "erdos_renyi")
    if name == "binary_tree":
        return Topology.from_graph(binary_tree(n), "metropolis", "binary_tree")
    if name == "social":
        G = social_network(kw.get("network", "karate"))
        if G.number_of_nodes() != n:
            raise ValueError(f"the {kw.get('network', 'karate')} network has {G.number_of_nodes()} nodes, not {n}")
        return Topology.from_graph(G, "metropolis", kw.get("network", "karate"))
    raise ValueError(f"unknown topology {name!r}; known: ring, chain, torus, star, complete, hypercube, exponential, "
                     "one_peer_exponential, erdos_renyi, binary_tree, social")


__all__ = [
    "Topology", "make_topology", "graphs", "mixing", "spectral", "trees",
    "ring", "chain", "torus", "star", "complete", "hypercube", "exponential_digraph", "erdos_renyi",
    "social_network", "binary_tree", "MixingMatrixError", "validate_mixing", "uniform_weights",
    "metropolis_hastings", "lazy", "complete_mixing", "static_exponential", "one_peer_exponential",
    "gossip_power", "rho", "p_koloskova", "spectral_gap", "one_minus_lambda2", "schedule_rho",
    "TreeMessaging", "bfs_spanning_tree", "minimum_diameter_spanning_tree", "tree_delays",
]
