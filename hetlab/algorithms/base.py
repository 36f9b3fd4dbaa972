r"""Shared pieces of every method: the ``Method`` protocol, client sampling, local steps.

A method is a pair of pure functions in the style of optax:

* ``state = method.init(x0, problem)`` – a dict of tensors (server model ``"x"`` ``[d]``, stacked
  per-worker tensors ``[n, d]`` such as control variates, server-optimizer buffers, and an integer
  ``"round"``);
* ``state = method.step(state, oracle, comm, generator)`` – one communication round, written
  against stacked tensors and the communication interface (:mod:`hetlab.comm`), never a Python
  loop over workers. The input state is not modified.

``method.model(state)`` is the point the run loop evaluates (server model, or the average of the
worker models for decentralized methods); ``method.worker_models(state)`` the stacked worker
models when there are any (for the consensus distance).
"""
from __future__ import annotations

import torch

from .._validation import check_step_size


class Method:
    """Base class of every algorithm."""

    name = "method"

    def init(self, x0: torch.Tensor, problem) -> dict:
        raise NotImplementedError

    def step(self, state: dict, oracle, comm, generator: torch.Generator | None) -> dict:
        raise NotImplementedError

    def model(self, state: dict) -> torch.Tensor:
        return state["x"]

    def worker_models(self, state: dict) -> torch.Tensor | None:
        return None

    def hyperparameters(self) -> dict:
        """Plain-typed hyper-parameters (recorded with every result)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) or v is None}

    def __repr__(self):
        hp = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


def check_x0(x0, problem) -> torch.Tensor:
    x0 = torch.as_tensor(x0, dtype=problem.dtype)
    if x0.shape != (problem.d,):
        raise ValueError(f"x0 must have shape [{problem.d}] (the problem's dimension), got {list(x0.shape)}")
    return x0.clone()


def check_local_lr(name: str, lr: float, problem, check_stability: bool, extra: float = 0.0) -> None:
    """Reject a local step size past ``2 / (L + extra)`` on problems that know their ``L``."""
    L = getattr(problem, "L", None)
    check_step_size(name, lr, (L + extra) if (check_stability and L is not None) else None)


def num_participants(n: int, participation) -> int:
    """Number of clients per round: ``None`` or ``1.0`` means all; a float in (0, 1] a fraction; an int a count."""
    if participation is None:
        return n
    if isinstance(participation, bool):
        raise TypeError("participation must be None, a fraction in (0, 1] or a client count")
    if isinstance(participation, int):
        m = participation
    else:
        p = float(participation)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"participation fraction must lie in (0, 1], got {participation}")
        m = max(1, round(p * n))
    if not 1 <= m <= n:
        raise ValueError(f"participation must select between 1 and n={n} clients, got {m}")
    return m


def sample_clients(n: int, m: int, generator) -> torch.Tensor | None:
    """``m`` distinct clients uniformly at random (sorted ids), or ``None`` for full participation."""
    if m == n:
        return None
    return torch.randperm(n, generator=generator)[:m].sort().values


def select_clients(problem, participation, generator):
    """``(rows, idx, w)`` of one round: how many rows the round works on, which clients (``None``: all)
    and their unbiased aggregation weights. Clients are drawn among all ``n`` workers; a distributed
    shard (:class:`hetlab.distributed.ProblemShard`) keeps the sampled clients of its own block, so every
    backend draws the same clients."""
    n = getattr(problem, "n_global", problem.n)
    m = num_participants(n, participation)
    idx = sample_clients(n, m, generator)
    if hasattr(problem, "localize_clients"):
        return problem.localize_clients(idx, m)
    return m, idx, aggregation_weights(problem, idx, m)


def refuse_sharded_sampling(problem, name: str, sampled: bool) -> None:
    """Methods whose client sampling is not block-aware raise on a distributed shard."""
    if sampled and hasattr(problem, "localize_clients"):
        raise NotImplementedError(
            f"{name}: client sampling is not supported on the distributed backend for this method; use full "
            "participation there (FedAvg, FedProx, SCAFFOLD, FedGA/GradAlign, minibatch and asynchronous SGD "
            "support it)")


def aggregation_weights(problem, idx, m: int) -> torch.Tensor | None:
    r"""Unbiased aggregation weights for the sampled clients: :math:`\frac nm q_i`, :math:`i\in S`
    (so :math:`\mathbb E\sum_{i\in S}w_iv_i=\sum_iq_iv_i`); the problem's weights under full participation."""
    if idx is None:
        return problem.weights
    return problem.weights[idx] * (problem.n / m)


def local_steps(Y: torch.Tensor, oracle, idx, K: int, lr: float, generator, *, drift=None,
                prox_center=None, prox_mu: float = 0.0) -> torch.Tensor:
    r"""``K`` (stochastic) gradient steps of every selected worker at once:
    :math:`y\leftarrow y-\eta\,(g_i(y)+\text{drift}_i+\mu(y-\text{center}))`.

    ``drift`` (``[rows, d]`` or ``[d]``) is a constant correction (SCAFFOLD's :math:`c-c_i`);
    ``prox_center``/``prox_mu`` add FedProx's proximal gradient. The loop runs over steps, not workers.
    """
    # one copy per call, updated in place: a fresh [rows, d] tensor per step costs an allocation (and, with
    # glibc's malloc on large models, page faults) every step. Oracles must not keep references to Y.
    Y = Y.clone()
    # an oracle that can draw all K steps' randomness at once (MinibatchOracle) does so: same numbers,
    # one vectorised draw instead of K, and a fused in-place step where the problem has one
    draw = getattr(oracle, "draw_steps", None)
    steps = draw(K, idx, generator) if draw is not None else None
    for k in range(K):
        P = Y - prox_center if prox_mu else None  # the proximal term at the point before the step
        if steps is not None:
            steps.step_(Y, k, lr)
        else:
            Y.add_(oracle.grad(Y, idx, generator), alpha=-lr)
        if drift is not None:
            Y.add_(drift, alpha=-lr)
        if prox_mu:
            Y.add_(P, alpha=-lr * prox_mu)
    return Y
