r"""The communication interface on real processes: a ``torch.distributed`` backend.

Each of the ``world`` processes owns a contiguous block of the ``n`` workers (rows
``rows = block_rows(n, world, rank)``). The *same* method objects run unchanged: they see a
:class:`ProblemShard` (the global problem restricted to the block, with the **global** client weights
of those rows), a :class:`ShardedOracle` and a :class:`DistributedComm`, whose primitives are
collectives:

=================  ======================================================================
primitive          implementation (every process calls it; results are identical everywhere)
=================  ======================================================================
``mean(X, q)``     ``all_reduce(SUM)`` of the block's :math:`\sum_{i\in\text{block}}q_ix_i`
``broadcast(x)``   the server model is replicated: a local view ``[rows, d]``
``mix(X, W)``      point-to-point exchange of the rows the graph needs, then the block's rows of :math:`WX`
``gather(X)``      ``all_gather`` (robust aggregators see every row)
``relay(T, Y, M)`` ``all_gather`` of the blocks; the tree's edge messages are replicated
=================  ======================================================================

``mix`` sends only the rows that the mixing matrix reads across block boundaries (a ring: one row
each way per boundary); ``relay`` gathers all rows, which is simple and exact. Partial participation:
every process draws the same clients among all ``n`` and works on those of its block (possibly none).

Randomness: every process holds a generator with the same seed; a stochastic oracle draws the
*global* random numbers (for all ``n`` workers, in the simulated backend's order) and keeps its
block's rows, so a distributed run reproduces the simulated one exactly (a test runs 4 gloo processes
in float64 and compares to 1e-12).

Launch with ``torchrun``, e.g. ``torchrun --nproc_per_node 4 -m hetlab.distributed --help``. On
several machines run the same command on each with ``--nnodes N --node_rank R --rdzv_backend c10d
--rdzv_endpoint HOST:PORT`` (the first machine's address); use ``backend="nccl"`` with one GPU per
process (``torch.cuda.set_device(local_rank)``) on GPU clusters.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .algorithms.base import aggregation_weights
from .problems.oracles import GaussianNoiseOracle, MinibatchOracle, Oracle

__all__ = ["block_rows", "init", "DistributedComm", "ProblemShard", "ShardedOracle", "shard"]


def block_rows(n: int, world: int, rank: int) -> torch.Tensor:
    """The contiguous block of worker ids owned by ``rank`` (sizes differ by at most one)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    if n < world:
        raise ValueError(f"{n} workers cannot be split over {world} processes (each needs at least one); "
                         "use fewer processes")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return torch.arange(start, start + base + (rank < extra))


