r"""Local SGD over client minibatches with random reshuffling, and its exact expectation.

**Problem.** :class:`ClientMinibatchQuadratics`: :math:`n` clients, client :math:`i` holds :math:`K`
minibatch losses :math:`f_{ik}(x)=\frac12x^\top A_{ik}x-c_{ik}^\top x+e_{ik}` and
:math:`f_i=\frac1K\sum_kf_{ik}`, :math:`f=\frac1n\sum_if_i` (uniform weights). It *is* a
:class:`~hetlab.problems.QuadraticProblem` for the client losses (``grad`` returns the full client
gradients, so every other method runs on it unchanged) and adds the minibatch access
``batch_grad(X, batches, idx)`` together with the exact between- and within-client variances

.. math:: V_b(x)=\frac1n\sum_i\|\nabla f_i-\nabla f\|^2,\qquad V_w(x)=\frac1{nK}\sum_{i,k}\|\nabla f_{ik}-\nabla f_i\|^2 .

**Method.** :class:`LocalReshuffledSGD`: in each round every client runs ``epochs`` passes over its
:math:`K` minibatches, each pass in a uniformly random order (random reshuffling, an independent
permutation per client and per pass), with step size :math:`\eta`; then the server optimizer acts
on the averaged model change (THEORY B3). ``order`` selects the randomness:

* ``"random"``: orders drawn from the ``torch.Generator`` (the real algorithm);
* ``"exact"``: the **exact expectation over orderings** by enumeration. The clients are independent
  and the aggregation is linear, so the expected round is the round whose client end point is the
  average of that client's end points over all :math:`(K!)^{\rm epochs}` order sequences. All
  sequences of all clients run at once as stacked copies (rows = client × sequence), one batched
  step at a time, never a loop over clients or orders. This is deterministic and equals the
  expected round map of ``"random"``;
* ``"fixed"``: every pass visits the minibatches in the order :math:`0,\dots,K-1`.

:func:`reshuffled_local_steps` is the local solver itself (also used by FedGA,
:mod:`hetlab.algorithms.gradalign`).
"""
from __future__ import annotations

import itertools
import math
from functools import cached_property

import numpy as np
import torch

from .._validation import as_tensor, check_shape
from ..problems.quadratic import QuadraticProblem, _random_orthogonal
from .base import check_local_lr
from .local import _LocalMethod

ORDERS = ("random", "exact", "fixed")
MAX_EXACT_ROWS = 2_000_000


