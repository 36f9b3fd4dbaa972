"""Communication graphs, built with networkx (nodes are the integers ``0..n-1``)."""
from __future__ import annotations

import math
import numbers

import networkx as nx


def _check_n(n: int, minimum: int, what: str) -> None:
    # numbers.Integral also accepts numpy integers (e.g. n taken from an array's shape)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"{what} needs an integer number of nodes n >= {minimum}, got {n!r}")


def _log2(n: int, what: str) -> int:
    _check_n(n, 1, what)
    tau = int(round(math.log2(n)))
    if n < 2 or 2 ** tau != n:
        raise ValueError(f"{what} needs n to be a power of two (n = 2^tau), got n={n}")
    return tau


def ring(n: int) -> nx.Graph:
    """Cycle on ``n`` nodes."""
    _check_n(n, 3, "a ring")
    return nx.cycle_graph(n)


def chain(n: int) -> nx.Graph:
    """Path on ``n`` nodes (a ring with one edge removed; also a spanning tree)."""
    _check_n(n, 2, "a chain")
    return nx.path_graph(n)


def torus(m: int, k: int | None = None) -> nx.Graph:
    """2-D periodic ``m x k`` grid (``k = m`` by default), node ``(a, c)`` relabelled ``a * k + c``."""
    k = m if k is None else k
    _check_n(m, 3, "a torus side")
    _check_n(k, 3, "a torus side")
    G = nx.grid_2d_graph(m, k, periodic=True)
    return nx.relabel_nodes(G, {(a, c): a * k + c for a, c in G.nodes})


def star(n: int) -> nx.Graph:
    """One hub (node 0) joined to ``n - 1`` leaves."""
    _check_n(n, 2, "a star")
    return nx.star_graph(n - 1)


def complete(n: int) -> nx.Graph:
    _check_n(n, 1, "a complete graph")
    return nx.complete_graph(n)


def hypercube(n: int) -> nx.Graph:
    """``log2 n``-dimensional hypercube; node ids are the integers whose bits are the coordinates."""
    tau = _log2(n, "a hypercube")
    G = nx.hypercube_graph(tau)
    # networkx labels the nodes by coordinate tuples, except for tau = 1 where they are the ints 0, 1
    return nx.relabel_nodes(G, {v: int("".join(map(str, v)) or "0", 2) if isinstance(v, tuple) else int(v)
                                for v in G.nodes})


def exponential_digraph(n: int) -> nx.DiGraph:
    """Static exponential graph: node ``i`` sends to ``i + 2^k mod n``, ``k = 0..log2(n)-1`` (directed)."""
    tau = _log2(n, "the exponential graph")
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from((i, (i + 2 ** k) % n) for i in range(n) for k in range(tau))
    return G


def erdos_renyi(n: int, p: float, seed: int = 0, max_tries: int = 100) -> nx.Graph:
    """A connected G(n, p) graph: the first connected draw among seeds ``seed, seed+1, ...``.

    Raises ``ValueError`` (instead of looping forever) if none of ``max_tries`` draws is connected.
    """
    _check_n(n, 1, "an Erdos-Renyi graph")
    if not 0 < p <= 1:
        raise ValueError(f"edge probability p must lie in (0, 1], got {p}")
    for t in range(max_tries):
        G = nx.gnp_random_graph(n, p, seed=seed + t)
        if nx.is_connected(G):
            return G
    raise ValueError(f"no connected G({n}, {p}) graph in {max_tries} draws: p is below the connectivity "
                     f"threshold ~ ln(n)/n = {math.log(max(n, 2)) / n:.3g}; increase p")


_SOCIAL = {
    "karate": nx.karate_club_graph,              # Zachary's karate club, 34 members
    "florentine": nx.florentine_families_graph,  # marriages between 15 Florentine families
    "davis": nx.davis_southern_women_graph,      # 32 women and events (bipartite)
    "les_miserables": nx.les_miserables_graph,   # 77 characters of the novel
}


def social_network(name: str = "karate") -> nx.Graph:
    """A real social network shipped with networkx (``karate``, ``florentine``, ``davis``, ``les_miserables``),
    unweighted, nodes relabelled ``0..n-1`` in sorted order of the original labels."""
    if name not in _SOCIAL:
        raise ValueError(f"unknown social network {name!r}; choose one of {sorted(_SOCIAL)}")
    G = nx.Graph(_SOCIAL[name]())
    G = nx.Graph(G.edges())  # drop weights/attributes
    return nx.convert_node_labels_to_integers(G, ordering="sorted")


def binary_tree(n: int) -> nx.Graph:
    """A complete binary tree on ``n`` nodes (heap order: children of ``i`` are ``2i+1, 2i+2``)."""
    _check_n(n, 1, "a binary tree")
    return nx.full_rary_tree(2, n)
