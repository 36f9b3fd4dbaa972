"""Tests of the exercise answers of the chapter "Median versus mean".

The answers live in ``book/solutions/median.py`` (closed forms in plain NumPy). Each test checks an answer
against an *independent* computation with hetlab: its medianGD / trimmed-mean GD iterated to their fixed
points, its aggregators over every subset of workers and its sub-sampled method, its Byzantine faults,
and the exact subset sums of ``hetlab.closed_forms_median``. A wrong formula in the solutions module makes
the corresponding test fail.
"""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import median as sol  # noqa: E402

from hetlab import aggregate as agg  # noqa: E402
from hetlab import closed_forms_median as cfm  # noqa: E402
from hetlab.algorithms import MedianSGD, RobustAggregationSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.exact import mc_interval  # noqa: E402
from hetlab.faults import ByzantineFaults  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem  # noqa: E402

DT = torch.float64


def problem_1d(a, m):
    a, m = np.asarray(a, float), np.asarray(m, float)
    return QuadraticProblem.from_minimizers(a.reshape(-1, 1, 1), m.reshape(-1, 1))


def iterate_to_fixed_point(method, prob, steps, x0=0.0):
    state, oracle, comm = method.init(torch.tensor([x0], dtype=DT), prob), Oracle(prob), SimulatedComm(prob.n)
    for _ in range(steps):
        state = method.step(state, oracle, comm, None)
    return float(state["x"][0])

# ------------------------------------------------------------------------- med-ex-fixed-point


CASES = [([1.0, 2.0, 0.5], [0.0, 1.0, 4.0]), ([5.0, 0.2, 1.0, 3.0, 0.7], [3.0, -1.0, 8.0, 0.5, 2.0]),
         ([1.0, 3.0, 1.0, 1.0], [0.0, 1.0, 2.0, 10.0]), ([0.5, 2.0, 1.5, 4.0], [-3.0, 2.0, 0.0, 1.0]),
         ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [4.0, -2.0, 0.0, 9.0, 1.0, 3.0]), ([2.0, 0.3, 1.0, 0.6, 1.7, 1.1],
                                                                            [1.0, 5.0, -4.0, 2.0, 0.0, 7.0])]


@pytest.mark.parametrize("a, m", CASES)
def test_median_point_is_where_library_median_gd_stops(a, m):
    prob = problem_1d(a, m)
    lr = 1.0 / prob.L
    x = iterate_to_fixed_point(MedianSGD(lr), prob, 4000)
    assert abs(x - sol.median_point_1d(a, m)) < 1e-10
    assert abs(sol.median_point_1d(a, m) - cfm.median_fixed_point(a, m)) < 1e-12


def test_odd_n_fixed_point_ignores_the_curvatures():
    rng = np.random.default_rng(0)
    m = rng.standard_normal(7)
    for _ in range(5):
        a = rng.uniform(0.1, 10, 7)
        assert sol.median_point_1d(a, m) == np.median(m)
        assert abs(cfm.median_fixed_point(a, m) - np.median(m)) < 1e-15
    # even n: the curvatures matter
    m4 = np.array([0.0, 1.0, 2.0, 10.0])
    assert sol.median_point_1d([1, 3, 1, 1], m4) == 1.25 != sol.median_point_1d([1, 1, 1, 1], m4) == 1.5

# --------------------------------------------------------------------------------- med-ex-cn


@pytest.mark.parametrize("n", [1, 3, 5, 7, 11, 15])
def test_sign_slope_constant_against_exact_subset_sums(n):
    eps = 1e-6
    g = np.linspace(-1.0, 1.0, n) * 0.3 * (n > 1) + eps   # symmetric spread + eps: mean eps, no cubic term
    b = 200.0
    exact = cfm.expected_sign_median(g, b)
    assert abs(exact / (eps / b) - sol.sign_slope_constant(n)) < 1e-3 * sol.sign_slope_constant(n) + 1e-3
    # the uniform perturbation has density 1/2 at 0
    assert abs(cfm.expected_sign_median(np.full(n, eps), 1.0, "uniform") / eps
               - sol.sign_slope_constant(n, 0.5)) < 1e-6 * sol.sign_slope_constant(n, 0.5)


def test_sign_slope_constant_by_monte_carlo_with_the_library_vote():
    from hetlab.algorithms import Perturbation
    n, b, N = 5, 10.0, 2_000_000
    g = np.array([-1.0, 0.5, 0.0, 2.0, 1.0])                      # mean 0.5
    X = torch.as_tensor(g)[:, None] + Perturbation("gaussian", b).sample((n, N), DT, torch.Generator().manual_seed(0))
    m, lo, hi = mc_interval(agg.majority_vote(X).numpy())
    pred = sol.sign_slope_constant(n) * g.mean() / b
    assert lo - 2e-3 <= pred <= hi + 2e-3                       # O(b^-3) = ~1e-3 away from the linear term


def test_sign_slope_asymptotics():
    for n in (101, 401, 1601):
        assert abs(sol.sign_slope_constant(n) / sol.sign_slope_asymptotic(n) - 1) < 1.5 / n
    assert abs(sol.sign_slope_asymptotic(100) - 2 / math.pi * 10) < 1e-12

