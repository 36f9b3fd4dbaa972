r"""Asynchronous SGD with bounded staleness (THEORY E2; Stich, Mohtashami & Jaggi 2021).

Workers read the server model, compute a stochastic gradient and send it back; by the time it arrives
the server has moved on by :math:`\tau_t` steps. The server applies

.. math:: x_{t+1}=x_t-\eta\,\frac1{m}\sum_{i\in S_t}g_i\big(x_{t-\tau_t}\big),

with :math:`S_t` a set of ``batch`` clients drawn uniformly without replacement (one client per step
is classic asynchronous SGD; a client is a data point when the problem has one row per client) and
the delay :math:`\tau_t` either fixed (``delays="fixed"``: :math:`\tau_t=\min(\tau, t)`) or uniform on
:math:`\{0,\dots,\tau\}` (``"uniform"``, capped at :math:`t`). The state keeps the last
:math:`\tau+1` models (``state["history"][k]`` is :math:`x_{t-k}`); before step :math:`\tau` the oldest
available model (the start point) stands in.

With ``max_delay=0`` this is :class:`~hetlab.algorithms.MinibatchSGD` with ``participation=batch``.
The exact mean-square rate of the fixed-delay method on interpolating least squares is
:func:`hetlab.closed_forms_batch.delayed_ms_rate`.
"""
from __future__ import annotations

import torch

from .base import Method, check_x0, num_participants, select_clients

__all__ = ["AsyncSGD"]


class AsyncSGD(Method):
    """SGD whose gradients are computed at models ``tau_t <= max_delay`` steps old (name ``async_sgd``)."""

    name = "async_sgd"

    def __init__(self, lr: float, max_delay: int, batch: int = 1, delays: str = "fixed"):
        if not float(lr) > 0:
            raise ValueError(f"async_sgd: lr must be positive, got {lr}")
        if isinstance(max_delay, bool) or int(max_delay) != max_delay or max_delay < 0:
            raise ValueError(f"async_sgd: max_delay must be a non-negative integer, got {max_delay}")
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise ValueError(f"async_sgd: batch must be a positive integer (clients per step), got {batch}")
        if delays not in ("fixed", "uniform"):
            raise ValueError(f"async_sgd: delays must be 'fixed' or 'uniform', got {delays!r}")
        self.lr, self.max_delay, self.batch, self.delays = float(lr), int(max_delay), int(batch), delays

    def init(self, x0, problem):
        num_participants(problem.n, self.batch)  # validates batch <= n
        x0 = check_x0(x0, problem)
        return {"x": x0, "history": x0.expand(self.max_delay + 1, problem.d).clone(), "round": 0}

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        t, hist = state["round"], state["history"]
        if self.delays == "fixed":
            tau = self.max_delay
        else:
            tau = int(torch.randint(self.max_delay + 1, (1,), generator=generator))
        stale = hist[min(tau, t, self.max_delay)]
        m, idx, w = select_clients(problem, self.batch, generator)
        G = oracle.grad(comm.broadcast(stale, m), idx, generator)
        x = state["x"] - self.lr * comm.mean(G, w)
        return {"x": x, "history": torch.cat([x[None], hist[:-1]]), "round": t + 1}
