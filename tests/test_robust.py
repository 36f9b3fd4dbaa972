"""Median/sign methods (``hetlab.algorithms.robust``) and Byzantine workers (``hetlab.faults``):
reductions to known methods, the perturbation, sub-sampling, error feedback, faults, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hetlab import aggregate as agg
from hetlab import closed_forms_median as cfm
from hetlab.algorithms import (GD, EFSignSGD, MedianSGD, NoisyMedianSGD, NoisySignSGD, Perturbation,
                               RobustAggregationSGD, SignSGDMajorityVote)
from hetlab.comm import SimulatedComm
from hetlab.faults import ByzantineFaults, honest_problem
from hetlab.problems import Oracle, QuadraticProblem, random_quadratics

from conftest import run_rounds

DT = torch.float64


def traj(method, problem, rounds, *, oracle=None, seed=0, x0=None):
    out = []
    run_rounds(method, problem, rounds, oracle=oracle, seed=seed, x0=x0,
               every=lambda r, s: out.append(method.model(s).clone()))
    return torch.stack(out)


def separable(n=5, d=4, seed=0, hetero=True):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, (n, d))
    m = 2.0 * rng.standard_normal((n, d))
    if not hetero:
        a, m = np.broadcast_to(a[:1], (n, d)).copy(), np.broadcast_to(m[:1], (n, d)).copy()
    A = np.stack([np.diag(r) for r in a])
    return QuadraticProblem.from_minimizers(A, m), a, m


def identical_workers(n=5, d=3, seed=0):
    p = random_quadratics(1, d, seed=seed)
    return QuadraticProblem.from_minimizers(p.A.expand(n, d, d), p.b.expand(n, d))

# ------------------------------------------------------------------------------ reductions


def test_median_sgd_with_identical_workers_is_gd():
    p = identical_workers()
    a, b = traj(MedianSGD(0.2), p, 60), traj(GD(0.2), p, 60)
    assert (a - b).abs().max() < 1e-12


@pytest.mark.parametrize("agg_name", ["median", "geometric_median", "krum", "trimmed_mean"])
def test_robust_rules_with_identical_workers_are_gd(agg_name):
    p = identical_workers(n=7)
    kw = {"krum": {"f": 2}, "trimmed_mean": {"trim": 2}}.get(agg_name, {})
    a = traj(RobustAggregationSGD(0.2, agg.make_aggregator(agg_name, **kw)), p, 40)
    assert (a - traj(GD(0.2), p, 40)).abs().max() < 1e-10


def test_signsgd_mv_with_identical_workers_is_sign_gd():
    p = identical_workers()
    a = traj(SignSGDMajorityVote(0.01), p, 50)
    x = torch.zeros(p.d, dtype=DT)
    for t in range(50):
        x = x - 0.01 * torch.sign(p.global_grad(x))
        assert torch.equal(a[t], x)


def test_mean_aggregation_is_gd():
    p = random_quadratics(6, 4, seed=2)
    assert (traj(RobustAggregationSGD(0.1, "mean"), p, 50) - traj(GD(0.1), p, 50)).abs().max() < 1e-13


def test_trimmed_mean_without_trimming_is_gd_with_trimming_it_is_not():
    p = random_quadratics(5, 3, seed=3)
    g = traj(GD(0.1), p, 200)
    assert (traj(RobustAggregationSGD(0.1, agg.TrimmedMean(0)), p, 200) - g).abs().max() < 1e-13
    assert (traj(RobustAggregationSGD(0.1, agg.TrimmedMean(1)), p, 200) - g).abs().max() > 1e-3


def test_majority_vote_step_is_the_sign_of_the_median_step():
    p, _, _ = separable(n=5, d=6, seed=4)
    x = torch.as_tensor(np.random.default_rng(0).standard_normal(6))
    comm, oracle = SimulatedComm(5), Oracle(p)
    s = SignSGDMajorityVote(0.1).step({"x": x, "round": 0}, oracle, comm, None)
    v = MedianSGD(0.1).direction(x, oracle, comm, None)
    assert torch.equal(s["x"], x - 0.1 * torch.sign(v)) and s["round"] == 1


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_noisy_methods_with_b_zero_are_the_noiseless_ones(noise):
    p, _, _ = separable(seed=5)
    ref_m, ref_s = traj(MedianSGD(0.05), p, 80), traj(SignSGDMajorityVote(0.01), p, 80)
    assert torch.equal(traj(MedianSGD(0.05, b=0.0, noise=noise), p, 80), ref_m)
    assert torch.equal(traj(SignSGDMajorityVote(0.01, b=0.0, noise=noise), p, 80), ref_s)
    assert torch.equal(traj(RobustAggregationSGD(0.05, "median", noise=Perturbation(noise, 0.0)), p, 80), ref_m)
    with pytest.raises(ValueError, match="b = 0"):
        NoisyMedianSGD(0.05, b=0.0)
    with pytest.raises(ValueError, match="b = 0"):
        NoisySignSGD(0.01, b=0.0)


def test_noisy_methods_add_the_perturbation_before_aggregating():
    p, _, _ = separable(seed=6)
    x = torch.as_tensor(np.random.default_rng(1).standard_normal(p.d))
    comm, oracle = SimulatedComm(p.n), Oracle(p)
    for cls, fn in [(NoisyMedianSGD, agg.coordinate_median), (NoisySignSGD, agg.majority_vote)]:
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        v = cls(0.01, b=2.5).direction(x, oracle, comm, g1)
        G = p.local_grads(x) + Perturbation("gaussian", 2.5).sample((p.n, p.d), DT, g2)
        assert torch.equal(v, fn(G))


def test_median_sgd_converges_to_the_closed_form_median_point():
    p, a, m = separable(n=5, d=6, seed=7)
    x = traj(MedianSGD(0.2), p, 3000)[-1].numpy()
    x_med = cfm.median_fixed_point(a, m)
    assert np.abs(x - x_med).max() < 1e-10
    assert np.linalg.norm(x - p.x_star.numpy()) > 0.1


def test_runs_in_the_run_loop():
    from hetlab import run
    p, _, _ = separable(seed=8)
    hist, state = run(NoisyMedianSGD(0.05, b=1.0), p, 30, seed=1, progress=False, eval_every=10)
    assert len(hist.records) == 4 and hist.records[-1]["round"] == 30 and state["round"] == 30

# ------------------------------------------------------------------------------ perturbation


def test_perturbation_moments_and_support():
    g = torch.Generator().manual_seed(0)
    z = Perturbation("gaussian", 3.0).sample((400_000,), DT, g)
    assert abs(z.mean().item()) < 5 * 3 / 400_000 ** 0.5 and abs(z.var().item() / 9 - 1) < 0.01
    u = Perturbation("uniform", 2.0).sample((400_000,), DT, g)
    assert u.min() >= -2 and u.max() <= 2 and abs(u.var().item() / (4 / 3) - 1) < 0.01
    assert Perturbation("uniform").density_at_zero == 0.5
    with pytest.raises(ValueError, match="perturbation"):
        Perturbation("laplace", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        Perturbation("gaussian", -1.0)

# ------------------------------------------------------------------------------ sub-sampling


def test_subsample_n_is_the_full_method_and_one_is_a_random_worker():
    p, _, _ = separable(n=5, seed=9)
    assert torch.equal(traj(MedianSGD(0.05, subsample=5), p, 40), traj(MedianSGD(0.05), p, 40))
    x = torch.zeros(p.d, dtype=DT)
    G = p.local_grads(x)
    comm, oracle, gen = SimulatedComm(5), Oracle(p), torch.Generator().manual_seed(0)
    m1 = MedianSGD(0.05, subsample=1)
    counts = np.zeros(5)
    for _ in range(2000):
        v = m1.direction(x, oracle, comm, gen)
        hit = [i for i in range(5) if torch.equal(v, G[i])]
        assert len(hit) == 1
        counts[hit[0]] += 1
    assert counts.min() > 300          # each worker ~ 400 times


def test_subsampled_median_uses_the_sampled_workers_only():
    from hetlab.algorithms.base import sample_clients
    p, _, _ = separable(n=7, seed=10)
    x = torch.as_tensor(np.random.default_rng(2).standard_normal(p.d))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    v = MedianSGD(0.05, subsample=3).direction(x, Oracle(p), SimulatedComm(7), g1)
    idx = sample_clients(7, 3, g2)
    assert torch.equal(v, agg.coordinate_median(p.local_grads(x)[idx]))

# ------------------------------------------------------------------------------ error feedback


def test_ef_signsgd_in_one_dimension_is_gd():
    # d = 1: ||p||_1 / d * sign(p) = p, so nothing is lost and the memory stays 0
    p = QuadraticProblem.from_minimizers(np.array([1.0, 2.0, 0.5]).reshape(3, 1, 1), np.array([[0.0], [1.0], [4.0]]))
    a, b = traj(EFSignSGD(0.05), p, 300, x0=[5.0]), traj(GD(0.05), p, 300, x0=[5.0])
    assert (a - b).abs().max() < 1e-13


def test_ef_signsgd_memory_identity_and_no_median_bias():
    p, a, m = separable(n=5, d=10, seed=0)
    comm, oracle = SimulatedComm(5), Oracle(p)
    meth = EFSignSGD(0.01)
    s = meth.init(torch.zeros(10, dtype=DT), p)
    gsum = torch.zeros(10, dtype=DT)
    for _ in range(3000):
        gsum += p.global_grad(s["x"])
        s = meth.step(s, oracle, comm, None)
    # x_T = x_0 - lr sum_t grad f(x_t) + mean_i e_i: the memory holds exactly what was not applied
    assert (s["x"] - (-0.01 * gsum + s["e"].mean(0))).abs().max() < 1e-10
    xs, xmed = p.x_star.numpy(), cfm.median_fixed_point(a, m)
    err = np.linalg.norm(s["x"].numpy() - xs)
    assert err < 0.1 < np.linalg.norm(xmed - xs)
    # it oscillates around x_star in a band that shrinks like the step (the majority vote's limit does not
    # move), and its time average is much closer still
    band = {lr: np.linalg.norm(traj(EFSignSGD(lr), p, 3000)[-500:].numpy() - xs, axis=1) for lr in (0.04, 0.01)}
    assert band[0.01].max() < 0.3 * band[0.04].max() and band[0.04].max() < 0.5
    last = traj(EFSignSGD(0.01), p, 3000)[-500:].mean(0).numpy()
    assert np.linalg.norm(last - xs) < 1e-2

# ------------------------------------------------------------------------------ faults


def test_byzantine_set_is_deterministic_from_the_seed():
    f = ByzantineFaults(count=3, seed=7)
    s = f.byzantine_set(10)
    assert torch.equal(s, ByzantineFaults(count=3, seed=7, attack="random").byzantine_set(10))
    assert torch.equal(s, torch.randperm(10, generator=torch.Generator().manual_seed(7))[:3].sort().values)
    assert len(s) == 3 and torch.equal(s, s.sort().values)
    sets = {tuple(ByzantineFaults(count=3, seed=k).byzantine_set(10).tolist()) for k in range(10)}
    assert len(sets) > 1
    assert ByzantineFaults(fraction=0.25, seed=0).num_byzantine(10) == 2        # floor(2.5)
    assert ByzantineFaults(fraction=0.3, seed=0).num_byzantine(10) == 3
    assert f.mask(10).sum() == 3 and len(f.honest_set(10)) == 7


def test_attacks_send_what_was_asked():
    G = torch.as_tensor(np.random.default_rng(0).standard_normal((6, 4)))
    for attack, scale, expect in [("sign_flip", 1.0, lambda g: -g), ("sign_flip", 3.0, lambda g: -3 * g),
                                  ("scale", 100.0, lambda g: 100 * g), ("scale", -2.0, lambda g: -2 * g)]:
        f = ByzantineFaults(count=2, attack=attack, scale=scale, seed=1)
        bad = f.mask(6)
        out = f.apply(G)
        assert torch.equal(out[~bad], G[~bad]) and torch.equal(out[bad], expect(G[bad]))
    f = ByzantineFaults(count=2, attack="random", scale=5.0, seed=1)
    bad = f.mask(6)
    out1 = f.apply(G, torch.Generator().manual_seed(3))
    out2 = f.apply(G, torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2) and torch.equal(out1[~bad], G[~bad])
    z = torch.randn((6, 4), dtype=DT, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out1[bad], 5.0 * z[bad])
    G0 = G.clone()
    ByzantineFaults(count=3).apply(G)
    assert torch.equal(G, G0)          # out of place


def test_random_attack_statistics():
    G = torch.zeros(4, 100_000, dtype=DT)
    f = ByzantineFaults(count=1, attack="random", scale=5.0, seed=2)
    out = f.apply(G, torch.Generator().manual_seed(0))
    row = out[f.byzantine_set(4)[0]]
    assert abs(row.std().item() / 5.0 - 1) < 0.02 and abs(row.mean().item()) < 0.1


def test_apply_with_a_subset_of_workers():
    f = ByzantineFaults(count=2, seed=3)
    bad = f.byzantine_set(8).tolist()
    idx = torch.tensor([bad[0], 7 if 7 not in bad else 6, bad[1]])
    G = torch.ones(3, 2, dtype=DT)
    out = f.apply(G, idx=idx, n=8)
    assert torch.equal(out[:, 0], torch.tensor([-1.0, 1.0, -1.0], dtype=DT))
    with pytest.raises(ValueError, match="total number"):
        f.apply(G, idx=idx)


def test_mean_breaks_with_one_attacker_the_median_does_not_on_homogeneous_data():
    p = identical_workers(n=5)
    xs = p.x_star.numpy()
    faults = ByzantineFaults(count=1, attack="sign_flip", scale=10.0, seed=0)
    med = traj(RobustAggregationSGD(0.2, "median", faults=faults), p, 300)[-1].numpy()
    assert np.linalg.norm(med - xs) < 1e-10
    for name, kw in [("geometric_median", {}), ("krum", {"f": 1}), ("trimmed_mean", {"trim": 1})]:
        x = traj(RobustAggregationSGD(0.2, agg.make_aggregator(name, **kw), faults=faults), p, 300)[-1].numpy()
        assert np.linalg.norm(x - xs) < 1e-8, name
    mean = traj(RobustAggregationSGD(0.2, "mean", faults=faults), p, 100)[-1].numpy()
    assert np.linalg.norm(mean - xs) > 1e3       # the mean step -1.2 grad f climbs: it diverges
    # sign flips by a majority break the median too
    many = ByzantineFaults(count=3, attack="sign_flip", scale=1.0, seed=0)
    x = traj(RobustAggregationSGD(0.2, "median", faults=many), p, 100)[-1].numpy()
    assert np.linalg.norm(x - xs) > 1e3


def test_majority_vote_with_sign_flippers_on_homogeneous_data():
    p = identical_workers(n=5)
    ok = traj(SignSGDMajorityVote(0.001, faults=ByzantineFaults(count=2, seed=1)), p, 4000)[-200:].numpy()
    assert np.abs(ok - p.x_star.numpy()).max() <= 0.001 + 1e-12
    bad = traj(SignSGDMajorityVote(0.001, faults=ByzantineFaults(count=3, seed=1)), p, 2000)[-1].numpy()
    assert np.linalg.norm(bad - p.x_star.numpy()) > 1.0


def test_honest_problem():
    p = random_quadratics(6, 3, seed=4)
    f = ByzantineFaults(count=2, seed=5)
    h = honest_problem(p, f)
    keep = f.honest_set(6)
    assert h.n == 4 and torch.allclose(h.x_star, torch.linalg.solve(p.A[keep].sum(0), p.c[keep].sum(0)))
    assert torch.equal(h.b, p.b[keep]) and honest_problem(p, None) is p
    with pytest.raises(ValueError, match="every worker"):
        honest_problem(p, ByzantineFaults(count=6))

# ------------------------------------------------------------------------------ errors, records


def test_errors():
    p, _, _ = separable(n=5, seed=11)
    with pytest.raises(ValueError, match="positive"):
        MedianSGD(0.0)
    with pytest.raises(ValueError, match="subsample"):
        MedianSGD(0.1, subsample=0)
    with pytest.raises(ValueError, match="between 1 and n"):
        MedianSGD(0.1, subsample=6).init(torch.zeros(p.d, dtype=DT), p)
    with pytest.raises(ValueError, match="only n=5"):
        MedianSGD(0.1, faults=ByzantineFaults(count=6)).init(torch.zeros(p.d, dtype=DT), p)
    with pytest.raises(ValueError, match="stability limit"):
        MedianSGD(2.0 / p.L).init(torch.zeros(p.d, dtype=DT), p)
    SignSGDMajorityVote(10.0).init(torch.zeros(p.d, dtype=DT), p)        # a sign step is not a gradient step
    with pytest.raises(ValueError, match="unknown perturbation"):
        MedianSGD(0.1, b=1.0, noise="cauchy")
    with pytest.raises(ValueError, match=">= 0"):
        NoisySignSGD(0.1, b=-1.0)
    with pytest.raises(ValueError, match="without a noise kind"):
        RobustAggregationSGD(0.1, "median", b=1.0)
    with pytest.raises(ValueError, match="not both"):
        RobustAggregationSGD(0.1, "median", noise=Perturbation("gaussian", 1.0), b=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        ByzantineFaults()
    with pytest.raises(ValueError, match="exactly one"):
        ByzantineFaults(count=1, fraction=0.1)
    with pytest.raises(ValueError, match="unknown attack"):
        ByzantineFaults(count=1, attack="alie")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ByzantineFaults(fraction=1.5)
    with pytest.raises(ValueError, match="positive"):
        EFSignSGD(-1.0)


def test_hyperparameters_are_recorded():
    hp = NoisyMedianSGD(0.05, b=2.0, noise="uniform", faults=ByzantineFaults(count=1), subsample=3).hyperparameters()
    assert hp["b"] == 2.0 and hp["noise"] == "uniform" and hp["subsample"] == 3
    assert "ByzantineFaults" in hp["faults"] and "CoordinateMedian" in hp["aggregator"]
    assert "lr=" in repr(SignSGDMajorityVote(0.1))
