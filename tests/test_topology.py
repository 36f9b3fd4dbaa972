"""Topologies: graph constructors, mixing-matrix validation, spectral quantities against brute-force
eigenvalues and the closed forms of THEORY C1, spanning trees against brute force, the Topology class.
Seeds are fixed and appear in the test ids."""
from __future__ import annotations

import itertools
import math
import time

import networkx as nx
import numpy as np
import pytest
import torch

from hetlab.topology import (MixingMatrixError, Topology, TreeMessaging, bfs_spanning_tree, binary_tree, chain,
                             complete, complete_mixing, erdos_renyi, exponential_digraph, gossip_power, hypercube,
                             lazy, make_topology, metropolis_hastings, minimum_diameter_spanning_tree,
                             one_minus_lambda2, one_peer_exponential, p_koloskova, rho, ring, schedule_rho,
                             social_network, spectral_gap, star, static_exponential, torus, tree_delays,
                             uniform_weights, validate_mixing)

SOCIAL_SIZES = {"karate": (34, 78), "florentine": (15, 20), "davis": (32, 89), "les_miserables": (77, 254)}


def _degrees(G):
    return sorted({d for _, d in G.degree()})


def _J(n):
    return np.full((n, n), 1.0 / n)


def _brute_rho(W):
    """max_{j>=2} |lambda_j| from the eigenvalues (symmetric W), dropping one eigenvalue closest to 1."""
    ev = np.linalg.eigvalsh(W)
    ev = np.delete(ev, np.argmin(np.abs(ev - 1.0)))
    return float(np.max(np.abs(ev)))


# ------------------------------------------------------------------------------ graph constructors

@pytest.mark.parametrize("n", [3, 4, 7, 16])
def test_ring(n):
    G = ring(n)
    assert G.number_of_nodes() == n and G.number_of_edges() == n
    assert _degrees(G) == [2] and nx.is_connected(G)
    assert sorted(G.nodes) == list(range(n))


@pytest.mark.parametrize("n", [2, 5, 9])
def test_chain_is_a_path(n):
    G = chain(n)
    assert G.number_of_edges() == n - 1 and nx.is_tree(G)
    assert nx.diameter(G) == n - 1


@pytest.mark.parametrize("m, k", [(3, 3), (4, 4), (3, 5)])
def test_torus(m, k):
    G = torus(m, k)
    assert G.number_of_nodes() == m * k and G.number_of_edges() == 2 * m * k
    assert _degrees(G) == [4]
    assert sorted(G.nodes) == list(range(m * k))
    # node (a, c) -> a * k + c: right and down neighbours with wrap-around
    assert G.has_edge(0, 1) and G.has_edge(0, k) and G.has_edge(0, k - 1) and G.has_edge(0, (m - 1) * k)


def test_star_complete_binary_tree():
    S = star(6)
    assert S.number_of_nodes() == 6 and S.degree(0) == 5 and _degrees(S) == [1, 5]
    K = complete(5)
    assert K.number_of_edges() == 10 and _degrees(K) == [4]
    T = binary_tree(7)
    assert nx.is_tree(T) and set(T.neighbors(0)) == {1, 2} and set(T.neighbors(2)) == {0, 5, 6}


@pytest.mark.parametrize("n", [2, 4, 8, 32])
def test_hypercube_and_exponential_digraph(n):
    tau = int(math.log2(n))
    H = hypercube(n)
    assert H.number_of_nodes() == n and _degrees(H) == [tau]
    assert sorted(H.nodes) == list(range(n))
    assert all(bin(u ^ v).count("1") == 1 for u, v in H.edges)  # neighbours differ in exactly one bit
    E = exponential_digraph(n)
    assert E.is_directed() and E.number_of_nodes() == n
    assert {d for _, d in E.out_degree()} == {tau} and {d for _, d in E.in_degree()} == {tau}
    assert all((v - u) % n in {2 ** k for k in range(tau)} for u, v in E.edges)


@pytest.mark.parametrize("ctor, bad", [(ring, 2), (ring, 0), (ring, 4.0), (ring, "8"), (chain, 1),
                                       (torus, 2), (star, 1), (complete, 0), (binary_tree, 0),
                                       (hypercube, 6), (hypercube, 1), (exponential_digraph, 12)])
def test_bad_sizes_raise(ctor, bad):
    with pytest.raises(ValueError):
        ctor(bad)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_erdos_renyi_is_connected_and_seeded(seed):
    G = erdos_renyi(20, 0.3, seed=seed)
    assert G.number_of_nodes() == 20 and nx.is_connected(G)
    assert nx.utils.graphs_equal(G, erdos_renyi(20, 0.3, seed=seed))


