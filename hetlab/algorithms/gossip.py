r"""Decentralized (gossip) methods on stacked worker models ``X [n, d]``.

Workers talk only to neighbours, through ``comm.mix(X, W)`` with the topology's mixing matrix
:math:`W^{(t)}` (or, for RelaySGD, point-to-point messages along tree edges). Federated learning
is the special case :math:`W=J` (the complete graph). All methods optimise the *uniform* average
:math:`f=\frac1n\sum_if_i` (a doubly stochastic :math:`W` preserves the uniform mean), so the
problem's client weights must be uniform. The evaluated model is :math:`\bar x=\frac1n\sum_ix_i`.

The two orderings of D-SGD are different algorithms with different fixed points (THEORY §C):

* ``dsgd_atc`` ("gradient then gossip", Koloskova et al. 2020): :math:`X^{t+1}=W(X^t-\eta G(X^t))`;
* ``dsgd_parallel`` (Lian et al. 2017; Zhu et al. 2023): :math:`X^{t+1}=WX^t-\eta G(X^t)`.
"""
from __future__ import annotations

import torch

from .base import Method, check_local_lr, check_x0


def _check_uniform(problem, name):
    w = problem.weights
    if (w - 1.0 / getattr(problem, "n_global", problem.n)).abs().max() > 1e-12:
        raise ValueError(f"{name}: decentralized methods minimise the uniform average of the f_i; "
                         "build the problem with uniform client weights")


def _check_topology(topology, problem, name):
    n = getattr(problem, "n_global", problem.n)  # a distributed shard holds a block of the workers
    if topology.n != n:
        raise ValueError(f"{name}: the topology has {topology.n} nodes but the problem has {n} workers")


class _Gossip(Method):
    def __init__(self, lr: float, topology, check_stability: bool = True):
        self.lr, self.topology, self.check_stability = float(lr), topology, check_stability

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["topology"] = self.topology.name
        return hp

    def _init_X(self, x0, problem):
        _check_topology(self.topology, problem, self.name)
        _check_uniform(problem, self.name)
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        x0 = check_x0(x0, problem)
        return {"X": x0.expand(problem.n, problem.d).clone(), "round": 0}

    def model(self, state):
        return state["X"].mean(0)

    def worker_models(self, state):
        return state["X"]

    def W(self, state):
        return self.topology.W(state["round"])


class DSGD(_Gossip):
    r"""Decentralized SGD in either ordering, optionally with ``local_steps`` steps between gossips (ATC only).

    ``ordering="atc"``: :math:`X\leftarrow W(X-\eta G(X))` (``local_steps`` gradient steps, then one gossip);
    ``ordering="parallel"``: :math:`X\leftarrow WX-\eta G(X)`. Names: ``dsgd_atc``, ``dsgd_parallel``.
    """

    def __init__(self, lr: float, topology, ordering: str = "atc", local_steps: int = 1, check_stability: bool = True):
        if ordering not in ("atc", "parallel"):
            raise ValueError(f"ordering must be 'atc' (gradient then gossip) or 'parallel', got {ordering!r}")
        if local_steps < 1 or (ordering == "parallel" and local_steps != 1):
            raise ValueError("local_steps must be >= 1, and 1 for the parallel ordering")
        super().__init__(lr, topology, check_stability)
        self.ordering, self.local_steps = ordering, int(local_steps)
        self.name = f"dsgd_{ordering}"

    def init(self, x0, problem):
        return self._init_X(x0, problem)

    def step(self, state, oracle, comm, generator):
        X, W = state["X"], self.W(state)
        if self.ordering == "atc":
            for _ in range(self.local_steps):
                X = X - self.lr * oracle.grad(X, None, generator)
            X = comm.mix(X, W)
        else:
            X = comm.mix(X, W) - self.lr * oracle.grad(X, None, generator)
        return {"X": X, "round": state["round"] + 1}


class _GossipMomentum(_Gossip):
    """Shared part of the momentum variants: ``beta`` and a zero momentum buffer per worker."""

    buffer = "M"

    def __init__(self, lr: float, topology, beta: float = 0.9, check_stability: bool = True):
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        super().__init__(lr, topology, check_stability)
        self.beta = float(beta)

    def init(self, x0, problem):
        s = self._init_X(x0, problem)
        s[self.buffer] = torch.zeros_like(s["X"])
        return s


class DSGDMomentum(_GossipMomentum):
    r"""D-SGD with local heavy-ball momentum (DSGDm): :math:`m_i\leftarrow\beta m_i+g_i(x_i)`,
    :math:`X\leftarrow W(X-\eta M)`. Its fixed point is D-SGD's with step :math:`\eta/(1-\beta)` (THEORY C5)."""

    name = "dsgdm"

    buffer = "M"

    def step(self, state, oracle, comm, generator):
        M = self.beta * state["M"] + oracle.grad(state["X"], None, generator)
        X = comm.mix(state["X"] - self.lr * M, self.W(state))
        return {"X": X, "M": M, "round": state["round"] + 1}


