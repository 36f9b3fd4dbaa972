r"""Local (federated) methods: FedAvg / local SGD, FedProx and SCAFFOLD.

All share one round structure on stacked tensors:

1. the server samples clients :math:`S` (all by default) and broadcasts :math:`x`;
2. every sampled client runs its local solver from :math:`x`, all clients at once;
3. the server aggregates the pseudo-gradient :math:`\Delta=\sum_{i\in S}w_i(x-y_i)` with unbiased
   weights :math:`w_i=\frac{n}{|S|}q_i` and applies its server optimizer (:mod:`.server`).
"""
from __future__ import annotations

import torch

from .base import Method, check_local_lr, check_x0, local_steps, select_clients
from .server import ServerSGD


class _LocalMethod(Method):
    def __init__(self, server_opt=None, participation=None, check_stability=True):
        self.server_opt = server_opt if server_opt is not None else ServerSGD(1.0)
        self.participation = participation
        self.check_stability = check_stability

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["server_opt"] = repr(self.server_opt)
        return hp

    def _server_init(self, x0, problem):
        x = check_x0(x0, problem)
        return {"x": x, "round": 0, **self.server_opt.init(x)}

    def _server_apply(self, state, delta):
        sstate = {k: v for k, v in state.items() if k.startswith("server_")}
        x, sstate = self.server_opt.update(state["x"], delta, sstate)
        new = dict(state)
        new.update(sstate)
        new["x"] = x
        new["round"] = state["round"] + 1
        return new

    def _select(self, problem, generator):
        """``(rows, idx, w)``: how many rows this round works on, which clients (``None``: all) and their
        aggregation weights. The clients are drawn among all ``n`` workers; a distributed shard then keeps
        the sampled clients of its own block (``localize_clients``)."""
        return select_clients(problem, self.participation, generator)


class FedAvg(_LocalMethod):
    r"""Local SGD / FedAvg (McMahan et al. 2017): ``local_steps`` steps of size ``lr`` on every
    sampled client, then the server optimizer on the averaged model change.

    .. math:: y_i^{k+1}=y_i^k-\eta\,g_i(y_i^k),\qquad x\leftarrow x-\eta_g\sum_{i\in S}w_i\big(x-y_i^K\big).

    On quadratics with exact gradients its fixed point is
    :math:`x_{\rm FA}=(\sum_iq_iQ_i)^{-1}\sum_iq_iQ_ib_i`, :math:`Q_i=I-(I-\eta A_i)^K`, which is not
    :math:`x^\star` when Hessians and minimisers both differ, whatever :math:`\eta_g` (THEORY A1).
    """

    name = "fedavg"

    def __init__(self, lr: float, local_steps: int, server_opt=None, participation=None,
                 check_stability: bool = True):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        super().__init__(server_opt, participation, check_stability)
        self.lr, self.local_steps = float(lr), int(local_steps)

    def init(self, x0, problem):
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        return self._server_init(x0, problem)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = self._select(problem, generator)
        X = comm.broadcast(state["x"], m)
        Y = local_steps(X, oracle, idx, self.local_steps, self.lr, generator)
        # sum_S w_i (x - y_i), not x - sum_S w_i y_i: the sampled weights need not sum to one.
        # Y is local_steps' own copy: the differences overwrite it (no [n, d] allocation per round)
        return self._server_apply(state, comm.mean(torch.sub(X, Y, out=Y), w))


LocalSGD = FedAvg


