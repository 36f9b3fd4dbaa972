r"""SGD over :math:`m` minibatch losses: random reshuffling, with replacement, and exact expectations.

The minibatch losses are the **rows** of a problem: row :math:`k` is :math:`\hat f_k`, and
:math:`f=\sum_kq_k\hat f_k` (uniform :math:`q_k=1/m` for random reshuffling). One SGD step uses row
:math:`k`'s exact gradient at the current point, :math:`x\leftarrow x-\eta\nabla\hat f_k(x)`; any extra
oracle noise comes from the oracle passed to ``step``. One ``step`` of a method is one **epoch**:

* :class:`RandomReshuffling` – a fresh uniformly random permutation of the :math:`m` rows per epoch
  (each row visited exactly once), or a fixed ``order`` every epoch (incremental gradient / a single
  permutation, the negative control of THEORY B2);
* :class:`WithReplacementSGD` – ``steps`` (default :math:`m`) i.i.d. indices per epoch, drawn with the
  row weights as probabilities.

Both run their steps through :func:`sgd_pass`, which advances any number of stacked copies at once,
each along its own sequence of rows. :func:`expected_epoch` uses it to compute the **exact** expectation
of the end-of-epoch iterate by enumeration: all :math:`m!` permutations (random reshuffling) or all
:math:`m^{\rm steps}` index sequences (with replacement) are stacked as parallel copies and run in one
pass, then averaged with their probabilities. No sampling, so backward-error slopes (THEORY B2) can be
fitted on the mean over orderings itself.
"""
from __future__ import annotations

import itertools
import math

import torch

from .base import Method, check_local_lr, check_x0

__all__ = ["RandomReshuffling", "WithReplacementSGD", "sgd_pass", "all_permutations", "all_sequences",
           "expected_epoch", "expected_epoch_affine_map"]

MAX_PATHS = 2_000_000  # stacked copies allowed in one enumeration (m = 9: 362880 permutations)


def sgd_pass(X: torch.Tensor, orders: torch.Tensor, oracle, lr: float, generator=None) -> torch.Tensor:
    r"""SGD on stacked copies: row :math:`p` of ``X [P, d]`` takes the steps
    :math:`x_p\leftarrow x_p-\eta\,g_{o_{p,s}}(x_p)` for :math:`s=0,\dots,S-1`, where ``orders [P, S]``
    holds the minibatch (row) indices and :math:`g_k` is ``oracle.grad`` of row :math:`k`.

    All copies advance together: the loop runs over the :math:`S` steps, never over copies.
    """
    orders = torch.as_tensor(orders, dtype=torch.long)
    if orders.dim() != 2 or orders.shape[0] != X.shape[0]:
        raise ValueError(f"orders must have shape [{X.shape[0]}, steps] (one index sequence per stacked copy), "
                         f"got {list(orders.shape)}")
    n = oracle.problem.n
    if orders.numel() and (int(orders.min()) < 0 or int(orders.max()) >= n):
        raise ValueError(f"minibatch indices must lie in 0..{n - 1} (the problem's rows)")
    for s in range(orders.shape[1]):
        X = X - lr * oracle.grad(X, orders[:, s], generator)
    return X


def _check_uniform(problem, who: str) -> None:
    q = problem.weights
    if float(q.max() - q.min()) > 1e-12 * float(q.max()):
        raise ValueError(f"{who}: random reshuffling visits every minibatch once per epoch, so the loss it "
                         "minimises is the plain mean of the rows; this problem has non-uniform weights. "
                         "Use uniform weights, or WithReplacementSGD (which samples rows by weight)")


class RandomReshuffling(Method):
    r"""SGD with random reshuffling over the rows of a problem (Smith et al. 2021; THEORY B2).

    One round is one epoch of :math:`m` steps :math:`x\leftarrow x-\eta\nabla\hat f_{\pi(s)}(x)`,
    :math:`\pi` a uniformly random permutation drawn from ``generator`` every epoch. With ``order``
    (a permutation of :math:`0..m-1`) the same order is used every epoch: deterministic incremental
    gradient, whose epoch does **not** follow the averaged modified loss.

    The state is ``{"x": [d], "round": int, "order": LongTensor [m]}`` (the order of the last epoch).
    With :math:`m=1` an epoch is one step of gradient descent.
    """

    name = "sgd_rr"

    def __init__(self, lr: float, order=None, check_stability: bool = True):
        self.lr = float(lr)
        if self.lr <= 0:
            raise ValueError(f"{self.name}: step size must be positive, got {lr}")
        self.check_stability = check_stability
        self.order = None if order is None else torch.as_tensor(order, dtype=torch.long).clone()
        if self.order is not None and self.order.dim() != 1:
            raise ValueError("order must be a 1-D permutation of the minibatch indices, "
                             f"got shape {list(self.order.shape)}")

    def hyperparameters(self):
        hp = super().hyperparameters()
        hp["order"] = "random" if self.order is None else ",".join(str(int(k)) for k in self.order)
        return hp

    def init(self, x0, problem):
        _check_uniform(problem, self.name)
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        m = problem.n
        if self.order is not None and not torch.equal(self.order.sort().values, torch.arange(m)):
            raise ValueError(f"order must be a permutation of 0..{m - 1} (each of the {m} minibatches once), "
                             f"got {self.order.tolist()}")
        return {"x": check_x0(x0, problem), "round": 0, "order": torch.arange(m)}

    def step(self, state, oracle, comm, generator):
        m = oracle.problem.n
        order = self.order if self.order is not None else torch.randperm(m, generator=generator)
        x = sgd_pass(state["x"][None, :], order[None, :], oracle, self.lr, generator)[0]
        return {"x": x, "round": state["round"] + 1, "order": order.clone()}


