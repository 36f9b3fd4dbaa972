"""FedAvg on a neural network: hetlab's stacked workers against a per-client PyTorch loop and against
the limit, measured side by side in one run (issue 6, benchmarks a-c).

Reference task (PERF_NOTES.md): 100 clients with 50-200 samples each (dim 64, 10 classes, Dirichlet
alpha = 0.3 label skew), MLP 64-32-10, FedAvg with K = 10 local steps of batch 16, all clients every round.

(a) hetlab (hand-batched MLP path, and the general vmap path) against a plain loop over clients that
    deep-copies the model and steps ``torch.optim.SGD`` on the same minibatches. Both must give the same
    model in float64 (to 1e-10) before any time is printed.
(b) hetlab against the limit: one forward/backward pass over all n*K*16 samples of the round with a single
    model (the same arithmetic with no per-worker structure at all).
(c) scaling in the number of clients (each size in a fresh subprocess, so the peak RSS is its own):
    ms per round, peak resident memory, and NNProblem.memory_estimate's prediction.

    python benchmarks/bench_nn_fedavg.py                       # (a) and (b), 100 clients
    python benchmarks/bench_nn_fedavg.py --scaling 100 1000 10000
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from hetlab.algorithms import FedAvg
from hetlab.comm import SimulatedComm
from hetlab.models import mlp
from hetlab.problems import MinibatchOracle, NNProblem

D_IN, CLASSES, HIDDEN, K, BATCH, LR = 64, 10, 32, 10, 16, 0.05


def make_data(n: int, seed: int = 0, alpha: float = 0.3):
    """Gaussian class clusters in dim 64; client sizes uniform in [50, 200]; label proportions ~ Dir(alpha)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((CLASSES, D_IN))
    counts = rng.integers(50, 201, size=n)
    m_max = int(counts.max())
    Z = np.zeros((n, m_max, D_IN), dtype=np.float32)
    Y = np.zeros((n, m_max), dtype=np.int64)
    for i in range(n):                       # data generation only, not the timed path
        p = rng.dirichlet(alpha * np.ones(CLASSES))
        lab = rng.choice(CLASSES, size=counts[i], p=p)
        Z[i, :counts[i]] = means[lab] + rng.standard_normal((counts[i], D_IN))
        Y[i, :counts[i]] = lab
    return torch.from_numpy(Z), torch.from_numpy(Y), torch.from_numpy(counts)


def build(n, dtype, path, seed=0):
    torch.manual_seed(seed)
    model = mlp([D_IN, HIDDEN, CLASSES])
    Z, Y, counts = make_data(n, seed)
    prob = NNProblem(model, Z, Y, counts, dtype=dtype, path=path)
    return prob, prob.initial_point()


def loop_round(prob, x, samples):
    """One FedAvg round client by client: deepcopy, torch.optim.SGD, K minibatch steps, then average."""
    base = copy.deepcopy(prob.model)
    prob.load_into_model(x)
    base.load_state_dict(prob.model.state_dict())
    out = torch.zeros_like(x)
    for i in range(prob.n):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        for k in range(K):
            idx = samples[k][i]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(prob.Z[i, idx]), prob.y[i, idx])
            loss.backward()
            opt.step()
        out += prob.weights[i] * torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return out


def time_it(fn, repeats):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1e3


