"""FedAvg on a neural network: hetlab's stacked workers against a per-client PyTorch loop and against
the limit, measured side by side in one run (issue 6, benchmarks a-c).

Reference task (PERF_NOTES.md): 100 clients with 50-200 samples each (dim 64, 10 classes, Dirichlet
alpha = 0.3 label skew), MLP 64-32-10, FedAvg with K = 10 local steps of batch 16, all clients every round.

(a) hetlab (hand-batched MLP path, and the general vmap path) against a plain loop over clients that
    deep-copies the model and steps ``torch.optim.SGD`` on the same minibatches. Both must give the same
    model in float64 (to 1e-10) before any time is printed.
(b) hetlab against the limit: one forward/backward pass over all n*K*16 samples of the round with a single
    model (the same arithmetic with no per-worker structure at all), as autograd computes it (the target's
    reference), written by hand with hetlab's own kernels, and (--compile-limit) under torch.compile.
    The fixed cost of a round (the same round with 2 clients) is printed too: it is what K dependent local
    steps of small kernels cost whatever the arithmetic, and it bounds how close to the fused limits a
    round of stacked workers can come.
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


def compare(n, repeats, threads, trials, compile_limit=False):
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

    # timings in float32 (the default precision), same task. The machine is shared and its speed drifts,
    # so the variants are timed in interleaved trials and every ratio is formed within one trial (paired),
    # then summarised by its median and range over the trials.
    fns = {}
    for path in ("mlp", "vmap"):
        prob, x0 = build(n, torch.float32, path)
        oracle, comm = MinibatchOracle(prob, BATCH), SimulatedComm(n)
        gen = torch.Generator().manual_seed(1)
        state = meth.init(x0, prob)
        fns[path] = (lambda m=meth, s=state, o=oracle, c=comm, g=gen: m.step(s, o, c, g)), repeats
    prob, x0 = build(n, torch.float32, "mlp")
    gen = torch.Generator().manual_seed(1)
    samples = [MinibatchOracle(prob, BATCH).sample(None, gen) for _ in range(K)]
    fns["loop"] = (lambda: loop_round(prob, x0, samples)), max(1, repeats // 10)
    # the limit: one forward/backward over all n*K*BATCH samples with a single model
    model = mlp([D_IN, HIDDEN, CLASSES])
    Zall = prob.Z[:, :BATCH].reshape(-1, D_IN).repeat(K, 1)
    Yall = prob.y[:, :BATCH].reshape(-1).repeat(K)

    def limit():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(Zall), Yall).backward()
    fns["limit"] = limit, repeats
    # the same limit written by hand with the ops of hetlab's MLP path (one model, plain matmuls, softmax
    # by hand): the stronger of the two limits is the one (b) is measured against
    W1, b1, W2, b2 = (p.detach().clone() for p in model.parameters())
    m_all = Zall.shape[0]
    onehot_rows = torch.arange(m_all)

    def limit_hand():
        h = torch.addmm(b1, Zall, W1.t()).relu_()                  # [m, 32]
        out = torch.addmm(b2[:, None], W2, h.t())                   # [10, m], class-major
        out.sub_(out.amax(0, keepdim=True)).exp_()
        out.div_(out.sum(0, keepdim=True))
        out[Yall, onehot_rows] -= 1.0
        out.mul_(1.0 / m_all)
        gW2, gb2 = out @ h, out.sum(1)
        gh = torch.ops.aten.threshold_backward(out.t() @ W2, h, 0)
        return gh.t() @ Zall, gh.sum(0), gW2, gb2
    fns["limit_hand"] = limit_hand, repeats
    limit()  # both limits compute the same gradient (float32 rounding apart)
    err = max(float((a - p.grad).abs().max() / p.grad.abs().max()) for a, p in zip(limit_hand(), model.parameters()))
    assert err < 1e-4, f"the hand-written limit disagrees with autograd ({err:.1e})"
    if compile_limit:  # PERF_NOTES' limit: the autograd pass under torch.compile (needs a C++ compiler)
        t0 = time.perf_counter()
        fns["limit_compiled"] = torch.compile(limit), repeats
        fns["limit_compiled"][0]()
        print(f"(torch.compile of the limit took {time.perf_counter() - t0:.0f} s)")
    # the dispatch floor: the same round with 2 clients, where the arithmetic is negligible
    prob2, x2 = build(2, torch.float32, "mlp")
    o2, c2, g2, st2 = MinibatchOracle(prob2, BATCH), SimulatedComm(2), torch.Generator().manual_seed(1), meth.init(x2, prob2)
    fns["floor"] = (lambda: meth.step(st2, o2, c2, g2)), repeats
    for f, _ in fns.values():
        f()  # warm-up
    res = {k: [] for k in fns}
    order = list(fns)
    for trial in range(trials):  # alternate the order so that a drift in speed hits every variant alike
        for k in (order if trial % 2 == 0 else order[::-1]):
            f, r = fns[k]
            t = time.perf_counter()
            for _ in range(r):
                f()
            res[k].append((time.perf_counter() - t) / r * 1e3)
    ms = {k: float(np.median(v)) for k, v in res.items()}
    mlp_t = np.array(res["mlp"])
    print(f"\n{n} clients, MLP {D_IN}-{HIDDEN}-{CLASSES}, K={K}, batch {BATCH}, float32, {threads} threads "
          f"({n * K * BATCH} samples per round); median of {trials} interleaved trials")
    print(f"{'way of computing a round':<46} {'ms/round':>9} {'vs hetlab mlp':>14}")
    names = {"loop": "per-client loop (deepcopy + torch.optim)", "vmap": "hetlab, vmap(grad) path",
             "mlp": "hetlab, hand-batched MLP path", "floor": "hetlab, the same round with 2 clients",
             "limit": "limit: one autograd pass over all samples", "limit_hand": "limit: that pass written by hand",
             "limit_compiled": "limit: the autograd pass, torch.compile"}
    for k in ("loop", "vmap", "mlp", "floor", "limit", "limit_hand", "limit_compiled"):
        if k in ms:
            print(f"{names[k]:<46} {ms[k]:>9.2f} {ms[k] / ms['mlp']:>13.2f}x")
    print("(hetlab's rounds include drawing the minibatches; the loop and the limits get them for free)")
    speedup = np.array(res["loop"]) / mlp_t
    print(f"\n(a) speed-up of hetlab (mlp path) over the loop: {np.median(speedup):.1f}x "
          f"[{speedup.min():.1f}, {speedup.max():.1f}] over trials  (target >= 30x)")
    ratios = {}
    for k in ("limit", "limit_hand", "limit_compiled"):
        if k in res:
            ratios[k] = r = mlp_t / np.array(res[k])
            print(f"(b) hetlab (mlp path) / {names[k][7:]}: {np.median(r):.2f}x [{r.min():.2f}, {r.max():.2f}]"
                  + ("  (target <= 1.5x)" if k == "limit" else ""))
    floor = np.array(res["floor"]) / mlp_t
    print(f"    a round's fixed cost (2 clients) is {np.median(floor):.0%} of the 100-client round: {K} dependent "
          "steps of several dozen small kernels each, which a single pass pays once")
    return ms, speedup, ratios


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
    ap.add_argument("--trials", type=int, default=9, help="interleaved timing trials (ratios are paired per trial)")
    ap.add_argument("--compile-limit", action="store_true", help="also time the limit under torch.compile (slow start)")
    ap.add_argument("--scaling", type=int, nargs="*", default=None)
    ap.add_argument("--scaling-one", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.scaling_one is not None:
        scaling_one(a.scaling_one, a.rounds, a.threads)
    elif a.scaling:
        scaling(a.scaling, a.rounds, a.threads)
    else:
        compare(a.clients, a.repeats, a.threads, a.trials, a.compile_limit)
