"""C4 `relaysum_exact_delayed_average_and_relaysgd`: RelaySum delivers exact delayed sums on a tree;
RelaySGD's fixed point is x_star on every worker."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import torch

from hetlab import closed_forms_gossip as cfg
from hetlab.algorithms.gossip import DSGD, RelaySGD
from hetlab.topology import (TreeMessaging, binary_tree, chain, erdos_renyi, make_topology,
                             minimum_diameter_spanning_tree, ring, tree_delays)

from ._base import CheckResult, Criterion, Timer
from .c3_dsgd_zeta_dependence_vs_tracking import make_problem, run_method

ID = "C4"
NAME = "relaysum_exact_delayed_average_and_relaysgd"
CLAIM = ("On a spanning tree, RelaySum's relayed messages give every worker exactly "
         "sum_k y_k^(t - tau_ik) with tau_ik = max(d(i,k) - 1, 0), and counts reach n after diam - 1 steps; "
         "RelaySGD's fixed point is x_star on every worker for any tree and any heterogeneity, while D-SGD on the "
         "same chain stays biased.")
SOURCE = ("Vogels et al. 2021, RelaySum (official repository's README and paper-figures/algorithms.py) "
          "(THEORY.md C4, identities derived and verified)")

N, D, LR, ITERS, T_INPUTS = 8, 3, 0.05, 3000, 20


def relay_run(msg, Y_hist, relay=None):
    """Feed the inputs ``Y_hist [T, n, d]`` through the messaging structure ``msg`` (``relay``/``receive``).

    Returns ``(S, counts)``: ``S[t] = y^t + receive(M^t)`` (``[T, n, d]``) and ``counts[t] = 1 + C^t``
    (``[T, n]``), with messages ``M^t = relay(y^t, M^{t-1})``, ``M^{-1} = 0``. ``relay(msg, Y, M_prev)``
    replaces ``msg.relay`` (to run a wrong relay through the same loop).
    """
    relay = relay or (lambda m, Y, M: m.relay(Y, M))
    T, n, d = Y_hist.shape
    M = torch.zeros(msg.E, d, dtype=torch.float64)
    c = torch.zeros(msg.E, dtype=torch.float64)
    ones = torch.ones(n, dtype=torch.float64)
    S, counts = [], []
    for t in range(T):
        M = relay(msg, Y_hist[t], M)
        c = relay(msg, ones, c)
        S.append(Y_hist[t] + msg.receive(M))
        counts.append(1 + msg.receive(c))
    return torch.stack(S).numpy(), torch.stack(counts).numpy()


def same_step_relay(msg, Y, M_prev):
    """A deliberately wrong relay: messages are updated *in place*, edge after edge, so a message can be built
    from messages of the same step (those already overwritten) instead of the previous step's."""
    M = M_prev.clone()
    src, dst, rev = msg.src.tolist(), msg.dst.tolist(), msg.rev.tolist()
    for e in range(msg.E):
        i = src[e]
        M[e] = Y[i] + sum((M[f] for f in range(msg.E) if dst[f] == i and f != rev[e]), torch.zeros_like(Y[i]))
    return M


class GraphMessaging:
    """The index arrays of :class:`~hetlab.topology.TreeMessaging`, hand-built for *any* graph (no tree check),
    to show what relaying does on a graph with a cycle."""

    def __init__(self, G: nx.Graph):
        n = G.number_of_nodes()
        edges = [(i, j) for i, j in G.edges] + [(j, i) for i, j in G.edges]
        index = {e: k for k, e in enumerate(edges)}
        self.n, self.E = n, len(edges)
        self.src = torch.tensor([e[0] for e in edges])
        self.dst = torch.tensor([e[1] for e in edges])
        self.rev = torch.tensor([index[(j, i)] for i, j in edges])
        self.incoming = torch.zeros(n, self.E, dtype=torch.float64)
        self.incoming[self.dst, torch.arange(self.E)] = 1.0

    def relay(self, Y, M_prev):
        into = torch.einsum("ne,e...->n...", self.incoming, M_prev)
        return Y[self.src] + into[self.src] - M_prev[self.rev]

    def receive(self, M):
        return torch.einsum("ne,e...->n...", self.incoming, M)