class QGDSGDm(_GossipMomentum):
    r"""Quasi-global momentum (Lin et al. 2021), in the form of the authors' training code:
    :math:`\tilde m_i=\beta\hat m_i+g_i(x_i^t)`, :math:`X^{t+1}=W(X^t-\eta\tilde M)`,
    :math:`\hat m_i\leftarrow\beta\hat m_i+(1-\beta)\frac{x_i^t-x_i^{t+1}}{\eta}` (the buffer follows the
    model change *including* gossip). Its fixed point is D-SGD's with step :math:`\eta` (THEORY C5)."""

    name = "qg_dsgdm"

    buffer = "M_hat"

    def step(self, state, oracle, comm, generator):
        X = state["X"]
        M_tilde = self.beta * state["M_hat"] + oracle.grad(X, None, generator)
        X_new = comm.mix(X - self.lr * M_tilde, self.W(state))
        M_hat = self.beta * state["M_hat"] + (1 - self.beta) * (X - X_new) / self.lr
        return {"X": X_new, "M_hat": M_hat, "round": state["round"] + 1}


class GradientTracking(_Gossip):
    r"""Gradient tracking, DIGing form (Nedić et al. 2017): :math:`X^{t+1}=WX^t-\eta Y^t`,
    :math:`Y^{t+1}=WY^t+G(X^{t+1})-G(X^t)`, :math:`Y^0=G(X^0)`. The invariant
    :math:`\mathbf1^\top Y^t=\mathbf1^\top G(X^t)` makes every fixed point consensual at :math:`x^\star`,
    whatever the heterogeneity (THEORY C3). ``Y0="zero"`` reproduces the classic initialisation bug."""

    name = "gradient_tracking"

    def __init__(self, lr: float, topology, Y0: str = "gradient", check_stability: bool = True):
        if Y0 not in ("gradient", "zero"):
            raise ValueError(f"Y0 must be 'gradient' or 'zero', got {Y0!r}")
        super().__init__(lr, topology, check_stability)
        self.Y0 = Y0

    def init(self, x0, problem):
        s = self._init_X(x0, problem)
        G = problem.grad(s["X"])
        s["Y"] = G.clone() if self.Y0 == "gradient" else torch.zeros_like(G)
        s["G"] = G
        return s

    def step(self, state, oracle, comm, generator):
        W = self.W(state)
        X_new = comm.mix(state["X"], W) - self.lr * state["Y"]
        G_new = oracle.grad(X_new, None, generator)
        Y_new = comm.mix(state["Y"], W) + G_new - state["G"]
        return {"X": X_new, "Y": Y_new, "G": G_new, "round": state["round"] + 1}


class RelaySGD(_Gossip):
    r"""RelaySGD (Vogels et al. 2021) on a spanning tree.

    Every step: :math:`y_i=x_i-\eta g_i(x_i)`; along every tree edge send
    :math:`m_{i\to j}=y_i+\sum_{k\in N(i)\setminus j}m^{\rm prev}_{k\to i}` and the count
    :math:`c_{i\to j}=1+\sum_{k\in N(i)\setminus j}c^{\rm prev}_{k\to i}`; then
    :math:`x_i=\frac1n[(n-C_i)y_i+\sum_{j\in N(i)}m_{j\to i}]` with :math:`C_i=\sum_jc_{j\to i}` (missing
    mass filled with the worker's own :math:`y_i`). Each worker then averages exactly uniformly, with
    delays :math:`\max(d(i,k)-1,0)` (the RelaySum identity); the fixed point is :math:`x^\star` on
    every worker, with no :math:`\zeta^2` bias. ``tree`` is a networkx tree or a :class:`~hetlab.topology.TreeMessaging`.
    """

    name = "relaysgd"

    def __init__(self, lr: float, tree, check_stability: bool = True):
        from ..topology.trees import TreeMessaging
        self.msg = tree if isinstance(tree, TreeMessaging) else TreeMessaging(tree)
        self.lr, self.check_stability = float(lr), check_stability

    def hyperparameters(self):
        return {"lr": self.lr, "tree_diameter": self.msg.diameter, "check_stability": self.check_stability}

    def init(self, x0, problem):
        n = getattr(problem, "n_global", problem.n)  # a distributed shard holds a block of the workers
        if self.msg.n != n:
            raise ValueError(f"{self.name}: the tree has {self.msg.n} nodes but the problem has {n} workers")
        _check_uniform(problem, self.name)
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        x0 = check_x0(x0, problem)
        return {"X": x0.expand(problem.n, problem.d).clone(),
                "messages": torch.zeros(self.msg.E, problem.d, dtype=problem.dtype),
                "counts": torch.zeros(self.msg.E, dtype=problem.dtype), "round": 0}

    def step(self, state, oracle, comm, generator):
        X = state["X"]
        n = self.msg.n  # all workers; X holds this process's rows (all of them when simulated)
        Y = X - self.lr * oracle.grad(X, None, generator)
        M, received = comm.relay(self.msg, Y, state["messages"])
        c, C = comm.relay(self.msg, torch.ones(X.shape[0], dtype=X.dtype), state["counts"])
        X_new = ((n - C)[:, None] * Y + received) / n
        return {"X": X_new, "messages": M, "counts": c, "round": state["round"] + 1}