def compare(n, repeats, threads):
    torch.set_num_threads(threads)
    # correctness in float64: both hetlab paths and the loop give the same model after one round
    prob64, x64 = build(n, torch.float64, "mlp")
    meth = FedAvg(LR, K, check_stability=False)
    oracle = MinibatchOracle(prob64, BATCH)
    gen = torch.Generator().manual_seed(1)
    s = meth.step(meth.init(x64, prob64), oracle, SimulatedComm(n), gen)
    gen = torch.Generator().manual_seed(1)
    samples = [oracle.sample(None, gen) for _ in range(K)]
    ref = loop_round(prob64, x64, samples)
    err_mlp = float((s["x"] - ref).abs().max())
    prob64v, _ = build(n, torch.float64, "vmap")
    gen = torch.Generator().manual_seed(1)
    sv = meth.step(meth.init(x64, prob64v), MinibatchOracle(prob64v, BATCH), SimulatedComm(n), gen)
    err_vmap = float((sv["x"] - ref).abs().max())
    print(f"float64, one round, max |hetlab - loop|: mlp path {err_mlp:.2e}, vmap path {err_vmap:.2e}")
    assert err_mlp < 1e-10 and err_vmap < 1e-10, "the implementations disagree; no timings"

    # timings in float32 (the default precision), same task
    res = {}
    for path in ("mlp", "vmap"):
        prob, x0 = build(n, torch.float32, path)
        oracle, comm = MinibatchOracle(prob, BATCH), SimulatedComm(n)
        gen = torch.Generator().manual_seed(1)
        state = meth.init(x0, prob)
        res[path] = time_it(lambda: meth.step(state, oracle, comm, gen), repeats)
    prob, x0 = build(n, torch.float32, "mlp")
    gen = torch.Generator().manual_seed(1)
    samples = [MinibatchOracle(prob, BATCH).sample(None, gen) for _ in range(K)]
    res["loop"] = time_it(lambda: loop_round(prob, x0, samples), max(1, repeats // 5))
    # the limit: one forward/backward over all n*K*BATCH samples with a single model
    model = mlp([D_IN, HIDDEN, CLASSES])
    Zall = prob.Z[:, :BATCH].reshape(-1, D_IN).repeat(K, 1)
    Yall = prob.y[:, :BATCH].reshape(-1).repeat(K)

    def limit():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(Zall), Yall).backward()
    res["limit"] = time_it(limit, repeats)
    print(f"\n{n} clients, MLP {D_IN}-{HIDDEN}-{CLASSES}, K={K}, batch {BATCH}, float32, {threads} threads "
          f"({n * K * BATCH} samples per round)")
    print(f"{'way of computing a round':<44} {'ms/round':>9} {'vs hetlab mlp':>14}")
    names = {"loop": "per-client loop (deepcopy + torch.optim)", "vmap": "hetlab, vmap(grad) path",
             "mlp": "hetlab, hand-batched MLP path", "limit": "limit: one pass over all samples"}
    for k in ("loop", "vmap", "mlp", "limit"):
        print(f"{names[k]:<44} {res[k]:>9.2f} {res[k] / res['mlp']:>13.2f}x")
    print(f"\n(a) speed-up of hetlab (mlp path) over the loop: {res['loop'] / res['mlp']:.1f}x  (target >= 30x)")
    print(f"(b) hetlab (mlp path) / limit: {res['mlp'] / res['limit']:.2f}x  (target <= 1.5x)")
    return res


def scaling_one(n, rounds, threads):
    torch.set_num_threads(threads)
    prob, x0 = build(n, torch.float32, "mlp")
    meth = FedAvg(LR, K, check_stability=False)
    oracle, comm = MinibatchOracle(prob, BATCH), SimulatedComm(n)
    gen = torch.Generator().manual_seed(1)
    state = meth.init(x0, prob)
    state = meth.step(state, oracle, comm, gen)
    t = time.perf_counter()
    for _ in range(rounds):
        state = meth.step(state, oracle, comm, gen)
    ms = (time.perf_counter() - t) / rounds * 1e3
    est = prob.memory_estimate(BATCH)["total"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"n": n, "ms": ms, "peak_rss": peak, "estimate": est}))


def scaling(ns, rounds, threads):
    print(f"\n(c) scaling, MLP path, float32, {threads} threads, {rounds} rounds each (fresh process per size)")
    print(f"{'clients':>8} {'ms/round':>10} {'ms/client':>10} {'peak RSS MiB':>13} {'estimate MiB':>13}")
    for n in ns:
        out = subprocess.run([sys.executable, __file__, "--scaling-one", str(n), "--rounds", str(rounds),
                              "--threads", str(threads)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>8} {r['ms']:>10.1f} {r['ms'] / r['n']:>10.3f} {r['peak_rss'] / 2**20:>13.0f} "
              f"{r['estimate'] / 2**20:>13.1f}")
    print("(peak RSS includes the Python interpreter and torch, about 300-400 MiB)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scaling", type=int, nargs="*", default=None)
    ap.add_argument("--scaling-one", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.scaling_one is not None:
        scaling_one(a.scaling_one, a.rounds, a.threads)
    elif a.scaling:
        scaling(a.scaling, a.rounds, a.threads)
    else:
        compare(a.clients, a.repeats, a.threads)
