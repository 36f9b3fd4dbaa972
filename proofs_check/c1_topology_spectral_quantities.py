"""C1 `topology_spectral_quantities`: spectral quantities of gossip matrices in closed form."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np

from hetlab import closed_forms_gossip as cfg
from hetlab import topology as topo
from hetlab.topology import spectral

from ._base import CheckResult, Criterion, Timer

ID = "C1"
NAME = "topology_spectral_quantities"
CLAIM = ("rho = ||W - J||_2 has closed forms: ring (1+2cos(2pi/n))/3, torus (3+2cos(2pi/m))/5, hypercube and "
         "static exponential graph 1 - 2/(log2 n + 1), star 1 - 1/n and chain (1+2cos(pi/n))/3 with Metropolis "
         "weights, complete graph 0; every matrix is doubly stochastic; one period of the one-peer exponential "
         "schedule multiplies to J exactly; the ring's gap 1 - rho ~ 4 pi^2/(3 n^2).")
SOURCE = ("standard spectral graph facts; Ying et al. 2021 for exponential graphs (THEORY.md C1, closed forms "
          "derived and verified)")

NS = (8, 16, 32, 64)
TORUS_SIDES = (4, 6, 8)
NEAR_PERIODIC_SELF_WEIGHT = 0.02  # ring with self weight 0.02: eigenvalue 2a - 1 = -0.96


def _spectrum_error(numeric, predicted) -> float:
    """Max distance between two multisets of (possibly complex) eigenvalues, matched after sorting."""
    def key(v):
        v = np.asarray(v, dtype=complex)
        order = np.lexsort((np.round(v.imag, 9), np.round(v.real, 9)))
        return v[order]
    a, b = key(numeric), key(predicted)
    if a.shape != b.shape:
        return math.inf
    return float(np.max(np.abs(a - b)))


def _eigs(W, symmetric=True):
    return np.linalg.eigvalsh(W) if symmetric else np.linalg.eigvals(W)


def _families():
    """(family, n, W, symmetric, rho formula, eigenvalue formula) for every size of the experiment."""
    out = []
    for n in NS:
        out += [
            ("ring", n, topo.make_topology("ring", n).W_numpy(), True, cfg.ring_rho(n), cfg.ring_eigenvalues(n)),
            ("hypercube", n, topo.make_topology("hypercube", n).W_numpy(), True, cfg.hypercube_rho(n),
             cfg.hypercube_eigenvalues(n)),
            ("static exponential", n, topo.make_topology("exponential", n).W_numpy(), False,
             cfg.static_exponential_rho(n), cfg.static_exponential_eigenvalues(n)),
            ("star", n, topo.make_topology("star", n).W_numpy(), True, cfg.star_rho(n), cfg.star_eigenvalues(n)),
            ("chain", n, topo.make_topology("chain", n).W_numpy(), True, cfg.chain_rho(n), cfg.chain_eigenvalues(n)),
            ("complete", n, topo.make_topology("complete", n).W_numpy(), True, cfg.complete_rho(n),
             np.concatenate([[1.0], np.zeros(n - 1)])),
        ]
    for m in TORUS_SIDES:
        out.append(("torus", m * m, topo.make_topology("torus", m * m).W_numpy(), True, cfg.torus_rho(m),
                    cfg.torus_eigenvalues(m)))
    return out


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        rng = np.random.default_rng(seed)
        fams = _families()
        rho_err, eig_err, sums_err = {}, {}, 0.0
        curves = {}
        for fam, n, W, sym, rho_pred, eig_pred in fams:
            rho_num = spectral.rho(W)  # largest singular value of W - J (also for the directed exponential graph)
            rho_err[fam] = max(rho_err.get(fam, 0.0), abs(rho_num - rho_pred))
            eig_err[fam] = max(eig_err.get(fam, 0.0), _spectrum_error(_eigs(W, sym), eig_pred))
            sums_err = max(sums_err, np.abs(W.sum(0) - 1).max(), np.abs(W.sum(1) - 1).max())
            curves.setdefault(fam, []).append((n, 1 - rho_num, 1 - rho_pred))
        # p = 1 - rho^2: ||W X - J X||_F^2 <= (1 - p) ||X - J X||_F^2, with equality along the top singular vector
        p_ratio_worst, p_attained, p_lib_err = 0.0, 0.0, 0.0
        for fam, n, W, sym, rho_pred, _ in fams:
            if n != 16:
                continue
            J = cfg.consensus_matrix(n)
            X = rng.standard_normal((n, 3))
            Xc = X - J @ X
            ratio = np.linalg.norm(W @ X - J @ X) ** 2 / np.linalg.norm(Xc) ** 2
            p = cfg.p_koloskova(rho_pred)
            p_ratio_worst = max(p_ratio_worst, ratio - (1 - p))
            if rho_pred > 0:
                v = np.linalg.svd(W - J)[2][0]
                att = np.linalg.norm((W - J) @ v) ** 2 / (1 - p)
                p_attained = max(p_attained, abs(att - 1))
            p_lib_err = max(p_lib_err, abs(spectral.p_koloskova(W) - p))
        # one-peer exponential: the product over any window of tau consecutive steps is J; per-step rho
        onepeer_err, step_rho_err, sched_rho = 0.0, 0.0, 0.0
        for n in NS:
            sched = topo.one_peer_exponential(n)
            tau = len(sched)
            for start in range(tau):
                P = np.eye(n)
                for s in range(start, start + tau):
                    P = sched[s % tau] @ P
                onepeer_err = max(onepeer_err, np.abs(P - cfg.one_peer_period_product(n)).max())
            for k, Wk in enumerate(sched):
                sums_err = max(sums_err, np.abs(Wk.sum(0) - 1).max(), np.abs(Wk.sum(1) - 1).max())
                step_rho_err = max(step_rho_err, abs(spectral.rho(Wk) - cfg.one_peer_step_rho(n, k)))
            sched_rho = max(sched_rho, topo.make_topology("one_peer_exponential", n).rho)
        # ring asymptotics
        ring_ratio = {n: (1 - topo.make_topology("ring", n).rho) / cfg.ring_gap_asymptotic(n) for n in NS}
        ring_ratio_exact = max(abs(ring_ratio[n] - cfg.ring_gap(n) / cfg.ring_gap_asymptotic(n)) for n in NS)
        ratios = [ring_ratio[n] for n in NS]
        # spectral gap vs 1 - lambda_2: a ring with self weight 0.02 has eigenvalue 2a - 1 = -0.96
        n0, a0 = 8, NEAR_PERIODIC_SELF_WEIGHT
        adj = nx.to_numpy_array(topo.ring(n0), nodelist=range(n0))
        W_near = a0 * np.eye(n0) + (1 - a0) / 2 * adj
        gap_near = topo.spectral_gap(W_near)
        oml2_near = topo.one_minus_lambda2(W_near)
        # the periodic ring (weight 1/2 on neighbours, 0 on self, even n): rho = 1, gossip never mixes
        W_per = adj / 2
        rho_per = spectral.rho(W_per)
        # a real social network (no closed form): Zachary's karate club with Metropolis weights
        karate = topo.make_topology("social", 34, network="karate")
        crit = [
            *[Criterion(f"{fam}: max_n |rho_numeric - rho_formula|", err, 0.0, 1e-12, "<=")
              for fam, err in rho_err.items()],
            *[Criterion(f"{fam}: whole spectrum = closed form (max deviation)", err, 0.0, 1e-12, "<=")
              for fam, err in eig_err.items()],
            Criterion("row and column sums of every W equal 1 (max deviation)", sums_err, 0.0, 1e-14, "<="),
            Criterion("one-peer exponential: product over any tau consecutive steps = J (max entry error)",
                      onepeer_err, 0.0, 1e-14, "<="),
            Criterion("one-peer exponential: per-step rho = cos(pi/n) for k = 0, 1 for k >= 1", step_rho_err, 0.0,
                      1e-12, "<="),
            Criterion("one-peer exponential: Topology.rho over one period = 0", sched_rho, 0.0, 1e-14, "<="),
            Criterion("p = 1 - rho^2 bounds the one-step contraction (max excess over random X, n=16)",
                      p_ratio_worst, 0.0, 1e-12, "<="),
            Criterion("library p_koloskova(W) = 1 - rho_formula^2 (n=16, max deviation)", p_lib_err, 0.0, 1e-12,
                      "<="),
            Criterion("p = 1 - rho^2 is attained along the top singular vector (n=16)", p_attained, 0.0, 1e-10, "<="),
            Criterion("ring asymptotics: (1 - rho)/(4 pi^2/(3 n^2)) at n = 64", ring_ratio[64], 1.0, 1e-3, "abs"),
            Criterion("ring asymptotics: ratio = sin^2(pi/n)/(pi/n)^2 exactly (max deviation)", ring_ratio_exact,
                      0.0, 1e-9, "<="),
            Criterion("ring asymptotics: ratio increases with n (min successive difference)",
                      min(np.diff(ratios)), None, 0.0, ">="),
            Criterion("near-periodic ring (a = 0.02, n = 8): 1 - rho = 1 - |2a - 1|", gap_near,
                      1 - cfg.ring_rho(n0, a0), 1e-12, "abs"),
            Criterion("near-periodic ring: 1 - lambda_2 = (1 - a)(1 - cos(2 pi/n))", oml2_near,
                      cfg.ring_one_minus_lambda2(n0, a0), 1e-12, "abs"),
            Criterion("periodic ring (self weight 0, n = 8): rho = 1 (eigenvalue -1)", rho_per,
                      cfg.ring_rho(n0, 0.0), 1e-12, "abs"),
            Criterion("karate club (Metropolis): 1 - rho in (0, 1)", min(karate.spectral_gap, 1 - karate.spectral_gap),
                      None, 1e-6, ">="),
            Criterion("[control] periodic ring mixes: rho < 1", rho_per, None, 1 - 1e-12, "<=", negative=True),
            Criterion("[control] 1 - lambda_2 equals the spectral gap 1 - rho (near-periodic ring)", oml2_near,
                      gap_near, 1e-12, "abs", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"curves": {k: np.array(v) for k, v in curves.items()}, "ring_ratio": ring_ratio,
                             "karate": (34, karate.spectral_gap), "near_periodic": (gap_near, oml2_near),
                             "rho_periodic": rho_per})


_STYLE = {"ring": "o", "torus": "s", "hypercube": "^", "static exponential": "v", "star": "D", "chain": "<",
          "complete": "*"}


def figure(result: CheckResult, ax=None):
    """1 - rho against n: markers measured (``hetlab.topology``), lines the closed forms."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    for fam, arr in d["curves"].items():
        n, meas, pred = arr[:, 0], arr[:, 1], arr[:, 2]
        line, = ax.plot(n, pred, "-", lw=1)
        ax.plot(n, meas, _STYLE.get(fam, "o"), ms=5, color=line.get_color(), label=fam)
    n_all = np.array(NS, dtype=float)
    ax.plot(n_all, np.ones_like(n_all), "x", ms=9, color="k",
            label="one-peer exp. (per period of log2 n steps)")
    nk, gk = d["karate"]
    ax.plot([nk], [gk], "P", ms=9, color="m", label="karate club (Metropolis)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of workers n")
    ax.set_ylabel(r"spectral gap $1-\rho$")
    ax.set_title("C1: 1 - rho, measured (markers) vs closed form (lines)")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    return ax
