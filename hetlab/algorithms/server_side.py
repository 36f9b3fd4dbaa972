r"""Server-side diversity rules: FedAWARE (THEORY E3).

FedAWARE (Zeng et al., official ``fedaware.py``): client pseudo-gradients :math:`\Delta_i=x-y_i^K`,
per-client momentum for the sampled clients :math:`m_i\leftarrow(1-\alpha)m_i+\alpha\Delta_i`, normalised
:math:`\hat m_i=m_i/\|m_i\|` (zero vectors unchanged), min-norm weights
:math:`\lambda^\star=\arg\min_{\lambda\in\Delta^{n-1}}\|\sum_i\lambda_i\hat m_i\|^2`, direction
:math:`d=\sum_i\lambda^\star_i\hat m_i`, update :math:`x\leftarrow x-\eta_gd` (optionally rescaled by the
projection :math:`d\leftarrow\frac{\langle d_{\rm avg},d\rangle}{\|d\|^2}d`).

Since :math:`\|\hat m_i\|=1`, the weighted diversity :math:`\sum_i\lambda_i\|\hat m_i\|^2/\|\sum_i\lambda_i\hat m_i\|^2
=1/\|d(\lambda)\|^2`, so :math:`\lambda^\star` maximises it. The QP is solved **exactly** by enumerating
supports (:func:`min_norm_simplex`); Frank–Wolfe (the public code's solver) is kept for cross-checks.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .base import (Method, aggregation_weights, check_x0, num_participants, refuse_sharded_sampling,
                   sample_clients)
from .base import local_steps as _local_steps


def _as_np(V):
    return V.detach().cpu().numpy().astype(np.float64) if isinstance(V, torch.Tensor) else np.asarray(V, dtype=np.float64)


def min_norm_simplex(V, max_exact: int = 14, tol: float = 1e-12) -> np.ndarray:
    r"""Exact :math:`\lambda^\star=\arg\min_{\lambda\in\Delta^{m-1}}\|\lambda^\top V\|^2` for rows ``V [m, d]``.

    Enumerates supports ``S``: on each, the KKT system :math:`[G_S\ \mathbf 1;\mathbf 1^\top\ 0]` (with
    :math:`G=VV^\top`) is solved when non-singular (affinely independent rows; by Carathéodory some optimum
    has such a support); among the non-negative solutions the smallest objective wins. ``m <= max_exact``.
    """
    V = _as_np(V)
    m = V.shape[0]
    if m == 0:
        raise ValueError("need at least one vector")
    if m > max_exact:
        raise ValueError(f"exact enumeration limited to m <= {max_exact} vectors, got {m}; use frank_wolfe_min_norm")
    G = V @ V.T
    scale = max(float(np.max(np.abs(G))), 1e-300)
    best, best_val = None, np.inf
    for k in range(1, min(m, V.shape[1] + 1) + 1):
        for S in itertools.combinations(range(m), k):
            S = list(S)
            K = np.zeros((k + 1, k + 1))
            K[:k, :k] = G[np.ix_(S, S)]
            K[:k, k] = 1.0
            K[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            if np.linalg.cond(K) > 1e12:
                continue
            sol = np.linalg.solve(K, rhs)
            lam_S = sol[:k]
            if lam_S.min() < -tol:
                continue
            lam = np.zeros(m)
            lam[S] = np.clip(lam_S, 0.0, None)
            lam /= lam.sum()
            val = float(lam @ G @ lam)
            if val < best_val - 1e-15 * scale:
                best, best_val = lam, val
    return best


def frank_wolfe_min_norm(V, iters: int = 2000, variant: str = "pairwise") -> np.ndarray:
    """Frank–Wolfe with exact line search for the simplex min-norm problem.

    ``variant="vanilla"`` is the public code's solver (sublinear O(1/t): about 3e-4 objective gap after 2000
    iterations on THEORY E3's instance); ``"pairwise"`` moves weight from the worst support vertex to the FW
    vertex and converges linearly on the simplex (used for the 1e-6 cross-check)."""
    if variant not in ("vanilla", "pairwise"):
        raise ValueError(f"variant must be 'vanilla' or 'pairwise', got {variant!r}")
    V = _as_np(V)
    m = V.shape[0]
    lam = np.full(m, 1.0 / m)
    for _ in range(iters):
        d = lam @ V
        s = V @ d
        j = int(np.argmin(s))
        if variant == "vanilla":
            diff, gmax, a = V[j] - d, 1.0, None
        else:
            supp = np.flatnonzero(lam > 0)
            a = int(supp[np.argmax(s[supp])])
            diff, gmax = V[j] - V[a], lam[a]
        den = diff @ diff
        if den <= 0:
            break
        gamma = float(np.clip(-(d @ diff) / den, 0.0, gmax))
        if gamma == 0.0:
            break
        if variant == "vanilla":
            lam = (1 - gamma) * lam
        else:
            lam = lam.copy()
            lam[a] -= gamma
            if a == j:
                continue
        lam[j] += gamma
    return lam


def kkt_residuals(V, lam) -> tuple[float, float, float]:
    r"""KKT of the simplex min-norm problem: returns ``(min_i <d, v_i> - ||d||^2, max_{i in supp} |<d, v_i> - ||d||^2|,
    simplex violation)``. Optimality iff the first is >= 0 and the second is 0 (up to round-off)."""
    V, lam = _as_np(V), np.asarray(lam, dtype=np.float64)
    d = lam @ V
    s = V @ d - d @ d
    supp = lam > 1e-12
    feas = max(float(-lam.min()), abs(float(lam.sum()) - 1.0))
    return float(s.min()), float(np.abs(s[supp]).max()), feas


def two_vector_alpha(u, v) -> float:
    r""":math:`\alpha^\star=\mathrm{clip}(\langle v-u,v\rangle/\|u-v\|^2,0,1)` minimising :math:`\|\alpha u+(1-\alpha)v\|`."""
    u, v = _as_np(u), _as_np(v)
    den = float((u - v) @ (u - v))
    if den == 0.0:
        return 0.5
    return float(np.clip((v - u) @ v / den, 0.0, 1.0))


def weighted_diversity(V, lam) -> float:
    r""":math:`\sum_i\lambda_i\|v_i\|^2/\|\sum_i\lambda_iv_i\|^2` (``inf`` when the combination vanishes)."""
    V, lam = _as_np(V), np.asarray(lam, dtype=np.float64)
    d = lam @ V
    den = float(d @ d)
    return float(lam @ (V * V).sum(1)) / den if den > 0 else np.inf


def normalize_rows(M: torch.Tensor) -> torch.Tensor:
    """Rows divided by their norms; zero rows stay zero."""
    nrm = M.norm(dim=1, keepdim=True)
    return torch.where(nrm > 0, M / torch.where(nrm > 0, nrm, torch.ones_like(nrm)), M)


def fedaware_direction(M: torch.Tensor, solver: str = "exact", fw_iters: int = 2000):
    r"""Min-norm direction of the normalised rows of ``M`` (zero rows excluded). Returns ``(d, lambda)``."""
    Mh = normalize_rows(M)
    active = (M.norm(dim=1) > 0).nonzero().flatten()
    lam = torch.zeros(M.shape[0], dtype=M.dtype)
    if active.numel() == 0:
        return torch.zeros(M.shape[1], dtype=M.dtype), lam
    Va = Mh[active]
    la = min_norm_simplex(Va) if solver == "exact" else frank_wolfe_min_norm(Va, fw_iters)
    lam[active] = torch.as_tensor(la, dtype=M.dtype)
    return lam @ Mh, lam


class FedAWARE(Method):
    r"""FedAWARE server rule on top of a local solver.

    ``local`` maps ``(X [rows, d], oracle, idx, generator) -> Y`` (the clients' local models); by default
    ``local_steps`` local GD/SGD steps of size ``lr`` (FedAvg's client). Any local method's client update can
    be passed, so the rule composes with their pseudo-gradients :math:`\Delta_i=x-y_i`. Clients never sampled
    keep a zero momentum and get weight 0. ``projection=True`` rescales :math:`d` onto the FedAvg-weighted
    average of the momenta; a direction shorter than ``zero_tol`` (the momenta are normalised to unit
    length, so this is relative) is treated as exactly zero, not rescaled: rounding noise at a point
    where no common descent direction exists must not be amplified into a step.
    ``server_opt`` (a :mod:`hetlab.algorithms.server` optimizer) receives :math:`d` as the round's
    pseudo-gradient, so FedAWARE composes with server momentum or Adam; by default
    ``ServerSGD(server_lr)``, i.e. :math:`x\leftarrow x-\eta_gd`.
    """

    name = "fedaware"

    def __init__(self, lr: float = 0.1, local_steps: int = 1, server_lr: float = 1.0, alpha: float = 0.5,
                 projection: bool = False, participation=None, solver: str = "exact", local=None,
                 server_opt=None, zero_tol: float = 1e-10):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
        if solver not in ("exact", "frank_wolfe"):
            raise ValueError(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}")
        if server_lr <= 0:
            raise ValueError(f"server_lr must be positive, got {server_lr}")
        self.lr, self.local_steps, self.server_lr, self.alpha = float(lr), int(local_steps), float(server_lr), float(alpha)
        self.projection, self.participation, self.solver = bool(projection), participation, solver
        self.local = local
        from .server import ServerSGD
        self.server_opt = server_opt if server_opt is not None else ServerSGD(self.server_lr)
        self.zero_tol = float(zero_tol)

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["server_opt"] = repr(self.server_opt)
        return hp

    def init(self, x0, problem):
        x = check_x0(x0, problem)
        return {"x": x, "round": 0, "momenta": torch.zeros(problem.n, problem.d, dtype=problem.dtype),
                "weights_lambda": torch.zeros(problem.n, dtype=problem.dtype), **self.server_opt.init(x)}

    def _local(self, X, oracle, idx, generator):
        if self.local is not None:
            return self.local(X, oracle, idx, generator)
        return _local_steps(X, oracle, idx, self.local_steps, self.lr, generator)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m = num_participants(problem.n, self.participation)
        refuse_sharded_sampling(problem, self.name, m < problem.n)
        idx = sample_clients(problem.n, m, generator)
        X = comm.broadcast(state["x"], m)
        D = comm.gather(X - self._local(X, oracle, idx, generator))
        Mom = state["momenta"].clone()
        rows = torch.arange(problem.n) if idx is None else idx
        Mom[rows] = (1 - self.alpha) * Mom[rows] + self.alpha * D
        d, lam = fedaware_direction(Mom, self.solver)
        if float(d.norm()) <= self.zero_tol:
            d = torch.zeros_like(d)
        elif self.projection:
            w = aggregation_weights(problem, None, problem.n)
            d_avg = w @ Mom
            d = (d_avg @ d) / (d @ d) * d
        new = dict(state)
        sstate = {k: v for k, v in state.items() if k.startswith("server_")}
        new["x"], sstate = self.server_opt.update(state["x"], d, sstate)
        new.update(sstate)
        new["momenta"] = Mom
        new["weights_lambda"] = lam
        new["round"] = state["round"] + 1
        return new
