r"""Spanning trees and the tree-messaging structure used by RelaySum / RelaySGD."""
from __future__ import annotations

import networkx as nx
import numpy as np
import torch


def bfs_spanning_tree(G: nx.Graph, root: int = 0) -> nx.Graph:
    """Breadth-first spanning tree of a connected graph, as an undirected graph on all nodes."""
    if not nx.is_connected(G):
        raise ValueError("the graph is disconnected: it has no spanning tree")
    T = nx.Graph()
    T.add_nodes_from(G.nodes)
    T.add_edges_from(nx.bfs_edges(G, root))
    return T


def minimum_diameter_spanning_tree(G: nx.Graph) -> nx.Graph:
    """A spanning tree of minimum diameter (unweighted graph).

    The optimum is a shortest-path tree from the graph's *absolute centre*, which for unit edge
    lengths is a node or the midpoint of an edge. Every node-rooted BFS tree and every tree grown
    from both ends of an edge is tried; the one with the smallest diameter is returned
    (O(n (n + m)), fine for the graphs of this project).
    """
    if not nx.is_connected(G):
        raise ValueError("the graph is disconnected: it has no spanning tree")
    best, best_d = None, None
    candidates = [(v,) for v in G.nodes] + [tuple(e) for e in G.edges]
    for roots in candidates:
        T = nx.Graph()
        T.add_nodes_from(G.nodes)
        if len(roots) == 2:
            T.add_edge(*roots)
        seen, frontier = set(roots), list(roots)
        while frontier:
            nxt = []
            for u in frontier:
                for w in G.neighbors(u):
                    if w not in seen:
                        seen.add(w)
                        T.add_edge(u, w)
                        nxt.append(w)
            frontier = nxt
        d = nx.diameter(T) if T.number_of_nodes() > 1 else 0
        if best_d is None or d < best_d:
            best, best_d = T, d
    return best


def tree_delays(T: nx.Graph) -> np.ndarray:
    r"""RelaySum delays :math:`\tau_{ik}=\max(d_T(i,k)-1,0)`, ``[n, n]``."""
    n = T.number_of_nodes()
    D = np.zeros((n, n), dtype=int)
    for i, dist in nx.all_pairs_shortest_path_length(T):
        for k, dk in dist.items():
            D[i, k] = dk
    return np.maximum(D - 1, 0)


class TreeMessaging:
    r"""Directed edges of a tree and the index arrays that let one relay step run as tensor ops.

    For every directed edge :math:`e=(i\to j)`: ``src[e] = i``, ``dst[e] = j``, ``rev[e]`` is the
    edge :math:`j\to i`. ``incoming`` is the ``[n, E]`` 0/1 matrix with ``incoming[j, e] = 1`` iff
    ``dst[e] = j``. A relay step computes, for all edges at once,
    :math:`m_{i\to j}=y_i+\sum_{k\in N(i)\setminus j}m_{k\to i}=y_i+(\text{incoming}\,m)_i-m_{j\to i}`.
    On the distributed backend each worker ``i`` computes its own ``m_{i->j}`` and sends it to ``j``
    (point-to-point along tree edges); nothing else changes.
    """

    def __init__(self, T: nx.Graph):
        n = T.number_of_nodes()
        if sorted(T.nodes) != list(range(n)):
            raise ValueError("tree nodes must be 0..n-1")
        if not nx.is_tree(T):
            raise ValueError("RelaySum needs a tree: on a graph with cycles relayed sums count models twice; "
                             "extract one with bfs_spanning_tree(G) or minimum_diameter_spanning_tree(G)")
        edges = [(i, j) for i, j in T.edges] + [(j, i) for i, j in T.edges]
        index = {e: k for k, e in enumerate(edges)}
        self.n, self.E = n, len(edges)
        self.src = torch.tensor([e[0] for e in edges], dtype=torch.long)
        self.dst = torch.tensor([e[1] for e in edges], dtype=torch.long)
        self.rev = torch.tensor([index[(j, i)] for i, j in edges], dtype=torch.long)
        inc = torch.zeros(n, self.E, dtype=torch.float64)
        inc[self.dst, torch.arange(self.E)] = 1.0
        self.incoming = inc
        self.tree = T
        self.diameter = nx.diameter(T) if n > 1 else 0

    def relay(self, Y: torch.Tensor, M_prev: torch.Tensor) -> torch.Tensor:
        """New messages ``[E, ...]`` from the local values ``Y [n, ...]`` and the previous messages."""
        inc = self.incoming.to(M_prev.dtype)
        into = torch.einsum("ne,e...->n...", inc, M_prev)
        return Y[self.src] + into[self.src] - M_prev[self.rev]

    def receive(self, M: torch.Tensor) -> torch.Tensor:
        """Sum of the messages each worker receives: ``[n, ...]``."""
        return torch.einsum("ne,e...->n...", self.incoming.to(M.dtype), M)
