"""Stochastic oracles: unbiasedness and exact noise levels (M5 Monte Carlo), sampling rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hetlab.exact import mc_agrees, mc_interval
from hetlab.problems import (ExactOracle, GaussianNoiseOracle, MinibatchOracle, Oracle,
                             random_least_squares, random_logistic, random_quadratics)

DT = torch.float64


def _ls():
    return random_least_squares(4, 8, 3, counts=[8, 5, 6, 4], lam=0.05, seed=3)


def _logistic():
    return random_logistic(3, 7, 2, counts=[7, 4, 6], lam=0.1, seed=4)


def _repeat_idx(n, N):
    """Every client id ``N`` times: one oracle call then gives ``N`` independent draws per client."""
    return torch.arange(n).repeat_interleave(N)


def test_exact_oracle():
    P = random_quadratics(4, 3, seed=0)
    o = ExactOracle(P)
    assert o is not None and Oracle is ExactOracle and not o.stochastic
    X = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert torch.equal(o.grad(X), P.grad(X))
    assert torch.equal(o.sigma_sq(torch.zeros(3, dtype=DT)), torch.zeros(4, dtype=DT))


def test_gaussian_noise_oracle_moments():
    P = random_quadratics(4, 3, seed=1)
    sigma = 0.7
    o = GaussianNoiseOracle(P, sigma)
    assert o.stochastic
    torch.testing.assert_close(o.sigma_sq(torch.zeros(3, dtype=DT)), torch.full((4,), sigma ** 2, dtype=DT))
    N = 20_000
    idx = _repeat_idx(P.n, N)
    x = torch.tensor([0.3, -1.0, 2.0], dtype=DT)
    X = x.expand(len(idx), 3)
    gen = torch.Generator().manual_seed(7)
    noise = (o.grad(X, idx, gen) - P.grad(X, idx)).reshape(P.n, N, 3).numpy()
    for i in range(P.n):
        for k in range(3):  # zero mean, coordinate by coordinate
            _, lo, hi = mc_interval(noise[i, :, k])
            assert lo <= 0.0 <= hi
        sq = (noise[i] ** 2).sum(1)
        assert mc_agrees(sq, sigma ** 2, rel_tol=0.05)
        # isotropic: each coordinate carries sigma^2 / d
        for k in range(3):
            assert mc_agrees(noise[i, :, k] ** 2, sigma ** 2 / 3, rel_tol=0.05)


def test_gaussian_noise_oracle_seeded_and_validated():
    P = random_quadratics(4, 3, seed=1)
    o = GaussianNoiseOracle(P, 1.0)
    X = torch.zeros(4, 3, dtype=DT)
    a = o.grad(X, None, torch.Generator().manual_seed(3))
    b = o.grad(X, None, torch.Generator().manual_seed(3))
    c = o.grad(X, None, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoiseOracle(P, -1.0)
    assert torch.equal(GaussianNoiseOracle(P, 0.0).grad(X, None, torch.Generator()), P.grad(X))


@pytest.mark.parametrize("make", [_ls, _logistic], ids=["ls", "logistic"])
def test_minibatch_without_replacement_distinct_and_no_padding(make):
    P = make()
    b = int(P.counts.min())
    o = MinibatchOracle(P, b, replace=False)
    gen = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(P.n)]
    for _ in range(300):
        S = o.sample(None, gen)
        assert S.shape == (P.n, b)
        for i in range(P.n):
            row = S[i].tolist()
            assert len(set(row)) == b  # no repeated index within a client
            assert max(row) < int(P.counts[i]) and min(row) >= 0  # never padding
            seen[i].update(row)
    assert all(seen[i] == set(range(int(P.counts[i]))) for i in range(P.n))  # every sample reachable
    # with a subset of clients the counts of those clients apply
    idx = torch.tensor([P.n - 1, 0])
    S = o.sample(idx, gen)
    assert S.shape == (2, b) and int(S[0].max()) < int(P.counts[P.n - 1])


def test_minibatch_with_replacement_range():
    P = _ls()
    o = MinibatchOracle(P, 10, replace=True)  # larger than every count: allowed with replacement
    S = o.sample(None, torch.Generator().manual_seed(1))
    assert S.shape == (P.n, 10)
    for i in range(P.n):
        assert 0 <= int(S[i].min()) and int(S[i].max()) < int(P.counts[i])
    assert any(len(set(S[i].tolist())) < 10 for i in range(P.n))  # repeats do happen


@pytest.mark.parametrize("make", [_ls, _logistic], ids=["ls", "logistic"])
@pytest.mark.parametrize("replace", [False, True])
def test_minibatch_variance_monte_carlo(make, replace):
    """M5: the Monte Carlo E||g_i - grad f_i(x)||^2 matches ``sigma_sq(x)`` for every client."""
    P = make()
    b = 3
    o = MinibatchOracle(P, b, replace=replace)
    x = torch.tensor([0.4, -0.8, 0.5][: P.d], dtype=DT)
    N = 40_000
    idx = _repeat_idx(P.n, N)
    X = x.expand(len(idx), P.d)
    G = o.grad(X, idx, torch.Generator().manual_seed(11)).reshape(P.n, N, P.d)
    exact = P.local_grads(x)
    dev = G - exact[:, None, :]
    pred = o.sigma_sq(x).numpy()
    for i in range(P.n):
        for k in range(P.d):  # unbiased
            _, lo, hi = mc_interval(dev[i, :, k].numpy())
            assert lo <= 0.0 <= hi
        sq = (dev[i] ** 2).sum(1).numpy()
        assert pred[i] > 0
        assert mc_agrees(sq, float(pred[i]), rel_tol=0.05), (i, sq.mean(), pred[i])


def test_minibatch_variance_brute_force_enumeration():
    """Exact sigma^2 by enumerating every size-b subset (without replacement) of each client."""
    from itertools import combinations, product
    P = _ls()
    b = 2
    x = torch.tensor([0.2, 0.1, -0.3], dtype=DT)
    for replace in (False, True):
        pred = MinibatchOracle(P, b, replace=replace).sigma_sq(x)
        for i in range(P.n):
            m = int(P.counts[i])
            Gi = P.per_sample_grads(P.stack(x))[i, :m].numpy()
            gbar = Gi.mean(0)
            draws = product(range(m), repeat=b) if replace else combinations(range(m), b)
            vals = [np.sum((Gi[list(S)].mean(0) - gbar) ** 2) for S in draws]
            assert abs(np.mean(vals) - float(pred[i])) <= 1e-12 * np.mean(vals)


def test_full_batch_without_replacement_is_exact():
    P = random_least_squares(3, 5, 2, counts=[5, 5, 5], seed=2)
    o = MinibatchOracle(P, 5, replace=False)
    X = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(o.grad(X, None, torch.Generator().manual_seed(1)), P.grad(X),
                               rtol=1e-13, atol=1e-13)
    assert torch.all(o.sigma_sq(torch.zeros(2, dtype=DT)) == 0)


def test_minibatch_oracle_validation():
    P = _ls()
    with pytest.raises(ValueError, match="batch_size 5 exceeds the smallest client's sample count 4"):
        MinibatchOracle(P, 5, replace=False)
    MinibatchOracle(P, 5, replace=True)  # fine with replacement
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchOracle(P, 0)
    with pytest.raises(TypeError, match="per-sample"):
        MinibatchOracle(random_quadratics(3, 2, seed=0), 1)


@pytest.mark.parametrize("replace", [False, True])
def test_minibatch_oracle_seeded(replace):
    P = _logistic()
    o = MinibatchOracle(P, 2, replace=replace)
    X = torch.randn(P.n, P.d, generator=torch.Generator().manual_seed(0), dtype=DT)
    draws = [o.grad(X, None, torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    S1 = [o.sample(None, torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(S1[0], S1[1])


@pytest.mark.parametrize("replace", [False, True])
def test_sample_many_equals_repeated_sample(replace):
    """All K steps' minibatches drawn at once are the K draws one at a time (same generator)."""
    P = _logistic()
    o = MinibatchOracle(P, 3, replace=replace)
    for idx in (None, torch.tensor([2, 0])):
        A = o.sample_many(6, idx, torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(4)
        B = torch.stack([o.sample(idx, g) for _ in range(6)])
        assert A.shape == (6, P.n if idx is None else 2, 3) and torch.equal(A, B)


def _uniform_subsets(rows, m, alpha=1e-3):
    """Distinct indices below m in every row, and a chi-square test over the C(m, b) subsets not rejected."""
    from itertools import combinations
    from scipy import stats
    rows = torch.sort(rows, dim=1).values
    if not bool((rows[:, 1:] > rows[:, :-1]).all()) or int(rows.max()) >= m or int(rows.min()) < 0:
        return False
    code = {c: k for k, c in enumerate(combinations(range(m), rows.shape[1]))}
    counts = np.bincount([code[tuple(r)] for r in rows.tolist()], minlength=len(code))
    return stats.chisquare(counts).pvalue > alpha


def test_floyd_sampler_gives_every_subset_equally_often():
    """Sampling without replacement is uniform over the C(m, b) subsets, for clients of different
    sizes (m = 5, 4, 6 with b = 3); a classic slip of Floyd's algorithm fails the same test."""
    P = random_least_squares(3, 6, 2, counts=[5, 4, 6], seed=0)
    S = MinibatchOracle(P, 3).sample_many(60_000, None, torch.Generator().manual_seed(0))  # [N, 3, 3]
    for i, m in enumerate((5, 4, 6)):
        assert _uniform_subsets(S[:, i], m)
    # control: t drawn uniform on {0..m-1} instead of {0..j}
    m, b = 6, 3
    u = torch.rand(60_000, b, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    T = (u * m).long()
    for s_ in range(1, b):
        dup = (T[:, :s_] == T[:, s_:s_ + 1]).any(1)
        T[:, s_] = torch.where(dup, torch.full_like(T[:, s_], m - b + s_), T[:, s_])
    assert not _uniform_subsets(T, m)