# -------------------------------------------------------------------------- med-ex-subsample


@pytest.mark.parametrize("n, m", [(3, 1), (3, 3), (5, 3), (7, 3), (7, 5), (9, 5)])
def test_subsample_weights_by_enumerating_subsets_with_the_library_median(n, m):
    rng = np.random.default_rng(n * 10 + m)
    G = torch.as_tensor(rng.standard_normal((n, 4)))
    subsets = list(itertools.combinations(range(n), m))
    enum = torch.stack([agg.coordinate_median(G[list(S)]) for S in subsets]).mean(0).numpy()
    for c in range(4):
        assert abs(enum[c] - sol.expected_subsample_median(G[:, c].numpy(), m)) < 1e-13
    w = sol.subsample_median_weights(n, m)
    assert abs(w.sum() - 1) < 1e-15


def test_subsample_one_is_the_mean_and_all_is_the_median():
    g = np.array([0.0, 0.0, 3.0, -1.0, 7.0])
    assert abs(sol.expected_subsample_median(g, 1) - g.mean()) < 1e-15
    assert sol.expected_subsample_median(g, 5) == np.median(g)


def test_subsampled_median_sgd_direction_by_monte_carlo():
    prob = problem_1d([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 0.0, -0.5, -2.0, -6.0])
    x = torch.zeros(1, dtype=DT)                      # gradients x - m_i = (-1, 0, 0.5, 2, 6)
    g = np.array([-1.0, 0.0, 0.5, 2.0, 6.0])
    meth, oracle, comm = MedianSGD(0.1, subsample=3), Oracle(prob), SimulatedComm(5)
    gen = torch.Generator().manual_seed(0)
    v = np.array([float(meth.direction(x, oracle, comm, gen)[0]) for _ in range(20_000)])
    m, lo, hi = mc_interval(v)
    assert lo <= sol.expected_subsample_median(g, 3) <= hi
    assert abs(sol.expected_subsample_median(g, 3) - 0.8) < 1e-15

# -------------------------------------------------------------------------- med-ex-byzantine


def _identical_rows(n, d=3, seed=0):
    g = torch.as_tensor(np.random.default_rng(seed).uniform(0.5, 2.0, d))
    return g, g.expand(n, d).clone()


@pytest.mark.parametrize("n", [5, 6, 10, 11])
@pytest.mark.parametrize("lam", [0.5, 1.0, 3.0, 10.0])
def test_mean_and_median_factors_with_library_faults(n, lam):
    g, G = _identical_rows(n)
    for f in range(n + 1):
        faulty = ByzantineFaults(count=f, attack="sign_flip", scale=lam, seed=f).apply(G)
        assert torch.allclose(agg.mean(faulty), sol.mean_factor(n, f, lam) * g, rtol=1e-13, atol=1e-13)
        assert torch.allclose(agg.coordinate_median(faulty), sol.median_factor(n, f, lam) * g, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", [4, 5, 10, 11, 20])
@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0, 9.0, 10.0])
def test_min_attackers_by_scanning_the_library(n, lam):
    g, G = _identical_rows(n, seed=1)
    first_mean = next(f for f in range(n + 1) if float(agg.mean(
        ByzantineFaults(count=f, attack="sign_flip", scale=lam).apply(G)) @ g) < -1e-12)  # strictly uphill
    assert first_mean == sol.min_attackers_reversing_mean(n, lam)
    first_med = next(f for f in range(n + 1) if not torch.allclose(agg.coordinate_median(
        ByzantineFaults(count=f, attack="sign_flip", scale=lam).apply(G)), g))
    assert first_med == sol.min_attackers_breaking_median(n)


def test_median_gd_with_attackers_on_identical_workers():
    n = 7
    prob = problem_1d([1.5] * n, [2.0] * n)
    for f in range(n):
        meth = RobustAggregationSGD(0.2, "median", faults=ByzantineFaults(count=f, attack="sign_flip", scale=3.0))
        x = iterate_to_fixed_point(meth, prob, 200, x0=0.0)
        ok = abs(x - 2.0) < 1e-10
        assert ok == (f < sol.min_attackers_breaking_median(n)), f

# ---------------------------------------------------------------------------- med-ex-trimmed


@pytest.mark.parametrize("trim", [0, 1, 2, 3])
def test_trimmed_mean_gd_fixed_point(trim):
    m = np.array([0.0, 1.0, 2.0, 3.0, 100.0, -7.0, 0.5])
    prob = problem_1d([1.3] * 7, m)
    x = iterate_to_fixed_point(RobustAggregationSGD(0.5, agg.TrimmedMean(trim)), prob, 600)
    assert abs(x - sol.trimmed_fixed_point_equal_curvature(m, trim)) < 1e-10


def test_trimmed_fixed_point_needs_equal_curvatures():
    m = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    prob = problem_1d([1.0, 5.0, 1.0, 0.2, 1.0], m)
    x = iterate_to_fixed_point(RobustAggregationSGD(0.1, agg.TrimmedMean(1)), prob, 3000)
    assert abs(x - sol.trimmed_fixed_point_equal_curvature(m, 1)) > 0.05