class ClientMinibatchQuadratics(QuadraticProblem):
    r"""``n`` clients x ``K`` minibatch quadratics: ``A [n, K, d, d]``, ``c [n, K, d]``, ``e [n, K]``.

    The client losses are the minibatch means (so ``A_i = mean_k A_ik``); ``grad`` / ``loss`` /
    ``x_star`` / ``A_bar`` / ``mu`` are those of the client problem. ``L`` is the largest minibatch
    curvature (the stability limit of a minibatch step), ``L_client`` that of the client losses.
    """

    name = "client_minibatch_quadratic"

    def __init__(self, A, c, e=None, *, dtype=torch.float64):
        A = as_tensor(A, dtype=dtype, name="A")
        if A.dim() != 4 or A.shape[2] != A.shape[3]:
            raise ValueError("A must have shape [n, K, d, d] (one Hessian per client and minibatch), "
                             f"got {list(A.shape)}")
        n, K, d = A.shape[:3]
        c = as_tensor(c, dtype=dtype, name="c")
        check_shape(c, (n, K, d), "c")
        e = torch.zeros(n, K, dtype=dtype) if e is None else as_tensor(e, dtype=dtype, name="e")
        check_shape(e, (n, K), "e")
        asym = (A - A.transpose(2, 3)).abs().amax().item()
        if asym > 1e-10 * max(1.0, A.abs().amax().item()):
            raise ValueError(f"the minibatch Hessians must be symmetric (max |A - A^T| = {asym:.3g})")
        A = 0.5 * (A + A.transpose(2, 3))
        eig = torch.linalg.eigvalsh(A)
        if eig[..., 0].min().item() < -1e-10 * max(1.0, A.abs().amax().item()):
            i, k = divmod(int(eig[..., 0].argmin()), K)
            raise ValueError(f"the Hessian of minibatch {k} of client {i} is not positive semi-definite "
                             f"(smallest eigenvalue {eig[..., 0].min().item():.3g})")
        super().__init__(A.mean(1), c.mean(1), e.mean(1), dtype=dtype)
        self.K = self.num_batches = int(K)
        self.A_batches, self.c_batches, self.e_batches = A, c, e
        self._batch_eig = eig
        try:  # client minimisers b_i (for the closed forms of hetlab.closed_forms) when every A_i is PD
            self.b = torch.linalg.solve(self.A, self.c.unsqueeze(-1)).squeeze(-1)
        except RuntimeError:
            self.b = None

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_minimizers(cls, A, b, **kw) -> "ClientMinibatchQuadratics":
        r""":math:`f_{ik}(x)=\frac12(x-b_{ik})^\top A_{ik}(x-b_{ik})`: ``A [n, K, d, d]``, ``b [n, K, d]``."""
        A = as_tensor(A, name="A")
        b = as_tensor(b, name="b")
        if A.dim() != 4:
            raise ValueError(f"A must have shape [n, K, d, d], got {list(A.shape)}")
        check_shape(b, tuple(A.shape[:3]), "b")
        c = torch.einsum("nkij,nkj->nki", A, b)
        return cls(A, c, 0.5 * (b * c).sum(-1), **kw)

    @classmethod
    def from_problems(cls, problems, **kw) -> "ClientMinibatchQuadratics":
        """From a list of ``K`` :class:`QuadraticProblem` with ``n`` clients each: minibatch ``k`` of
        client ``i`` is client ``i`` (row ``i``) of ``problems[k]``."""
        problems = list(problems)
        if not problems:
            raise ValueError("need at least one minibatch problem")
        n, d = problems[0].n, problems[0].d
        for k, p in enumerate(problems):
            if (p.n, p.d) != (n, d):
                raise ValueError(f"problem {k} has n={p.n}, d={p.d}; every minibatch problem needs n={n}, d={d}")
        A = torch.stack([p.A for p in problems], 1)
        c = torch.stack([p.c for p in problems], 1)
        e = torch.stack([p.e for p in problems], 1)
        return cls(A, c, e, **kw)

    # -- minibatch access ------------------------------------------------------------------------
    def batch_grad(self, X, batches, idx=None) -> torch.Tensor:
        r"""Row ``r``: :math:`\nabla f_{i_r,k_r}(x_r)` with :math:`i_r` = ``idx[r]`` (all clients when
        ``None``) and :math:`k_r` = ``batches[r]``. ``idx`` may repeat clients (stacked copies)."""
        self._check_stacked(X, idx)
        ids = torch.arange(self.n) if idx is None else idx
        batches = torch.as_tensor(batches, dtype=torch.long)
        if batches.shape != ids.shape:
            raise ValueError(f"batches must have one minibatch index per row ({ids.shape[0]}), got {list(batches.shape)}")
        A = self.A_batches[ids, batches]
        return torch.einsum("rij,rj->ri", A, X) - self.c_batches[ids, batches]

    def batch_grads_at(self, x) -> torch.Tensor:
        """Every minibatch gradient at one point: ``[n, K, d]``."""
        x = self._check_point(x)
        return torch.einsum("nkij,j->nki", self.A_batches, x) - self.c_batches

    def between_client_variance(self, x) -> float:
        r""":math:`V_b(x)=\frac1n\sum_i\|\nabla f_i(x)-\nabla f(x)\|^2`."""
        G = self.local_grads(x)
        return float(((G - G.mean(0)) ** 2).sum(1).mean())

    def within_client_variance(self, x) -> float:
        r""":math:`V_w(x)=\frac1{nK}\sum_{i,k}\|\nabla f_{ik}(x)-\nabla f_i(x)\|^2`."""
        G = self.batch_grads_at(x)
        return float(((G - G.mean(1, keepdim=True)) ** 2).sum(2).mean())

    # -- constants -------------------------------------------------------------------------------
    @cached_property
    def L(self) -> float:
        """Largest minibatch curvature ``max_ik lambda_max(A_ik)`` (a minibatch step needs ``lr < 2/L``)."""
        return self._batch_eig[..., -1].max().item()

    @cached_property
    def L_client(self) -> float:
        """``max_i lambda_max(A_i)`` of the client losses."""
        return self._eig[:, -1].max().item()

    def client_problem(self) -> QuadraticProblem:
        """The client losses as a plain :class:`QuadraticProblem` (no minibatch structure)."""
        return QuadraticProblem(self.A, self.c, self.e, dtype=self.dtype)