def init(backend: str = "gloo") -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns ``(rank, world)``."""
    if "RANK" not in os.environ:
        raise RuntimeError("hetlab.distributed.init: RANK/WORLD_SIZE are not set; launch with torchrun "
                           "(e.g. torchrun --nproc_per_node 4 your_script.py)")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


class DistributedComm:
    """The :mod:`hetlab.comm` interface over a process group; this process holds ``rows``."""

    def __init__(self, n: int, rows: torch.Tensor, group=None):
        self.n, self.rows, self.group = int(n), rows, group
        self.world = dist.get_world_size(group)
        self.sizes = [len(block_rows(n, self.world, r)) for r in range(self.world)]
        self.starts = [sum(self.sizes[:r]) for r in range(self.world + 1)]  # block r is rows starts[r]:starts[r+1]
        self.bytes_sent = 0

    def _count(self, X):
        self.bytes_sent += X.numel() * X.element_size()

    def mean(self, X, weights=None):
        if weights is None:
            if X.shape[0] != len(self.rows):
                raise ValueError(f"mean without weights needs all {len(self.rows)} rows of this process's block, "
                                 f"got {X.shape[0]}; pass the aggregation weights of the rows")
            part = X.sum(0) / self.n
        else:
            if weights.shape != (X.shape[0],):
                raise ValueError(f"weights must have shape [{X.shape[0]}], got {list(weights.shape)}")
            part = weights @ X
        part = part.contiguous().clone()
        self._count(part)
        dist.all_reduce(part, op=dist.ReduceOp.SUM, group=self.group)
        return part

    def broadcast(self, x, rows=None):
        """The server model for this process's rows: all of its block (``rows`` None or ``n``) or the
        ``rows`` clients of the block sampled this round (partial participation)."""
        if rows is None or rows == self.n:
            rows = len(self.rows)
        elif rows > len(self.rows):
            raise ValueError(f"this process holds {len(self.rows)} workers, cannot broadcast to {rows} rows; "
                             "with partial participation pass the count of sampled clients in the block")
        return x.expand(rows, x.shape[-1])

    def gather(self, X):
        # gloo's all_gather needs equal shapes: pad every block to the largest one, then trim
        big = max(self.sizes)
        pad = torch.zeros((big, *X.shape[1:]), dtype=X.dtype, device=X.device)
        pad[:X.shape[0]] = X
        parts = [torch.empty_like(pad) for _ in self.sizes]
        self._count(X)
        dist.all_gather(parts, pad, group=self.group)
        return torch.cat([p[:s] for p, s in zip(parts, self.sizes)])

    def mix(self, X, W):
        """Gossip :math:`X\\leftarrow WX` for this block's rows, exchanging only the rows that the
        graph needs: each process receives, from every other process, the rows ``j`` of that block with
        ``W[i, j] != 0`` for one of its own rows ``i`` (point-to-point ``isend``/``irecv``), so a ring
        sends two rows per block boundary instead of all ``n``."""
        if W.shape != (self.n, self.n):
            raise ValueError(f"mixing matrix must be [{self.n}, {self.n}], got {list(W.shape)}")
        W = W.to(device=X.device, dtype=X.dtype)
        me = dist.get_rank(self.group)
        mine = W[self.rows] != 0                       # [rows, n]: what this block reads
        theirs = (W[:, self.rows] != 0).T              # [rows, n]: which rows read each of this block's rows
        reqs, received = [], []
        for p in range(self.world):
            if p == me:
                continue
            lo, hi = self.starts[p], self.starts[p + 1]
            need = torch.nonzero(mine[:, lo:hi].any(0)).flatten() + lo      # rows of block p this block reads
            give = torch.nonzero(theirs[:, lo:hi].any(1)).flatten()          # this block's rows that p reads
            peer = p if self.group is None else dist.get_global_rank(self.group, p)
            if len(need):
                buf = torch.empty((len(need), *X.shape[1:]), dtype=X.dtype, device=X.device)
                reqs.append(dist.irecv(buf, src=peer, group=self.group))
                received.append((need, buf))
            if len(give):
                out = X[give].contiguous()
                self._count(out)
                reqs.append(dist.isend(out, dst=peer, group=self.group))
        for r in reqs:
            r.wait()
        cols = torch.cat([self.rows] + [ids for ids, _ in received])
        vals = torch.cat([X] + [buf for _, buf in received])
        return W[self.rows][:, cols] @ vals

    def relay(self, messaging, Y, M_prev):
        """RelaySum messages along the tree: the blocks are gathered, every process computes the same
        edge messages ``[E, ...]`` (kept replicated) and keeps the sums received by its own rows."""
        M = messaging.relay(self.gather(Y), M_prev)
        return M, messaging.receive(M)[self.rows]


class ProblemShard:
    """The global problem seen from one process: rows ``rows``, global weights, collectives for the
    global loss and gradient. Every other attribute (``L``, ``mu``, ``dtype``, data) is the global one."""

    def __init__(self, problem, rows: torch.Tensor, group=None):
        self.problem, self.rows, self.group = problem, rows, group
        self.n, self.n_global, self.d = len(rows), problem.n, problem.d
        self.weights = problem.weights[rows]
        self.sampled = None  # this round's client draw under partial participation (see localize_clients)

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def _g(self, idx):
        return self.rows if idx is None else self.rows[idx]

    def localize_clients(self, idx, m: int):
        """Partial participation: from the clients ``idx`` sampled among all workers (the same draw on
        every process), keep those of this block. Returns ``(rows, local idx, weights)`` with the global
        unbiased weights :math:`\\frac nm q_i`, and remembers the draw for :class:`ShardedOracle`."""
        if idx is None:
            self.sampled = None
            return self.n, None, self.weights
        inblock = (idx >= self.rows[0]) & (idx <= self.rows[-1])      # the block is contiguous
        self.sampled = (idx, torch.nonzero(inblock).flatten())          # global draw, this block's positions in it
        local = idx[inblock] - self.rows[0]
        return len(local), local, aggregation_weights(self.problem, idx, m)[inblock]

    def _rows(self, t, idx):
        return t[self._g(idx)]

    def grad(self, X, idx=None):
        return self.problem.grad(X, self._g(idx))

    def loss(self, X, idx=None):
        return self.problem.loss(X, self._g(idx))

    def minibatch_grad(self, X, samples, idx=None):
        return self.problem.minibatch_grad(X, samples, self._g(idx))

    def stack(self, x):
        return self.problem._check_point(x).expand(self.n, self.d)

    def local_grads(self, x):
        return self.grad(self.stack(x))

    def _allreduce(self, t):
        t = t.contiguous().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def global_grad(self, x):
        return self._allreduce(self.weights @ self.local_grads(x))

    def global_loss(self, x):
        return self._allreduce(self.weights @ self.loss(self.stack(x)))

    def __repr__(self):
        return f"ProblemShard(rows {int(self.rows[0])}..{int(self.rows[-1])} of {self.n_global}, {self.problem!r})"


class ShardedOracle:
    """A global oracle restricted to this process's rows, drawing the global random numbers (so the
    stream matches the simulated backend) and keeping the block's part."""

    def __init__(self, oracle, shard: ProblemShard):
        if type(oracle) not in (Oracle, GaussianNoiseOracle, MinibatchOracle):
            raise TypeError(f"ShardedOracle supports Oracle, GaussianNoiseOracle and MinibatchOracle, got "
                            f"{type(oracle).__name__}")
        self.oracle, self.problem, self.rows = oracle, shard, shard.rows
        self.stochastic = oracle.stochastic

    def grad(self, X, idx=None, generator=None):
        o, P = self.oracle, self.problem
        if idx is None:
            glob, keep = None, self.rows                                # every worker draws; keep the block
        else:
            glob, keep = P.sampled or (None, None)                      # the round's global client draw
            if keep is None or len(keep) != len(idx):
                raise RuntimeError("ShardedOracle: the clients were not selected through ProblemShard."
                                   "localize_clients this round (methods' _select does it)")
        if type(o) is Oracle:
            return P.grad(X, idx)
        if type(o) is GaussianNoiseOracle:
            rows = P.n_global if glob is None else len(glob)
            noise = torch.randn((rows, P.d), dtype=X.dtype, generator=generator).to(X.device)  # CPU generator
            return P.grad(X, idx) + (o.sigma / P.d ** 0.5) * noise[keep]
        samples = o.sample(glob, generator)[keep]
        return P.minibatch_grad(X, samples, idx)