def test_erdos_renyi_raises_instead_of_looping_for_tiny_p():
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="connectivity threshold"):
        erdos_renyi(50, 0.001, seed=0)
    assert time.perf_counter() - t0 < 5.0
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            erdos_renyi(10, p)


@pytest.mark.parametrize("name", sorted(SOCIAL_SIZES))
def test_social_networks(name):
    G = social_network(name)
    n, m = SOCIAL_SIZES[name]
    assert (G.number_of_nodes(), G.number_of_edges()) == (n, m)
    assert sorted(G.nodes) == list(range(n)) and nx.is_connected(G)
    assert all(not data for _, _, data in G.edges(data=True))  # unweighted
    W = metropolis_hastings(G)
    validate_mixing(W, graph=G)
    topo = make_topology("social", n, network=name)
    assert topo.n == n and 0 < topo.rho < 1


def test_social_network_errors():
    with pytest.raises(ValueError, match="unknown social network"):
        social_network("facebook")
    with pytest.raises(ValueError, match="34 nodes"):
        make_topology("social", 30, network="karate")


@pytest.mark.parametrize("name, n", [("ring", 8), ("chain", 6), ("torus", 16), ("star", 5), ("complete", 6),
                                     ("hypercube", 8), ("exponential", 16), ("one_peer_exponential", 8),
                                     ("erdos_renyi", 12), ("binary_tree", 7), ("social", 34)])
def test_make_topology_sizes(name, n):
    T = make_topology(name, n)
    assert T.n == n and T.W(0).shape == (n, n) and T.W(0).dtype == torch.float64
    assert 0.0 <= T.rho < 1.0


def test_make_topology_errors():
    with pytest.raises(ValueError, match="n = m\\^2"):
        make_topology("torus", 12)
    with pytest.raises(ValueError, match="unknown topology"):
        make_topology("moebius", 8)
    with pytest.raises(ValueError, match="power of two"):
        make_topology("one_peer_exponential", 12)


# ------------------------------------------------------------------------------ mixing matrices


def test_validate_mixing_accepts_and_returns_float64():
    W = validate_mixing([[0.5, 0.5], [0.5, 0.5]])
    assert isinstance(W, np.ndarray) and W.dtype == np.float64


@pytest.mark.parametrize("W, kwargs, match", [
    (np.ones((2, 3)) / 3, {}, "square"),
    (np.ones(4) / 4, {}, "square"),
    (np.array([[1.5, -0.5], [-0.5, 1.5]]), {}, "non-negative"),
    (np.array([[0.5, 0.4], [0.5, 0.6]]), {}, "doubly stochastic"),           # rows sum to 0.9 and 1.1
    (np.array([[0.5, 0.5], [0.2, 0.8]]), {}, "doubly stochastic"),           # rows 1, columns 0.7 and 1.3
    (np.array([[np.nan, 0.5], [0.5, 0.5]]), {}, "non-finite"),
])
def test_validate_mixing_errors(W, kwargs, match):
    with pytest.raises(MixingMatrixError, match=match):
        validate_mixing(W, **kwargs)


def test_row_stochastic_only_is_rejected_with_both_sums_reported():
    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])  # rows sum to 1, columns do not
    assert np.allclose(W.sum(1), 1) and not np.allclose(W.sum(0), 1)
    with pytest.raises(MixingMatrixError, match="row sums lie in \\[1, 1\\] and column sums in \\[0.5, 1.5\\]"):
        validate_mixing(W)


def test_mixing_error_is_a_value_error():
    assert issubclass(MixingMatrixError, ValueError)


def test_not_symmetric_when_required():
    W = static_exponential(8)  # doubly stochastic, directed
    with pytest.raises(MixingMatrixError, match="not symmetric"):
        validate_mixing(W)
    validate_mixing(W, symmetric=False)  # fine when asymmetry is allowed


def test_weight_on_a_non_edge():
    with pytest.raises(MixingMatrixError, match="not an edge"):
        validate_mixing(complete_mixing(3), graph=chain(3))
    validate_mixing(metropolis_hastings(chain(3)), graph=chain(3))


def test_disconnected_graph_does_not_mix():
    G = nx.Graph([(0, 1), (2, 3)])
    W = metropolis_hastings(G)
    with pytest.raises(MixingMatrixError, match="does not reach consensus"):
        validate_mixing(W, graph=G)
    validate_mixing(W, graph=G, connected=False)  # allowed inside a time-varying schedule


