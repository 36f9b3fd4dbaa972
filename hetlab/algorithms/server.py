r"""Server optimizers: turn the round's pseudo-gradient into a server update.

A local method produces the pseudo-gradient :math:`\Delta=\sum_{i\in S}w_i(x-y_i)` (the negative
average model change). A server optimizer maps :math:`(x,\Delta)` to the new model, so FedAvg,
FedAvgM and FedAdam (Reddi et al. 2021) are one local method composed with three server
optimizers. Each has ``init(x) -> dict`` and ``update(x, delta, state) -> (x_new, state)``; state
keys are prefixed ``"server_"`` inside the method state.
"""
from __future__ import annotations

import torch


class ServerSGD:
    r""":math:`x\leftarrow x-\eta_g\Delta` (``lr = 1`` is plain model averaging)."""

    def __init__(self, lr: float = 1.0):
        if lr <= 0:
            raise ValueError(f"server lr must be positive, got {lr}")
        self.lr = float(lr)

    def init(self, x):
        return {}

    def update(self, x, delta, state):
        return x - self.lr * delta, state

    def __repr__(self):
        return f"ServerSGD(lr={self.lr})"


class ServerMomentum:
    r"""Heavy-ball server momentum (FedAvgM): :math:`m\leftarrow\beta m+\Delta`,
    :math:`x\leftarrow x-\eta_g m` (Nesterov: :math:`x\leftarrow x-\eta_g(\Delta+\beta m)`)."""

    def __init__(self, lr: float = 1.0, beta: float = 0.9, nesterov: bool = False):
        if lr <= 0 or not 0 <= beta < 1:
            raise ValueError(f"need lr > 0 and 0 <= beta < 1, got lr={lr}, beta={beta}")
        self.lr, self.beta, self.nesterov = float(lr), float(beta), bool(nesterov)

    def init(self, x):
        return {"server_m": torch.zeros_like(x)}

    def update(self, x, delta, state):
        m = self.beta * state["server_m"] + delta
        step = delta + self.beta * m if self.nesterov else m
        return x - self.lr * step, {"server_m": m}

    def __repr__(self):
        return f"ServerMomentum(lr={self.lr}, beta={self.beta}, nesterov={self.nesterov})"


class ServerAdam:
    r"""Adam on the pseudo-gradient (FedAdam), with bias correction:
    :math:`m\leftarrow\beta_1m+(1-\beta_1)\Delta`, :math:`v\leftarrow\beta_2v+(1-\beta_2)\Delta^2`,
    :math:`x\leftarrow x-\eta_g\hat m/(\sqrt{\hat v}+\epsilon)`."""

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-8):
        if lr <= 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1) or eps <= 0:
            raise ValueError("ServerAdam needs lr > 0, betas in [0, 1) and eps > 0")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)

    def init(self, x):
        return {"server_m": torch.zeros_like(x), "server_v": torch.zeros_like(x),
                "server_t": torch.zeros((), dtype=x.dtype)}

    def update(self, x, delta, state):
        t = state["server_t"] + 1
        m = self.beta1 * state["server_m"] + (1 - self.beta1) * delta
        v = self.beta2 * state["server_v"] + (1 - self.beta2) * delta * delta
        mhat = m / (1 - self.beta1 ** t)
        vhat = v / (1 - self.beta2 ** t)
        return x - self.lr * mhat / (vhat.sqrt() + self.eps), {"server_m": m, "server_v": v, "server_t": t}

    def __repr__(self):
        return f"ServerAdam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, eps={self.eps})"
