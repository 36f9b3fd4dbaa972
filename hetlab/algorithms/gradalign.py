r"""GradAlign and FedGA (Dandi, Barba & Jaggi, AAAI 2022): local steps from displaced starting points.

One round of **FedGA** (THEORY B4), written on stacked tensors like every local method:

1. the server broadcasts :math:`x`; every sampled client computes its full local gradient
   :math:`\nabla f_i(x)` (``displacement_grad="full"``, the default: exact, over all of the client's data;
   ``"oracle"`` uses one draw of the oracle instead, e.g. a minibatch gradient) and one extra all-reduce
   gives the full gradient :math:`\nabla f(x)` (the mean over the participating clients, weights
   normalised to one; under full participation this is exactly :math:`\nabla f(x)`);
2. each client displaces its starting point,

   .. math:: x_i^0=x+\beta\big(\nabla f_i(x)-\nabla f(x)\big)\qquad(\text{``displacement="paper"``}),

   with both gradients taken at the round's start point :math:`x` (never at the displaced point);
3. it runs :math:`K` local (S)GD steps with step size :math:`\eta` from :math:`x_i^0` — plain oracle
   steps, or reshuffled passes over its minibatches (``minibatch_order``, see
   :mod:`hetlab.algorithms.client_minibatch`);
4. the server aggregates the pseudo-gradient :math:`\Delta=\sum_{i\in S}w_i(x-y_i)` and applies its
   server optimizer (:mod:`.server`), exactly as FedAvg. Because the displacements have weighted
   mean zero, :math:`\Delta` is also the average of the local progress :math:`x_i^0-y_i`.

**GradAlign** is FedGA with :math:`K=1`: with :math:`\eta_g=1`,
:math:`x^+=x-\eta\frac1n\sum_i\nabla f_i\big(x+\beta(\nabla f_i(x)-\nabla f(x))\big)`.

**The sign, and how it was settled.** The paper's figure uses the displacement
:math:`v_i=-\beta(\nabla f(x)-\nabla f_i(x))=+\beta(\nabla f_i-\nabla f)`, while the public code writes
``param += beta * (full_grad - local_grad)``, the opposite sign (THEORY B4 pitfall 1). The sign was
not copied from either: on quadratics :math:`\nabla f_i(x+v)=\nabla f_i(x)+A_iv` exactly, so with
:math:`v_i=s\beta(\nabla f_i-\nabla f)` a GradAlign round is exactly a gradient step on
:math:`f+s\frac\beta2V_b`, :math:`V_b=\frac1n\sum_i\|\nabla f_i-\nabla f\|^2`. Check B4 measures it:
with :math:`s=+1` (``"paper"``) the round equals the step on :math:`f+\frac\beta2V_b` to round-off,
FedGA with :math:`\beta=K\eta/2` follows centralised SGD's modified loss (slope 3), and the limit point
has a *smaller* :math:`V_b` than :math:`x^\star` (alignment, the method's purpose). With :math:`s=-1`
(``"flipped"``, the public code's sign as THEORY B4 reports it) the round is a step on :math:`f-\frac\beta2V_b` and the limit has a
*larger* :math:`V_b` (anti-alignment). ``"paper"`` is therefore the default and ``"flipped"`` exists
only as a negative control.

With :math:`\beta=0` no displacement is computed at all, so FedGA is FedAvg exactly (same random
draws); with :math:`K=1`, :math:`\beta=0` and :math:`\eta_g=1` it is gradient descent.

:func:`alignment_metrics` extends :func:`hetlab.run.default_metrics` with the alignment measures
(mean pairwise cosine of the client gradients, :math:`V_b`, GradAlign's norm-based "variance") for
:func:`hetlab.run.run`.
"""
from __future__ import annotations

import math

import torch

from .. import measures
from .base import check_local_lr, local_steps
from .client_minibatch import ORDERS, LocalReshuffledSGD, _check_minibatch_problem, reshuffled_local_steps
from .local import _LocalMethod

__all__ = ["FedGA", "GradAlign", "LocalReshuffledSGD", "alignment_metrics", "DISPLACEMENTS"]

DISPLACEMENTS = {"paper": 1.0, "flipped": -1.0}