def random_client_minibatch_quadratics(n: int, K: int, d: int, *, spectrum=(0.5, 2.0), client_spread: float = 1.0,
                                       batch_spread: float = 1.0, seed: int = 0) -> ClientMinibatchQuadratics:
    r"""Seeded :math:`f_{ik}=\frac12(x-b_{ik})^\top A_{ik}(x-b_{ik})` with independent Haar-rotated Hessians
    (eigenvalues :math:`\mathcal U[\text{spectrum}]`) and minimisers :math:`b_{ik}=s_c\xi_i+s_b\xi_{ik}`
    (``client_spread`` :math:`s_c`, ``batch_spread`` :math:`s_b`, standard normal :math:`\xi`).
    Draws (``numpy.random.default_rng(seed)``): Hessians client by client, minibatch by minibatch, then
    :math:`\xi_i`, then :math:`\xi_{ik}`."""
    if min(n, K, d) < 1:
        raise ValueError(f"need n, K, d >= 1, got n={n}, K={K}, d={d}")
    lo, hi = spectrum
    if not 0 < lo <= hi:
        raise ValueError(f"spectrum must satisfy 0 < low <= high, got {spectrum}")
    rng = np.random.default_rng(seed)
    A = np.empty((n, K, d, d))
    for i in range(n):  # construction only
        for k in range(K):
            U = _random_orthogonal(rng, d)
            A[i, k] = (U * rng.uniform(lo, hi, size=d)) @ U.T
    A = 0.5 * (A + A.transpose(0, 1, 3, 2))
    b = client_spread * rng.standard_normal((n, 1, d)) + batch_spread * rng.standard_normal((n, K, d))
    return ClientMinibatchQuadratics.from_minimizers(A, b)

# ---------------------------------------------------------------------------------- local solver


def all_order_sequences(K: int, epochs: int = 1) -> torch.Tensor:
    """Every sequence of ``epochs`` permutations of ``range(K)``: ``[(K!)^epochs, epochs * K]`` (long)."""
    perms = torch.tensor(list(itertools.permutations(range(K))), dtype=torch.long)  # [K!, K]
    seqs = perms
    for _ in range(epochs - 1):
        p, q = seqs.shape[0], perms.shape[0]
        seqs = torch.cat([seqs.repeat_interleave(q, 0), perms.repeat(p, 1)], 1)
    return seqs


def _check_minibatch_problem(problem) -> int:
    if not (hasattr(problem, "batch_grad") and hasattr(problem, "num_batches")):
        raise TypeError(f"{type(problem).__name__} has no minibatch structure; use ClientMinibatchQuadratics "
                        "(or a problem with num_batches and batch_grad(X, batches, idx))")
    return int(problem.num_batches)