def _identity(T_graph, msg, gen, relay=None):
    """Identity and count errors of relaying random inputs on ``T_graph`` (predictions from BFS distances)."""
    n = T_graph.number_of_nodes()
    Y = torch.randn(T_INPUTS, n, D, generator=gen, dtype=torch.float64)
    S, counts = relay_run(msg, Y, relay)
    delays = cfg.relay_delays(list(T_graph.edges), n)
    S_pred = cfg.relaysum_prediction(Y.numpy(), delays)
    c_pred = cfg.relaysum_count_prediction(delays, T_INPUTS)
    per_t = np.abs(S - S_pred).reshape(T_INPUTS, -1).max(1)
    return per_t, float(np.abs(counts - c_pred).max()), counts, delays


def _rms(X, xs):
    return float(np.sqrt(((np.asarray(X) - np.asarray(xs)[None, :]) ** 2).sum(1).mean()))


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        gen = torch.Generator().manual_seed(seed)
        # (a) the RelaySum identity on the chain, with the library's relay/receive
        tree = chain(N)
        msg = TreeMessaging(tree)
        id_err, cnt_err, counts, delays = _identity(tree, msg, gen)
        delay_match = int(np.abs(tree_delays(tree) - delays).max())
        diam = nx.diameter(tree)
        full_from = diam - 1  # = n - 2 on a chain
        counts_full = float(np.abs(counts[full_from:] - N).max())
        counts_before = float(counts[full_from - 1].min()) if full_from >= 1 else float(N)
        # two other trees: a complete binary tree and a minimum-diameter spanning tree of a random graph
        others = {"binary tree (n = 15)": binary_tree(15),
                  "min-diameter spanning tree of G(12, 0.3)": minimum_diameter_spanning_tree(
                      erdos_renyi(12, 0.3, seed=seed))}
        other_id, other_fp = {}, {}
        for label, T_other in others.items():
            e_id, e_cnt, _, dl = _identity(T_other, TreeMessaging(T_other), gen)
            other_id[label] = max(float(e_id.max()), e_cnt, float(np.abs(tree_delays(T_other) - dl).max()))
            p = make_problem(n=T_other.number_of_nodes(), seed=seed)
            st, _ = run_method(RelaySGD(LR, T_other), p, ITERS, track=False)
            other_fp[label] = _rms(st["X"].numpy(), p.x_star.numpy())
        # negative controls of the identity: same-step (in-place) messages; relaying on a ring (a cycle)
        wrong_err, _, _, _ = _identity(tree, msg, gen, relay=same_step_relay)
        G_ring = ring(N)
        ring_err, _, ring_counts, _ = _identity(G_ring, GraphMessaging(G_ring), gen)
        try:
            TreeMessaging(G_ring)
            refused = 0.0
        except ValueError:
            refused = 1.0
        # (b) RelaySGD on C3's heterogeneous quadratic (chain), and D-SGD on the same chain
        prob = make_problem(n=N, seed=seed)
        xs = prob.x_star.numpy()
        st_r, err_r = run_method(RelaySGD(LR, tree), prob, ITERS)
        X_r = st_r["X"].numpy()
        chain_topo = make_topology("chain", N)  # Metropolis: 1/3 to each neighbour, the rest on self
        st_d, err_d = run_method(DSGD(LR, chain_topo), prob, ITERS)
        X_fp = cfg.dsgd_fixed_point(prob, chain_topo.W_numpy(), LR)
        dsgd_vs_solve = float(np.linalg.norm(st_d["X"].numpy() - X_fp) / np.linalg.norm(X_fp))
        zeta_err = {}
        for cc in (1.0, 4.0):
            p = make_problem(n=N, seed=seed, c=cc)
            st, _ = run_method(RelaySGD(LR, tree), p, ITERS, track=False)
            zeta_err[cc] = _rms(st["X"].numpy(), p.x_star.numpy())
        crit = [
            Criterion("RelaySum identity on the chain, max over t < 20 (library relay/receive)", id_err.max(), 0.0,
                      1e-12, "<="),
            Criterion("counts 1 + C_i^t = #{k: tau_ik <= t} for every t (max deviation)", cnt_err, 0.0, 1e-12, "<="),
            Criterion(f"counts equal n for t >= diam - 1 = {full_from} (max deviation)", counts_full, 0.0, 0.0, "<="),
            Criterion(f"counts still below n at t = {full_from - 1} (min count)", counts_before, None, N - 1, "<="),
            Criterion("library tree_delays = BFS delays max(d - 1, 0) (max deviation)", delay_match, 0.0, 0.0, "<="),
            *[Criterion(f"{label}: identity, counts and delays (max deviation)", v, 0.0, 1e-12, "<=")
              for label, v in other_id.items()],
            *[Criterion(f"{label}: RelaySGD RMS error to x_star after {ITERS} steps", v, 0.0, 1e-12, "<=")
              for label, v in other_fp.items()],
            Criterion("TreeMessaging refuses a ring (1 = ValueError raised)", refused, 1.0, 0.0, "abs"),
            Criterion(f"RelaySGD on the chain: RMS error to x_star after {ITERS} steps", err_r[-1], 0.0, 1e-12, "<="),
            Criterion("RelaySGD on the chain: consensus distance Xi", math.sqrt(cfg.consensus_distance_sq(X_r)), 0.0,
                      1e-12, "<="),
            *[Criterion(f"zeta-independence: RelaySGD RMS error with heterogeneity x{cc:g}", v, 0.0, 1e-12, "<=")
              for cc, v in zeta_err.items()],
            Criterion("D-SGD on the same chain stays away from x_star (RMS error)", err_d[-1], None, 1e-2, ">="),
            Criterion("D-SGD on the chain = solution of its fixed-point system (relative)", dsgd_vs_solve, 0.0,
                      1e-10, "<="),
            Criterion("[control] same-step (in-place) messages satisfy the identity", wrong_err.max(), 0.0, 1e-12,
                      "<=", negative=True),
            Criterion("[control] relaying on a ring satisfies the identity", ring_err.max(), 0.0, 1e-12, "<=",
                      negative=True),
            Criterion("[control] relaying on a ring counts every model once (max count at t = 19 equals n)",
                      ring_counts[-1].max(), N, 0.0, "abs", negative=True),
            Criterion("[control] D-SGD on the chain reaches x_star", err_d[-1], 0.0, 1e-12, "<=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"id_err": id_err, "wrong_err": wrong_err, "ring_err": ring_err, "counts": counts,
                             "ring_counts": ring_counts, "err_relay": err_r, "err_dsgd": err_d,
                             "bias_dsgd": _rms(X_fp, xs), "n": N, "delays": delays})