class WithReplacementSGD(Method):
    r"""SGD with i.i.d. minibatch indices: each of the ``steps`` steps of an epoch (default :math:`m`)
    uses row :math:`k` with probability :math:`q_k` (the problem's weights), independently.

    On quadratics the expected iterate is exactly gradient descent with step :math:`\eta` on :math:`f`
    (the update is affine in :math:`x` and the index is independent of :math:`x`), which is why its
    expected epoch has no between-minibatch variance term (THEORY B2, pitfall 2).
    State: ``{"x": [d], "round": int, "order": LongTensor [steps]}`` (the indices of the last epoch).
    """

    name = "sgd_wr"

    def __init__(self, lr: float, steps: int | None = None, check_stability: bool = True):
        self.lr = float(lr)
        if self.lr <= 0:
            raise ValueError(f"{self.name}: step size must be positive, got {lr}")
        if steps is not None and int(steps) < 1:
            raise ValueError(f"steps per epoch must be >= 1, got {steps}")
        self.steps = None if steps is None else int(steps)
        self.check_stability = check_stability

    def _steps(self, problem) -> int:
        return problem.n if self.steps is None else self.steps

    def init(self, x0, problem):
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        return {"x": check_x0(x0, problem), "round": 0,
                "order": torch.zeros(self._steps(problem), dtype=torch.long)}

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        idx = torch.multinomial(problem.weights, self._steps(problem), replacement=True, generator=generator)
        x = sgd_pass(state["x"][None, :], idx[None, :], oracle, self.lr, generator)[0]
        return {"x": x, "round": state["round"] + 1, "order": idx}

# ------------------------------------------------------------------------ exact expectations


def all_permutations(m: int) -> torch.Tensor:
    """All :math:`m!` permutations of :math:`0..m-1` as a LongTensor ``[m!, m]`` (lexicographic order)."""
    _check_paths(math.factorial(m), f"{m}! permutations")
    return torch.tensor(list(itertools.permutations(range(m))), dtype=torch.long).reshape(-1, m)


def all_sequences(m: int, steps: int) -> torch.Tensor:
    """All :math:`m^{\\rm steps}` index sequences as a LongTensor ``[m**steps, steps]`` (lexicographic order)."""
    _check_paths(m ** steps, f"{m}^{steps} index sequences")
    return torch.tensor(list(itertools.product(range(m), repeat=steps)), dtype=torch.long).reshape(-1, steps)


def _check_paths(count: int, what: str) -> None:
    if count > MAX_PATHS:
        raise ValueError(f"exact enumeration would stack {what} = {count} copies (limit {MAX_PATHS}); "
                         "use fewer minibatches or steps, or a Monte Carlo average of the methods")


def expected_epoch(problem, lr: float, x0, scheme: str = "rr", steps: int | None = None, oracle=None,
                   return_paths: bool = False):
    r"""The exact expectation of the end-of-epoch iterate from ``x0``, by enumeration.

    ``scheme="rr"``: the mean over all :math:`m!` orders of one random-reshuffling epoch (uniform
    weights required). ``scheme="replacement"``: the mean over all :math:`m^{\rm steps}` index sequences
    (``steps`` defaults to :math:`m`), each weighted by :math:`\prod_sq_{k_s}`. All paths are stacked
    as parallel copies and advanced together by :func:`sgd_pass`, with the exact oracle unless
    ``oracle`` is given (a deterministic one: the expectation is over orderings only).

    Returns the mean ``[d]`` (a tensor of the problem's dtype); with ``return_paths`` also
    ``(orders [P, S], end points [P, d], probabilities [P])``.
    """
    from ..problems.oracles import Oracle

    oracle = Oracle(problem) if oracle is None else oracle
    if getattr(oracle, "stochastic", False):
        raise ValueError("expected_epoch enumerates orderings exactly; pass a deterministic oracle "
                         "(the exact gradients by default)")
    x0 = check_x0(x0, problem)
    m = problem.n
    if scheme == "rr":
        _check_uniform(problem, "expected_epoch(scheme='rr')")
        if steps not in (None, m):
            raise ValueError(f"a random-reshuffling epoch has exactly m = {m} steps, got steps={steps}")
        orders = all_permutations(m)
        prob = torch.full((orders.shape[0],), 1.0 / orders.shape[0], dtype=problem.dtype)
    elif scheme == "replacement":
        S = m if steps is None else int(steps)
        if S < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        orders = all_sequences(m, S)
        prob = problem.weights[orders].prod(1)
    else:
        raise ValueError(f"scheme must be 'rr' (random reshuffling) or 'replacement', got {scheme!r}")
    X = x0.expand(orders.shape[0], problem.d)
    ends = sgd_pass(X, orders, oracle, float(lr))
    mean = prob @ ends
    if return_paths:
        return mean, (orders, ends, prob)
    return mean


def expected_epoch_affine_map(problem, lr: float, scheme: str = "rr", steps: int | None = None):
    r"""``(M, c)`` (NumPy) with :math:`\mathbb E[x^{\rm epoch}]=Mx_0+c` on a quadratic problem, by probing
    :func:`expected_epoch` (M1). Its fixed point is the stationary mean of the end-of-epoch iterates."""
    from .. import exact

    return exact.affine_map(
        lambda z: expected_epoch(problem, lr, torch.as_tensor(z, dtype=problem.dtype), scheme, steps).numpy(),
        problem.d)