@pytest.mark.parametrize("n", [4, 6, 10])
def test_periodic_ring_with_zero_self_weight(n):
    W = nx.to_numpy_array(ring(n)) / 2  # eigenvalue -1 for even n
    assert np.isclose(np.linalg.eigvalsh(W).min(), -1.0)
    with pytest.raises(MixingMatrixError, match="periodic"):
        validate_mixing(W)
    validate_mixing(lazy(W))  # self-loops fix it


def test_odd_ring_with_zero_self_weight_is_aperiodic():
    W = nx.to_numpy_array(ring(5)) / 2
    assert rho(validate_mixing(W)) < 1


def test_uniform_weights_needs_a_regular_graph():
    with pytest.raises(MixingMatrixError, match="regular"):
        uniform_weights(star(5))
    assert np.allclose(uniform_weights(ring(6)), (np.eye(6) + nx.to_numpy_array(ring(6))) / 3)


def test_lazy_and_gossip_power_arguments():
    W = metropolis_hastings(ring(6))
    for alpha in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            lazy(W, alpha)
    assert np.allclose(lazy(W, 1.0), W)
    with pytest.raises(ValueError):
        gossip_power(W, 0)
    assert np.allclose(gossip_power(W, 3), W @ W @ W, atol=1e-15)
    assert abs(rho(gossip_power(W, 3)) - rho(W) ** 3) <= 1e-14  # symmetric W


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("n, p", [(10, 0.3), (25, 0.2)])
def test_metropolis_hastings_on_random_graphs(seed, n, p):
    G = erdos_renyi(n, p, seed=seed)
    W = metropolis_hastings(G)
    assert np.abs(W.sum(1) - 1).max() <= 1e-14 and np.abs(W.sum(0) - 1).max() <= 1e-14
    assert np.array_equal(W, W.T) and W.min() >= 0
    deg = dict(G.degree())
    for i, j in G.edges:
        assert W[i, j] == pytest.approx(1.0 / (1 + max(deg[i], deg[j])), abs=1e-15)
    A = nx.to_numpy_array(G, nodelist=range(n)) + np.eye(n)
    assert np.all(W[A == 0] == 0)
    validate_mixing(W, graph=G)
    assert rho(W) < 1


# ------------------------------------------------------------------------------ spectral quantities


@pytest.mark.parametrize("n", [4, 8, 16, 32, 64])
def test_ring_rho_closed_form_and_brute_force(n):
    W = make_topology("ring", n).W_numpy()
    formula = (1 + 2 * math.cos(2 * math.pi / n)) / 3
    assert abs(rho(W) - formula) <= 1e-12
    assert abs(rho(W) - _brute_rho(W)) <= 1e-12
    assert abs(spectral_gap(W) - (1 - formula)) <= 1e-12
    assert abs(p_koloskova(W) - (1 - formula ** 2)) <= 1e-12
    assert abs(spectral_gap(W) - 4 / 3 * math.sin(math.pi / n) ** 2) <= 1e-12


def test_ring_asymptotics_and_n4_negative_eigenvalue():
    W = make_topology("ring", 64).W_numpy()
    assert abs((1 - rho(W)) / (4 * math.pi ** 2 / (3 * 64 ** 2)) - 0.9992) <= 1e-4
    W4 = make_topology("ring", 4).W_numpy()
    ev = np.sort(np.linalg.eigvalsh(W4))
    assert np.allclose(ev, [-1 / 3, 1 / 3, 1 / 3, 1], atol=1e-14)  # both lambda_2 and lambda_4 attain rho
    assert abs(rho(W4) - 1 / 3) <= 1e-14


@pytest.mark.parametrize("m", [4, 6, 8])
def test_torus_rho(m):
    W = make_topology("torus", m * m).W_numpy()
    assert abs(rho(W) - (3 + 2 * math.cos(2 * math.pi / m)) / 5) <= 1e-12
    assert abs(rho(W) - _brute_rho(W)) <= 1e-12


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_exponential_and_hypercube_rho(n):
    tau = int(math.log2(n))
    H = make_topology("hypercube", n).W_numpy()
    assert abs(rho(H) - (1 - 2 / (tau + 1))) <= 1e-12
    ev = np.sort(np.linalg.eigvalsh(H))
    want = np.sort(np.concatenate([[(1 + tau - 2 * w) / (tau + 1)] * math.comb(tau, w) for w in range(tau + 1)]))
    assert np.allclose(ev, want, atol=1e-12)
    E = static_exponential(n)
    sv = np.linalg.svd(E - _J(n), compute_uv=False)  # non-symmetric: singular values of W - J
    assert abs(rho(E) - sv.max()) <= 1e-12
    assert abs(rho(E) - (1 - 2 / (tau + 1))) <= 1e-12
    assert np.abs(E.sum(0) - 1).max() <= 1e-14 and np.abs(E.sum(1) - 1).max() <= 1e-14