def figure(result: CheckResult, ax=None):
    """RMS distance to x_star per step on the chain: RelaySGD reaches round-off, D-SGD stops at its bias."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    k = np.arange(len(d["err_relay"]))
    ax.semilogy(k, np.maximum(d["err_relay"], 1e-17), "-", label="RelaySGD measured")
    ax.semilogy(k, d["err_dsgd"], "-", label="D-SGD on the same chain measured")
    ax.axhline(d["bias_dsgd"], color="k", ls="--", lw=1, label="D-SGD predicted (linear solve)")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"$\sqrt{\frac{1}{n}\sum_i\|x_i^t-x^\star\|^2}$")
    ax.set_title("C4: RelaySGD on a chain of 8 is exact, D-SGD is not")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def figure_identity(result: CheckResult, ax=None):
    """Max deviation from the delayed sums per step: the tree relay (round-off), same-step messages, a ring."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    t = np.arange(len(d["id_err"]))
    ax.semilogy(t, np.maximum(d["id_err"], 1e-17), "o-", ms=3, label="RelaySum on the chain (library)")
    ax.semilogy(t, np.maximum(d["wrong_err"], 1e-17), "s-", ms=3, label="same-step messages (wrong relay)")
    ax.semilogy(t, np.maximum(d["ring_err"], 1e-17), "^-", ms=3, label="relaying on a ring (cycle)")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"$\max_i\|s_i^t-\sum_k y_k^{t-\tau_{ik}}\|_\infty$")
    ax.set_title("C4: the RelaySum identity, and two ways to break it")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
