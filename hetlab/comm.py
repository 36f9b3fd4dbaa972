r"""The communication interface of stacked workers.

Algorithms never touch another worker's row directly; they call these primitives on stacked
tensors (leading dimension = worker). :class:`SimulatedComm` holds all ``n`` workers in one
process, so a primitive is one tensor operation. A ``torch.distributed`` backend implements the
same methods with collectives (each process owning a block of rows): ``mean`` becomes an
``all_reduce``, ``mix`` a neighbour exchange, ``gather`` an ``all_gather``.

=================  ==========================================  ===========================
primitive          meaning                                     distributed counterpart
=================  ==========================================  ===========================
``mean(X, q)``     :math:`\sum_i q_i x_i` (server aggregation)  ``all_reduce(SUM)``
``broadcast(x)``   the server model for every worker row       ``broadcast``
``mix(X, W)``      gossip :math:`X\leftarrow WX`                neighbour send/recv
``gather(X)``      every row, for robust aggregators            ``all_gather``
``relay(T, Y, M)`` messages along directed tree edges           ``send``/``recv`` per edge
=================  ==========================================  ===========================
"""
from __future__ import annotations

import torch


class SimulatedComm:
    """All workers in one process: rows of one tensor; ``mix`` is a matrix product."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"need at least one worker, got n={n}")
        self.n = int(n)
        self.bytes_sent = 0  # bookkeeping for communication-cost plots

    def _count(self, X: torch.Tensor) -> None:
        self.bytes_sent += X.numel() * X.element_size()

    def mean(self, X: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        r"""Weighted average of the rows: :math:`\sum_i w_i x_i` (``weights`` of shape ``[rows]``;
        uniform :math:`1/\text{rows}` when ``None``). Returns ``[d]``."""
        self._count(X)
        if weights is None:
            return X.mean(0)
        if weights.shape != (X.shape[0],):
            raise ValueError(f"weights must have shape [{X.shape[0]}], got {list(weights.shape)}")
        return weights @ X

    def broadcast(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """The vector ``x`` (``[d]``) as a stacked ``[rows, d]`` view (``rows = n`` by default)."""
        return x.expand(self.n if rows is None else rows, x.shape[-1])

    def mix(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """One gossip step ``W @ X`` with a (doubly stochastic) mixing matrix ``W [n, n]``."""
        if W.shape != (X.shape[0], X.shape[0]):
            raise ValueError(f"mixing matrix must be [{X.shape[0]}, {X.shape[0]}], got {list(W.shape)}")
        self._count(X)
        return W.to(device=X.device, dtype=X.dtype) @ X

    def gather(self, X: torch.Tensor) -> torch.Tensor:
        """All rows at once (robust aggregators need every worker's vector)."""
        self._count(X)
        return X

    def relay(self, messaging, Y: torch.Tensor, M_prev: torch.Tensor):
        r"""One RelaySum exchange along the directed edges of a tree (:class:`~hetlab.topology.TreeMessaging`):
        worker :math:`i` sends :math:`m_{i\to j}=y_i+\sum_{k\in N(i)\setminus j}m^{\rm prev}_{k\to i}` to each
        tree neighbour :math:`j`. Returns ``(M, received)``: the new messages ``[E, ...]`` and, per worker,
        the sum of the messages it received ``[n, ...]``. Distributed: one ``send``/``recv`` per tree edge."""
        M = messaging.relay(Y, M_prev)
        self._count(M)
        return M, messaging.receive(M)

