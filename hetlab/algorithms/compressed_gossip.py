r"""Decentralized methods whose gossip messages are compressed (THEORY C8).

Every worker sends one compressed message per round to all its neighbours (the same message to
each); ``state["bits"]`` counts the bits of these messages summed over workers (one message per
worker per round, as for the server-based methods of :mod:`hetlab.algorithms.compressed`), and
``state["round_bits"]`` those of the last round. Multiply by the degree for per-edge traffic.

* :class:`ChocoSGD` (Koloskova, Stich & Jaggi 2019). Each worker keeps a public copy
  :math:`\hat x_i` that all its neighbours also hold; only the compressed correction travels:

  .. math::
      X^{+\frac12}=X-\eta G(X),\quad Q=C(X^{+\frac12}-\hat X),\quad \hat X\leftarrow\hat X+Q,\quad
      X\leftarrow X^{+\frac12}+\gamma(W-I)\hat X.

  It takes a *contractive* (biased) compressor; the unbiased scaled rand-k makes it diverge
  (THEORY C8 pitfall 2). Like D-SGD it keeps an :math:`O(\eta)` heterogeneity floor: its fixed
  points are not consensual at :math:`x^\star` when the local minimisers differ.

* :class:`LEAD` (Liu, Li, Wang, Tang & Yan, ICLR 2021), a linearly convergent compressed
  primal–dual method. hetlab uses it as the **stand-in** for Kovalev et al. (2021), whose exact
  algorithm THEORY.md did not retrieve. With :math:`D` the dual variable and :math:`(H, H_w=WH)`
  the compression states,

  .. math::
      Y=X-\eta G(X)-\eta D,\quad Q=C(Y-H),\quad \hat Y=H+Q,\quad \hat Y_w=H_w+WQ,\\
      H\leftarrow(1-\alpha)H+\alpha\hat Y,\quad H_w\leftarrow(1-\alpha)H_w+\alpha\hat Y_w,\quad
      D\leftarrow D+\tfrac{\gamma}{2\eta}(\hat Y-\hat Y_w),\quad X\leftarrow X-\eta G(X)-\eta D.

  :math:`\mathbf 1^\top D=0` at all times (the columns of :math:`I-W` sum to zero), which makes
  every fixed point consensual at :math:`x^\star`; the compressed messages :math:`Q` vanish there,
  so the method converges linearly with compression. It takes an *unbiased* compressor; with
  variance :math:`\omega` keep :math:`\alpha\le1/(1+\omega)` and :math:`\gamma` small (pitfall 1).
  Without compression (``Identity``, :math:`\alpha=1`, :math:`\gamma=1`) it is NIDS / exact diffusion.

Both start from zero compression states (:math:`\hat X=H=H_w=0`, :math:`D=0`), which needs no
uncompressed message.
"""
from __future__ import annotations

import torch

from ..compress import Compressor, ContractiveCompressor, UnbiasedCompressor
from .compressed import _bits, _check_compressor, _check_dim
from .gossip import _Gossip

__all__ = ["ChocoSGD", "LEAD"]


def _check_unit(name, what, v, closed_zero=False):
    v = float(v)
    ok = (0.0 <= v <= 1.0) if closed_zero else (0.0 < v <= 1.0)
    if not ok:
        raise ValueError(f"{name}: {what} must lie in {'[0, 1]' if closed_zero else '(0, 1]'}, got {v}")
    return v


class _CompressedGossip(_Gossip):
    kind = Compressor

    def __init__(self, lr, topology, compressor, check_stability=True):
        super().__init__(lr, topology, check_stability)
        if not self.lr > 0:
            raise ValueError(f"{self.name}: lr must be positive, got {lr}")
        self.compressor = _check_compressor(self.name, compressor, self.kind)

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["compressor"] = repr(self.compressor)
        return hp

    def _init_state(self, x0, problem):
        _check_dim(self.name, self.compressor, problem)
        s = self._init_X(x0, problem)
        s["bits"], s["round_bits"] = 0, 0
        return s


class ChocoSGD(_CompressedGossip):
    r"""CHOCO-SGD with consensus step ``gamma`` in (0, 1] and a contractive compressor (name ``choco_sgd``)."""

    name = "choco_sgd"
    kind = ContractiveCompressor

    def __init__(self, lr: float, topology, compressor, gamma: float, check_stability: bool = True):
        super().__init__(lr, topology, compressor, check_stability)
        self.gamma = _check_unit(self.name, "the consensus step gamma", gamma)

    def init(self, x0, problem):
        s = self._init_state(x0, problem)
        s["X_hat"] = torch.zeros_like(s["X"])
        return s

    def step(self, state, oracle, comm, generator):
        X_half = state["X"] - self.lr * oracle.grad(state["X"], None, generator)
        Q = self.compressor(X_half - state["X_hat"], generator)
        b = _bits(self.compressor, Q)
        X_hat = state["X_hat"] + Q
        X = X_half + self.gamma * (comm.mix(X_hat, self.W(state)) - X_hat)
        return {"X": X, "X_hat": X_hat, "round": state["round"] + 1,
                "bits": state["bits"] + b, "round_bits": b}


class LEAD(_CompressedGossip):
    r"""LEAD with an unbiased compressor, dual step ``gamma`` in (0, 1] and compression-state step
    ``alpha`` in (0, 1] (default :math:`1/(1+\omega)`). Stand-in for Kovalev et al. (2021); name ``lead``."""

    name = "lead"
    kind = UnbiasedCompressor

    def __init__(self, lr: float, topology, compressor, gamma: float, alpha: float | None = None,
                 check_stability: bool = True):
        super().__init__(lr, topology, compressor, check_stability)
        self.gamma = _check_unit(self.name, "the dual step gamma", gamma)
        a = 1.0 / (1.0 + self.compressor.omega) if alpha is None else alpha
        self.alpha = _check_unit(self.name, "alpha", a)

    def init(self, x0, problem):
        s = self._init_state(x0, problem)
        for k in ("H", "H_w", "D"):
            s[k] = torch.zeros_like(s["X"])
        return s

    def step(self, state, oracle, comm, generator):
        X, H, H_w, D = state["X"], state["H"], state["H_w"], state["D"]
        G = oracle.grad(X, None, generator)
        Y = X - self.lr * (G + D)
        Q = self.compressor(Y - H, generator)
        b = _bits(self.compressor, Q)
        Y_hat, Y_hat_w = H + Q, H_w + comm.mix(Q, self.W(state))
        a = self.alpha
        D = D + self.gamma / (2 * self.lr) * (Y_hat - Y_hat_w)
        return {"X": X - self.lr * (G + D), "H": (1 - a) * H + a * Y_hat, "H_w": (1 - a) * H_w + a * Y_hat_w,
                "D": D, "round": state["round"] + 1, "bits": state["bits"] + b, "round_bits": b}