class FedGA(_LocalMethod):
    r"""FedGA: displace :math:`x_i^0=x+\beta(\nabla f_i(x)-\nabla f(x))`, run ``local_steps`` local steps,
    average, server step (see the module docstring for the sign and how it was settled).

    Parameters
    ----------
    lr : local step size :math:`\eta`.
    local_steps : :math:`K`; with ``minibatch_order`` it must be a multiple of the problem's number of
        minibatches (each multiple is one reshuffled pass).
    beta : displacement :math:`\beta\ge0`. :math:`\beta=K\eta/2` makes the expected round follow
        centralised SGD's modified loss (THEORY B4(b)).
    displacement : ``"paper"`` (:math:`+\beta(\nabla f_i-\nabla f)`, aligning) or ``"flipped"``
        (the opposite sign, anti-aligning; a negative control).
    displacement_grad : ``"full"`` (exact client gradients :math:`\nabla f_i(x)`, as in THEORY B4: the
        regulariser then does not shrink with the local batch size) or ``"oracle"`` (one oracle draw per
        client, stochastic when the oracle is).
    minibatch_order : ``None`` (``local_steps`` oracle steps, like FedAvg) or ``"random"``, ``"exact"``,
        ``"fixed"``: reshuffled passes over the client minibatches of a
        :class:`~hetlab.algorithms.client_minibatch.ClientMinibatchQuadratics` (``"exact"`` = the exact
        expectation over orders).
    server_opt, participation, check_stability : as for :class:`~hetlab.algorithms.FedAvg`.
    """

    name = "fedga"

    def __init__(self, lr: float, local_steps: int, beta: float, *, displacement: str = "paper",
                 displacement_grad: str = "full", minibatch_order: str | None = None, server_opt=None,
                 participation=None, check_stability: bool = True):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0 (use displacement='flipped' for the "
                             f"opposite sign), got {beta!r}")
        if displacement not in DISPLACEMENTS:
            raise ValueError(f"displacement must be 'paper' or 'flipped', got {displacement!r}")
        if displacement_grad not in ("full", "oracle"):
            raise ValueError(f"displacement_grad must be 'full' or 'oracle', got {displacement_grad!r}")
        if minibatch_order is not None:
            if minibatch_order not in ORDERS:
                raise ValueError(f"minibatch_order must be None or one of {ORDERS}, got {minibatch_order!r}")
        super().__init__(server_opt, participation, check_stability)
        self.lr, self.local_steps, self.beta = float(lr), int(local_steps), float(beta)
        self.displacement, self.displacement_grad = displacement, displacement_grad
        self.minibatch_order = minibatch_order

    def init(self, x0, problem):
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        if self.minibatch_order is not None:
            K = _check_minibatch_problem(problem)
            if self.local_steps % K:
                raise ValueError(f"with minibatch_order, local_steps ({self.local_steps}) must be a multiple of "
                                 f"the number of minibatches per client ({K}): one reshuffled pass per multiple")
        return self._server_init(x0, problem)

    def displaced_starts(self, X, oracle, comm, idx, w, generator):
        r"""Stacked :math:`x_i^0=x+s\beta(g_i-\bar g)` with :math:`g_i` the client gradients at the round's
        start rows ``X`` (exact, or one oracle draw with ``displacement_grad="oracle"``) and :math:`\bar g`
        their mean with the normalised weights ``w`` (the extra all-reduce)."""
        if self.beta == 0.0:
            return X
        if self.displacement_grad == "full":
            G = oracle.problem.grad(X, idx)
        else:
            G = oracle.grad(X, idx, generator)
        gbar = comm.mean(G, w / w.sum())
        return X + DISPLACEMENTS[self.displacement] * self.beta * (G - gbar)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = self._select(problem, generator)
        X = comm.broadcast(state["x"], m)
        X0 = self.displaced_starts(X, oracle, comm, idx, w, generator)
        if self.minibatch_order is None:
            Y = local_steps(X0, oracle, idx, self.local_steps, self.lr, generator)
        else:
            Y = reshuffled_local_steps(X0, oracle, idx, self.lr, generator, order=self.minibatch_order,
                                       epochs=self.local_steps // problem.num_batches)
        return self._server_apply(state, comm.mean(X - Y, w))


class GradAlign(FedGA):
    r"""GradAlign = FedGA with one local step: with server step :math:`\eta_g`,
    :math:`x^+=x-\eta_g\eta\sum_iq_i\nabla f_i\big(x+\beta(\nabla f_i(x)-\nabla f(x))\big)`. On quadratics
    this is exactly a gradient step of size :math:`\eta_g\eta` on :math:`f+\frac\beta2V_b` (check B4(a))."""

    name = "gradalign"

    def __init__(self, lr: float, beta: float, *, displacement: str = "paper", displacement_grad: str = "full",
                 server_opt=None, participation=None, check_stability: bool = True):
        super().__init__(lr, 1, beta, displacement=displacement, displacement_grad=displacement_grad,
                         server_opt=server_opt, participation=participation, check_stability=check_stability)


def alignment_metrics(problem, method, state) -> dict:
    r""":func:`hetlab.run.default_metrics` plus the alignment of the client gradients at the model:

    * ``mean_pairwise_cosine``: :math:`\frac1{n(n-1)}\sum_{i\ne j}\cos(\nabla f_i,\nabla f_j)` (``nan`` if a
      client gradient vanishes);
    * ``V_b``: the between-client variance :math:`\sum_iq_i\|\nabla f_i-\nabla f\|^2` (squared norms; the
      same number as ``gradient_variance``);
    * ``gradalign_variance``: GradAlign's logged "variance" :math:`\sum_iq_i\|\nabla f-\nabla f_i\|` (norms,
      not squared) and ``gradalign_normalized_variance`` (divided by :math:`\|\nabla f\|`).

    Pass it as ``hetlab.run.run(..., metrics=alignment_metrics)``.
    """
    from ..run import default_metrics
    out = default_metrics(problem, method, state)
    x = method.model(state)
    G = problem.local_grads(x)
    q = problem.weights
    n = G.shape[0]
    if n > 1:
        C = measures.pairwise_cosine(G)
        off = ~torch.eye(n, dtype=torch.bool)
        out["mean_pairwise_cosine"] = float(C[off].mean())
    else:
        out["mean_pairwise_cosine"] = math.nan
    out["V_b"] = measures.gradient_variance(G, q)
    out["gradalign_variance"] = measures.gradalign_variance(G, q)
    out["gradalign_normalized_variance"] = measures.gradalign_variance(G, q, normalized=True)
    return out