class FedProx(_LocalMethod):
    r"""FedProx (Li et al. 2020): each client approximately minimises
    :math:`f_i(y)+\frac\mu2\|y-x\|^2`.

    ``solver="exact"`` uses the problem's closed-form proximal map (quadratics), giving the fixed
    point :math:`x_{\rm FP}=(\sum_iq_iP_i)^{-1}\sum_iq_iP_ib_i`, :math:`P_i=(A_i+\mu I)^{-1}A_i`
    (THEORY A3). ``solver="steps"`` runs ``local_steps`` (stochastic) gradient steps of size ``lr``
    on the proximal objective; it has a different fixed point.
    """

    name = "fedprox"

    def __init__(self, mu: float, solver: str = "exact", lr: float | None = None, local_steps: int = 1,
                 server_opt=None, participation=None, check_stability: bool = True):
        if mu <= 0:
            raise ValueError(f"the proximal weight mu must be positive, got {mu}")
        if solver not in ("exact", "steps"):
            raise ValueError(f"solver must be 'exact' or 'steps', got {solver!r}")
        if solver == "steps" and (lr is None or local_steps < 1):
            raise ValueError("solver='steps' needs a step size lr and local_steps >= 1")
        super().__init__(server_opt, participation, check_stability)
        self.mu, self.solver, self.lr, self.local_steps = float(mu), solver, lr, int(local_steps)

    def init(self, x0, problem):
        if self.solver == "exact" and not hasattr(problem, "prox"):
            raise TypeError(f"{type(problem).__name__} has no closed-form proximal map; use solver='steps'")
        if self.solver == "steps":
            check_local_lr(self.name, self.lr, problem, self.check_stability, extra=self.mu)
        return self._server_init(x0, problem)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = self._select(problem, generator)
        X = comm.broadcast(state["x"], m)
        if self.solver == "exact":
            if oracle.stochastic:
                raise ValueError("FedProx(solver='exact') computes the exact proximal point; "
                                 "use solver='steps' with a stochastic oracle")
            Y = problem.prox(X, self.mu, idx)
        else:
            Y = local_steps(X, oracle, idx, self.local_steps, self.lr, generator,
                            prox_center=X, prox_mu=self.mu)
        return self._server_apply(state, comm.mean(X - Y, w))


class Scaffold(_LocalMethod):
    r"""SCAFFOLD (Karimireddy et al. 2020), options I and II, full or partial participation.

    State: server model :math:`x`, server control :math:`c`, client controls :math:`c_i` (``[n, d]``)
    with the invariant :math:`c=\sum_iq_ic_i`. A sampled client runs
    :math:`y\leftarrow y-\eta_l(g_i(y)-c_i+c)` for :math:`K` steps, then

    * option I: :math:`c_i^+=g_i(x)` (a fresh gradient at the server model);
    * option II: :math:`c_i^+=c_i-c+\frac{x-y}{K\eta_l}`.

    The server moves :math:`x` with its optimizer on :math:`\Delta=-\sum_{i\in S}w_i(y_i-x)` and sets
    :math:`c\leftarrow c+\sum_{i\in S}q_i(c_i^+-c_i)` – weights :math:`q_i` (``1/n``), *not* the mean over
    :math:`S`, which keeps the invariant under partial participation (THEORY A4 pitfall 1).
    ``warm_start=True`` initialises :math:`c_i=\nabla f_i(x^0)` (exact local gradients), else zero.
    """

    name = "scaffold"

    def __init__(self, lr: float, local_steps: int, option: str = "II", server_opt=None,
                 participation=None, warm_start: bool = True, check_stability: bool = True):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        option = str(option).upper()
        if option not in ("I", "II"):
            raise ValueError(f"option must be 'I' or 'II', got {option!r}")
        super().__init__(server_opt, participation, check_stability)
        self.lr, self.local_steps, self.option, self.warm_start = float(lr), int(local_steps), option, warm_start

    def init(self, x0, problem):
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        state = self._server_init(x0, problem)
        if self.warm_start:
            ci = problem.local_grads(state["x"]).clone()
        else:
            ci = torch.zeros(problem.n, problem.d, dtype=problem.dtype, device=state["x"].device)
        state["c_i"] = ci
        # c = sum_i q_i c_i over *all* clients (global_grad is a collective on a distributed shard)
        state["c"] = problem.global_grad(state["x"]).clone() if self.warm_start else torch.zeros_like(state["x"])
        return state

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = self._select(problem, generator)
        x, c = state["x"], state["c"]
        ci = state["c_i"] if idx is None else state["c_i"][idx]
        X = comm.broadcast(x, m)
        Y = local_steps(X, oracle, idx, self.local_steps, self.lr, generator, drift=c - ci)
        if self.option == "I":
            ci_new = oracle.grad(X, idx, generator)
        else:
            ci_new = ci - c + (X - Y) / (self.local_steps * self.lr)
        q = problem.weights if idx is None else problem.weights[idx]
        new = self._server_apply(state, comm.mean(X - Y, w))
        new["c"] = c + comm.mean(ci_new - ci, q)  # q (not the mean over S): keeps c = sum_i q_i c_i
        if idx is None:
            new["c_i"] = ci_new
        else:
            new["c_i"] = state["c_i"].index_copy(0, idx, ci_new)
        return new