def test_complete_graph_rho_zero():
    assert rho(complete_mixing(7)) <= 1e-15 and p_koloskova(complete_mixing(7)) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_minus_lambda2_and_koloskova_inequality(seed):
    G = erdos_renyi(15, 0.3, seed=seed)
    W = metropolis_hastings(G)
    ev = np.sort(np.linalg.eigvalsh(W))[::-1]
    assert abs(one_minus_lambda2(W) - (1 - ev[1])) <= 1e-12
    assert one_minus_lambda2(W) >= spectral_gap(W) - 1e-15  # 1 - rho ignores nothing; 1 - lambda_2 may ignore lambda_n
    rng = np.random.default_rng(seed)
    p = p_koloskova(W)
    for _ in range(200):
        X = rng.standard_normal((15, 3))
        Xbar = _J(15) @ X
        assert np.linalg.norm(W @ X - Xbar) ** 2 <= (1 - p) * np.linalg.norm(X - Xbar) ** 2 * (1 + 1e-12)
    # equality along the slowest mode
    vals, vecs = np.linalg.eigh(W)
    k = int(np.argmax(np.where(np.isclose(vals, 1.0), -1.0, np.abs(vals))))
    X = vecs[:, [k]]
    assert np.linalg.norm(W @ X) ** 2 == pytest.approx((1 - p) * np.linalg.norm(X) ** 2, rel=1e-12)


@pytest.mark.parametrize("n", [4, 8, 16, 32])
def test_one_peer_exponential_product_is_exactly_J(n):
    sched = one_peer_exponential(n)
    assert len(sched) == int(math.log2(n))
    P = np.eye(n)
    for W in sched:
        assert np.all(W.sum(0) == 1) and np.all(W.sum(1) == 1)
        P = W @ P
    assert np.array_equal(P, _J(n))  # exact: every entry is a dyadic rational
    assert schedule_rho(sched) == 0.0
    # one step alone: W = (I + P^s)/2 has eigenvalues (1 + w^(j s))/2, w = exp(2 pi i / n). For a shift
    # s = 2^k >= 2 the mode j = n/s keeps eigenvalue 1 (rho = 1); the shift-1 step has rho = cos(pi/n) < 1
    assert rho(sched[0]) == pytest.approx(math.cos(math.pi / n), abs=1e-12)
    for W in sched[1:]:
        assert rho(W) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------ spanning trees


def _brute_min_diameter(G):
    n = G.number_of_nodes()
    best = None
    for edges in itertools.combinations(G.edges, n - 1):
        T = nx.Graph(edges)
        if T.number_of_nodes() == n and nx.is_tree(T):
            d = nx.diameter(T)
            best = d if best is None else min(best, d)
    return best


SMALL_GRAPHS = {
    "ring6": ring(6), "ring7": ring(7), "K5": complete(5), "petersen": nx.petersen_graph(),
    "grid2x3": nx.convert_node_labels_to_integers(nx.grid_2d_graph(2, 3)), "wheel6": nx.wheel_graph(6),
    "lollipop": nx.lollipop_graph(4, 3), "barbell": nx.barbell_graph(3, 1), "er8_s1": erdos_renyi(8, 0.4, seed=1),
    "er7_s3": erdos_renyi(7, 0.4, seed=3), "torus3": torus(3),
}


@pytest.mark.parametrize("name", sorted(SMALL_GRAPHS))
def test_minimum_diameter_spanning_tree_is_optimal(name):
    G = SMALL_GRAPHS[name]
    T = minimum_diameter_spanning_tree(G)
    assert nx.is_tree(T) and set(T.nodes) == set(G.nodes)
    assert all(G.has_edge(u, v) for u, v in T.edges)
    d = nx.diameter(T)
    assert d == _brute_min_diameter(G)
    assert all(d <= nx.diameter(bfs_spanning_tree(G, r)) for r in G.nodes)


@pytest.mark.parametrize("name, n", [("torus", 16), ("hypercube", 16), ("erdos_renyi", 30), ("social", 34)])
def test_minimum_diameter_tree_beats_bfs_on_larger_graphs(name, n):
    G = make_topology(name, n).graph
    T = minimum_diameter_spanning_tree(G)
    assert nx.is_tree(T) and nx.diameter(T) <= nx.diameter(bfs_spanning_tree(G, 0))
    assert nx.diameter(T) >= nx.radius(G)  # a spanning tree can never be shallower than the graph's radius


