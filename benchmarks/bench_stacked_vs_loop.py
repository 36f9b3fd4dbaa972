"""Stacked workers against a per-client Python loop, measured side by side in one run.

FedAvg (local GD, K local steps) on heterogeneous least squares. The loop version does the same
arithmetic client by client, as a straightforward simulator would; both must give the same model
(float64, to 1e-12) before any time is reported. Prints ms per round and the speed-up ratio.

    python benchmarks/bench_stacked_vs_loop.py [--clients 100 1000] [--dim 64] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time

import torch

from hetlab.algorithms import FedAvg
from hetlab.comm import SimulatedComm
from hetlab.problems import Oracle, random_least_squares


def loop_round(x, A, c, lr, K):
    """One FedAvg round, one client at a time (the reference a Python-loop simulator computes)."""
    models = []
    for i in range(A.shape[0]):
        y = x.clone()
        for _ in range(K):
            y = y - lr * (A[i] @ y - c[i])
        models.append(y)
    return torch.stack(models).mean(0)


def bench(n, d, rounds, K, threads):
    torch.set_num_threads(threads)
    prob = random_least_squares(n, 2 * d, d, seed=0)
    lr = 0.5 / prob.L
    meth, comm, orc = FedAvg(lr, K), SimulatedComm(n), Oracle(prob)
    x0 = torch.zeros(d, dtype=torch.float64)
    # correctness first: same model after one round
    s = meth.step(meth.init(x0, prob), orc, comm, None)
    ref = loop_round(x0, prob.A, prob.c, lr, K)
    gap = float((s["x"] - ref).abs().max())
    if gap > 1e-12:
        raise SystemExit(f"stacked and loop FedAvg disagree by {gap:.3g}")
    state = meth.init(x0, prob)
    t0 = time.perf_counter()
    for _ in range(rounds):
        state = meth.step(state, orc, comm, None)
    t_stacked = (time.perf_counter() - t0) / rounds
    x = x0
    t0 = time.perf_counter()
    for _ in range(rounds):
        x = loop_round(x, prob.A, prob.c, lr, K)
    t_loop = (time.perf_counter() - t0) / rounds
    return t_stacked, t_loop, gap


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(f"FedAvg, least squares, d={a.dim}, K={a.local_steps}, float64, {a.threads} threads")
    print(f"{'clients':>8} {'stacked ms/round':>17} {'loop ms/round':>14} {'speed-up':>9} {'max |diff|':>11}")
    for n in a.clients:
        ts, tl, gap = bench(n, a.dim, a.rounds, a.local_steps, a.threads)
        print(f"{n:>8} {1e3 * ts:>17.2f} {1e3 * tl:>14.2f} {tl / ts:>8.1f}x {gap:>11.1e}")


if __name__ == "__main__":
    main()
