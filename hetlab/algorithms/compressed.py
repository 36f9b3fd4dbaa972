r"""Server-based methods with compressed uplink messages (THEORY F1; Stich 2020; Richtárik et al. 2021;
Mishchenko et al. 2019).

Every worker compresses its message with a compressor from :mod:`hetlab.compress` (independent
randomness per worker, drawn from the generator passed to ``step``); the server averages the
compressed messages and broadcasts the new model uncompressed. ``state["bits"]`` is the cumulative
number of uplink bits sent by all workers (``state["round_bits"]`` those of the last round).

* :class:`DQSGD`: :math:`x\leftarrow x-\eta\frac1n\sum_iQ(\nabla f_i(x))` (unbiased ``Q``);
* :class:`EFSGD` (D-EF-SGD): :math:`p_i=e_i+\eta\nabla f_i(x)`, :math:`\Delta_i=C(p_i)`,
  :math:`e_i\leftarrow p_i-\Delta_i`, :math:`x\leftarrow x-\frac1n\sum_i\Delta_i` (contractive ``C``);
* :class:`EF21`: :math:`x\leftarrow x-\eta\frac1n\sum_ig_i`, then
  :math:`g_i\leftarrow g_i+C(\nabla f_i(x)-g_i)` at the new model (contractive ``C``);
* :class:`DIANA`: :math:`q_i=Q(\nabla f_i(x)-h_i)`, :math:`\hat g=\frac1n\sum_i(h_i+q_i)`,
  :math:`h_i\leftarrow h_i+\alpha q_i`, :math:`x\leftarrow x-\eta\hat g`, :math:`\alpha=1/(\omega+1)`.

With the identity compressor all four reduce to gradient descent with step ``lr``.
"""
from __future__ import annotations

import torch

from ..compress import Compressor, ContractiveCompressor, UnbiasedCompressor
from .base import Method, check_x0

__all__ = ["DQSGD", "EFSGD", "EF21", "DIANA"]


def _check_lr(name, lr):
    lr = float(lr)
    if not lr > 0:
        raise ValueError(f"{name}: lr must be positive, got {lr}")
    return lr


def _check_compressor(name, compressor, kind):
    if not isinstance(compressor, Compressor):
        raise TypeError(f"{name}: compressor must be a hetlab.compress.Compressor, got {type(compressor).__name__}")
    if not isinstance(compressor, kind):
        raise TypeError(f"{name} needs a {kind.__name__} (see hetlab.compress), got {type(compressor).__name__}")
    return compressor


def _check_dim(name, compressor, problem):
    if compressor.d != problem.d:
        raise ValueError(f"{name}: compressor built for d={compressor.d}, problem has d={problem.d}")


def _bits(compressor, M) -> int:
    return int(compressor.bits(M).sum())


class _Compressed(Method):
    kind = Compressor

    def __init__(self, lr: float, compressor):
        self.lr = _check_lr(self.name, lr)
        self.compressor = _check_compressor(self.name, compressor, self.kind)

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["compressor"] = repr(self.compressor)
        return hp

    def _base_state(self, x0, problem):
        _check_dim(self.name, self.compressor, problem)
        return {"x": check_x0(x0, problem), "round": 0, "bits": 0, "round_bits": 0}


class DQSGD(_Compressed):
    """Distributed quantised SGD with an unbiased compressor (no error feedback, no shifts)."""

    name = "dqsgd"
    kind = UnbiasedCompressor

    def init(self, x0, problem):
        return self._base_state(x0, problem)

    def step(self, state, oracle, comm, generator):
        X = comm.broadcast(state["x"])
        Q = self.compressor(oracle.grad(X, None, generator), generator)
        b = _bits(self.compressor, Q)
        return {"x": state["x"] - self.lr * comm.mean(Q), "round": state["round"] + 1,
                "bits": state["bits"] + b, "round_bits": b}


class EFSGD(_Compressed):
    """D-EF-SGD (error feedback, Stich 2020 / Karimireddy et al. 2019) with a contractive compressor."""

    name = "ef_sgd"
    kind = ContractiveCompressor

    def init(self, x0, problem):
        s = self._base_state(x0, problem)
        s["e"] = torch.zeros(problem.n, problem.d, dtype=problem.dtype)
        return s

    def step(self, state, oracle, comm, generator):
        X = comm.broadcast(state["x"])
        P = state["e"] + self.lr * oracle.grad(X, None, generator)
        Dl = self.compressor(P, generator)
        b = _bits(self.compressor, Dl)
        return {"x": state["x"] - comm.mean(Dl), "e": P - Dl, "round": state["round"] + 1,
                "bits": state["bits"] + b, "round_bits": b}


class EF21(_Compressed):
    r"""EF21 (Richtárik, Sokolov & Fatkhullin 2021). ``g_i`` starts at :math:`\nabla f_i(x^0)` (one
    uncompressed message per worker, counted in ``bits``)."""

    name = "ef21"
    kind = ContractiveCompressor

    def init(self, x0, problem):
        s = self._base_state(x0, problem)
        s["g"] = problem.grad(s["x"].expand(problem.n, problem.d)).clone()
        s["bits"] = problem.n * problem.d * 64
        return s

    def step(self, state, oracle, comm, generator):
        x = state["x"] - self.lr * comm.mean(state["g"])
        X = comm.broadcast(x)
        Cm = self.compressor(oracle.grad(X, None, generator) - state["g"], generator)
        b = _bits(self.compressor, Cm)
        return {"x": x, "g": state["g"] + Cm, "round": state["round"] + 1,
                "bits": state["bits"] + b, "round_bits": b}


class DIANA(_Compressed):
    r"""DIANA (Mishchenko et al. 2019): compress gradient differences against learned shifts ``h_i``."""

    name = "diana"
    kind = UnbiasedCompressor

    def __init__(self, lr: float, compressor, alpha: float | None = None):
        super().__init__(lr, compressor)
        self.alpha = 1.0 / (self.compressor.omega + 1.0) if alpha is None else float(alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"diana: alpha must lie in (0, 1], got {self.alpha}")

    def init(self, x0, problem):
        s = self._base_state(x0, problem)
        s["h"] = torch.zeros(problem.n, problem.d, dtype=problem.dtype)
        return s

    def step(self, state, oracle, comm, generator):
        X = comm.broadcast(state["x"])
        H = state["h"]
        Q = self.compressor(oracle.grad(X, None, generator) - H, generator)
        b = _bits(self.compressor, Q)
        g = comm.mean(H + Q)
        return {"x": state["x"] - self.lr * g, "h": H + self.alpha * Q, "round": state["round"] + 1,
                "bits": state["bits"] + b, "round_bits": b}
