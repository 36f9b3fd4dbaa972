r"""Centralised baselines on the stacked interface: gradient descent and minibatch SGD."""
from __future__ import annotations

from .base import Method, check_x0, num_participants, select_clients


class MinibatchSGD(Method):
    r"""Minibatch SGD: every (sampled) worker computes ``batches`` stochastic gradients at the
    common model, the server averages them and takes one step,

    .. math:: x\leftarrow x-\eta\sum_{i\in S}w_i\frac1{B}\sum_{k=1}^{B}g_i^{(k)}(x).

    With exact gradients this is gradient descent on :math:`f`. Woodworth et al. (2020) compare
    local SGD against it at the same number of gradient evaluations (``batches = K``).
    """

    name = "minibatch_sgd"

    def __init__(self, lr: float, batches: int = 1, participation=None, check_stability: bool = True):
        if batches < 1:
            raise ValueError(f"batches must be >= 1, got {batches}")
        self.lr, self.batches, self.participation = float(lr), int(batches), participation
        self.check_stability = check_stability

    def init(self, x0, problem):
        self._m = num_participants(problem.n, self.participation)
        L = getattr(problem, "L_global", getattr(problem, "L", None))
        if self.check_stability and L is not None:
            from .._validation import check_step_size
            check_step_size(self.name, self.lr, L)
        return {"x": check_x0(x0, problem), "round": 0}

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = select_clients(problem, self.participation, generator)
        X = comm.broadcast(state["x"], m)
        G = sum(oracle.grad(X, idx, generator) for _ in range(self.batches)) / self.batches
        g = comm.mean(G, w)
        return {"x": state["x"] - self.lr * g, "round": state["round"] + 1}


class GD(MinibatchSGD):
    """Full gradient descent on the global objective (exact oracle, all workers)."""

    name = "gd"

    def __init__(self, lr: float, check_stability: bool = True):
        super().__init__(lr, 1, None, check_stability)

    def step(self, state, oracle, comm, generator):
        from ..problems.oracles import Oracle
        return super().step(state, Oracle(oracle.problem), comm, generator)