def reshuffled_local_steps(Y, oracle, idx, lr: float, generator=None, *, order: str = "random",
                           epochs: int = 1) -> torch.Tensor:
    r"""``epochs`` reshuffled passes over each selected client's minibatches from the rows of ``Y``.

    Returns the end points ``[rows, d]``; with ``order="exact"`` each row is the **average** end point
    over all :math:`(K!)^{\rm epochs}` order sequences (stacked copies, one batched step at a time).
    The minibatch gradients are exact; the only randomness is the order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if getattr(oracle, "stochastic", False):
        raise ValueError("reshuffled local SGD draws its randomness from the minibatch order; pass the exact "
                         "oracle (hetlab.problems.Oracle) of a ClientMinibatchQuadratics problem")
    problem = oracle.problem
    K = _check_minibatch_problem(problem)
    rows, d = Y.shape
    ids = torch.arange(problem.n) if idx is None else idx
    if order == "exact":
        seqs = all_order_sequences(K, epochs)                          # [S, epochs*K]
        S = seqs.shape[0]
        if rows * S > MAX_EXACT_ROWS:
            raise ValueError(f"exact enumeration needs {rows} x {S} stacked copies (> {MAX_EXACT_ROWS}); "
                             "use order='random' and average over seeds")
        Ye = Y.repeat_interleave(S, 0)
        ide = ids.repeat_interleave(S)
        seq_e = seqs.repeat(rows, 1)
        for t in range(seq_e.shape[1]):
            Ye = Ye - lr * problem.batch_grad(Ye, seq_e[:, t], ide)
        return Ye.reshape(rows, S, d).mean(1)
    if order == "fixed":
        seq = torch.arange(K).repeat(epochs).expand(rows, epochs * K)
    else:
        seq = torch.cat([torch.argsort(torch.rand(rows, K, generator=generator, dtype=torch.float64), 1)
                         for _ in range(epochs)], 1)
    for t in range(seq.shape[1]):
        Y = Y - lr * problem.batch_grad(Y, seq[:, t].contiguous(), idx)
    return Y


class LocalReshuffledSGD(_LocalMethod):
    r"""Local SGD over client minibatches with random reshuffling (THEORY B3).

    .. math:: y_i\leftarrow y_i-\eta\nabla f_{i,\sigma_i(k)}(y_i),\ k=0..K-1\ (\text{per pass}),\qquad
              x\leftarrow x-\eta_g\textstyle\sum_iq_i(x-y_i),

    :math:`\sigma_i` a uniformly random permutation per client and pass. Its expected round follows,
    to :math:`O(\eta^3)`, the flow over time :math:`\tau\eta` (:math:`\tau=` ``epochs`` :math:`\cdot K`) of
    :math:`F_{\rm loc}=f+\frac\eta4\|\nabla f\|^2-\frac{(\tau-1)\eta}4V_b+\frac\eta4V_w`: local steps flip
    the sign of the between-client alignment term of centralised SGD. ``order="exact"`` computes that
    expected round exactly (see the module docstring); it is what the checks use.
    """

    name = "local_rr_sgd"

    def __init__(self, lr: float, epochs: int = 1, order: str = "random", server_opt=None, participation=None,
                 check_stability: bool = True):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        super().__init__(server_opt, participation, check_stability)
        self.lr, self.epochs, self.order = float(lr), int(epochs), order

    def init(self, x0, problem):
        _check_minibatch_problem(problem)
        check_local_lr(self.name, self.lr, problem, self.check_stability)
        return self._server_init(x0, problem)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        m, idx, w = self._select(problem, generator)
        X = comm.broadcast(state["x"], m)
        Y = reshuffled_local_steps(X, oracle, idx, self.lr, generator, order=self.order, epochs=self.epochs)
        return self._server_apply(state, comm.mean(X - Y, w))


def num_order_sequences(K: int, epochs: int = 1) -> int:
    """:math:`(K!)^{\\rm epochs}`: the number of stacked copies per client of ``order="exact"``."""
    return math.factorial(K) ** epochs