@pytest.mark.parametrize("root", [0, 3])
def test_bfs_spanning_tree_keeps_distances_from_the_root(root):
    G = erdos_renyi(20, 0.2, seed=5)
    T = bfs_spanning_tree(G, root)
    assert nx.is_tree(T) and T.number_of_nodes() == 20
    assert nx.single_source_shortest_path_length(T, root) == nx.single_source_shortest_path_length(G, root)


def test_spanning_trees_of_disconnected_graph_raise():
    G = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="disconnected"):
        bfs_spanning_tree(G)
    with pytest.raises(ValueError, match="disconnected"):
        minimum_diameter_spanning_tree(G)


@pytest.mark.parametrize("T", [chain(7), binary_tree(10), star(6), bfs_spanning_tree(erdos_renyi(15, 0.3, seed=2))],
                         ids=["chain7", "binary10", "star6", "bfs_er15"])
def test_tree_delays_match_networkx_distances(T):
    D = tree_delays(T)
    n = T.number_of_nodes()
    dist = dict(nx.all_pairs_shortest_path_length(T))
    for i in range(n):
        for k in range(n):
            assert D[i, k] == max(dist[i][k] - 1, 0)
    assert np.array_equal(D, D.T) and np.all(np.diag(D) == 0)
    assert all(D[i, j] == 0 for i, j in T.edges)  # neighbours are heard without delay
    assert D.max() == max(nx.diameter(T) - 1, 0)


def test_tree_messaging_validation_and_counts():
    with pytest.raises(ValueError, match="needs a tree"):
        TreeMessaging(ring(5))
    with pytest.raises(ValueError, match="0..n-1"):
        TreeMessaging(nx.relabel_nodes(chain(3), {0: 5}))
    T = chain(6)
    msg = TreeMessaging(T)
    assert msg.E == 2 * T.number_of_edges() and msg.diameter == 5
    c = torch.zeros(msg.E, dtype=torch.float64)
    for t in range(8):  # counts of models heard: reach n - 1 at t = diam - 1 and stay there
        c = msg.relay(torch.ones(6, dtype=torch.float64), c)
        C = msg.receive(c)
        D = tree_delays(T)
        assert torch.equal(C, torch.as_tensor((D <= t).sum(1) - 1, dtype=torch.float64))
    assert torch.all(C == 5)


# ------------------------------------------------------------------------------ the Topology class


def test_topology_time_varying_schedule():
    T = make_topology("one_peer_exponential", 16)
    assert T.time_varying_ and T.period == 4
    for t in range(9):
        assert torch.equal(T.W(t), T.W(t % 4))
        assert np.array_equal(T.W_numpy(t), one_peer_exponential(16)[t % 4])
    P = np.eye(16)
    for t in range(5, 9):  # any window of one period (a cyclic shift of the schedule) multiplies to J
        P = T.W_numpy(t) @ P
    assert np.array_equal(P, _J(16))
    assert T.rho == 0.0 and T.spectral_gap == 1.0 and T.p == 1.0


def test_topology_static_properties():
    T = make_topology("ring", 10)
    assert not T.time_varying_ and T.period == 1
    assert torch.equal(T.W(0), T.W(123))
    assert T.rho == pytest.approx(rho(T.W_numpy()), abs=1e-15)
    assert T.p == pytest.approx(1 - T.rho ** 2) and T.spectral_gap == pytest.approx(1 - T.rho)
    assert "ring" in repr(T)


def test_topology_constructors_and_errors():
    G = star(5)
    for weights in ("metropolis", "lazy-metropolis"):
        T = Topology.from_graph(G, weights)
        validate_mixing(T.W_numpy(), graph=G)
    with pytest.raises(MixingMatrixError, match="regular"):
        Topology.from_graph(G, "uniform")
    with pytest.raises(ValueError, match="weights must be"):
        Topology.from_graph(G, "max-degree")
    H = nx.relabel_nodes(ring(5), {i: 10 + i for i in range(5)})  # labels are normalised to 0..n-1
    assert Topology.from_graph(H).n == 5
    with pytest.raises(MixingMatrixError):
        Topology.from_matrix([[1.0, 0.0], [0.0, 1.0]])  # two isolated nodes
    with pytest.raises(MixingMatrixError, match="not symmetric"):
        Topology.from_matrix(static_exponential(8))
    assert Topology.from_matrix(static_exponential(8), symmetric=False).rho == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(MixingMatrixError, match="consensus over one period"):
        Topology.time_varying([np.eye(4), np.eye(4)])
    with pytest.raises(MixingMatrixError, match="same size"):
        Topology.time_varying([complete_mixing(4), complete_mixing(3)])