def shard(problem, oracle=None, rank: int | None = None, world: int | None = None, group=None):
    """``(ProblemShard, ShardedOracle, DistributedComm)`` for this process (rank and world from the group)."""
    rank = dist.get_rank(group) if rank is None else rank
    world = dist.get_world_size(group) if world is None else world
    rows = block_rows(problem.n, world, rank)
    P = ProblemShard(problem, rows, group)
    return P, ShardedOracle(oracle if oracle is not None else Oracle(problem), P), DistributedComm(problem.n, rows,
                                                                                                    group)


def _main(argv=None):
    """``torchrun --nproc_per_node K -m hetlab.distributed``: a demo that runs FedAvg, SCAFFOLD and D-SGD
    on a ring over K processes and prints the distance of the result to the simulated backend's."""
    import argparse

    from .algorithms import DSGD, FedAvg, Scaffold
    from .comm import SimulatedComm
    from .problems import GaussianNoiseOracle as GNO
    from .problems import random_quadratics
    from .topology import make_topology

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--dim", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--backend", default="gloo")
    a = ap.parse_args(argv)
    rank, world = init(a.backend)
    prob = random_quadratics(a.clients, a.dim, seed=0)
    x0 = torch.zeros(a.dim, dtype=prob.dtype)
    for meth in (FedAvg(0.05, 5), Scaffold(0.05, 5), DSGD(0.05, make_topology("ring", a.clients))):
        oracle = GNO(prob, 0.1)
        P, O, C = shard(prob, oracle)
        gen = torch.Generator().manual_seed(1)
        s = meth.init(x0, P)
        for _ in range(a.rounds):
            s = meth.step(s, O, C, gen)
        X = C.gather(s["X"]) if "X" in s else s["x"]
        gen = torch.Generator().manual_seed(1)
        r = meth.init(x0, prob)
        for _ in range(a.rounds):
            r = meth.step(r, oracle, SimulatedComm(prob.n), gen)
        ref = r["X"] if "X" in r else r["x"]
        if rank == 0:
            print(f"{meth.name}: {world} processes vs simulated, max |difference| = {float((X - ref).abs().max()):.2e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    _main()
