"""Checks D1, D2 (median- vs mean-based aggregation) and the closed forms behind them
(``hetlab.closed_forms_median``).

``tests/test_proofs_check.py`` already runs every check with seed 0 and asserts that its negative controls
fail. Here: the verdicts and controls by name, another seed, the facts the checks rely on (the stacked fast
simulation *is* the library's signSGD-MV with the same perturbation; the subset sums agree with an
independent dynamic programme and with Monte Carlo), and mutation tests: a wrong prediction or a broken
implementation must make the check fail.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import proofs_check
from hetlab import aggregate as agg
from hetlab import closed_forms_median as cfm
from hetlab.algorithms import GD

D1 = proofs_check.get("D1")
D2 = proofs_check.get("D2")


@pytest.fixture(scope="module")
def res_d1():
    return D1.run(seed=0)


@pytest.fixture(scope="module")
def res_d2():
    return D2.run(seed=0)


@functools.lru_cache(maxsize=None)
def _cached_rate(seed):
    return D2.rate_experiment(seed)


@pytest.fixture
def fast_d2(monkeypatch):
    """D2 with its (seed-deterministic, ~3 s) rate experiment memoised, for mutations that do not touch it."""
    _cached_rate(0)  # filled with the unmutated code, before the test patches anything
    monkeypatch.setattr(D2, "rate_experiment", lambda seed=0: _cached_rate(seed))
    return D2

_SIM_CACHE: dict = {}


@pytest.fixture
def fast_d1(monkeypatch):
    """D1 with its stacked simulation (seed 0, ~1.5 s) memoised, for mutations that do not touch it
    (the simulation uses none of the patched names)."""
    real = D1.simulate_majority_vote

    def cached(*args, **kw):
        if "d1" not in _SIM_CACHE:
            _SIM_CACHE["d1"] = real(*args, **kw)
        return _SIM_CACHE["d1"]

    monkeypatch.setattr(D1, "simulate_majority_vote", cached)
    return D1

# ----------------------------------------------------------------------------- the checks


def test_d1_passes_and_its_controls_fail(res_d1):
    assert res_d1.passed, [c.name for c in res_d1.criteria if not c.ok]
    assert res_d1.seed == 0 and len(res_d1.negative_controls) == 3
    assert all(not c.holds for c in res_d1.negative_controls)
    names = " ".join(c.name for c in res_d1.negative_controls)
    assert "medianGD reaches x_star" in names and "slope <= -0.12" in names and "even n" in names


def test_d1_numbers_match_theory(res_d1):
    d = res_d1.data
    assert d["x_med"] == 1.0 and abs(d["x_star"] - 8 / 7) < 1e-15
    assert abs(d["grad_norm_x_med"] - 2.577) < 1e-3          # THEORY reference 2.577
    assert abs(d["avg_grad_norm"][-1] - 2.579) < 1e-3        # THEORY reference 2.579
    assert d["mismatch_odd"] == 0 and d["mismatch_even"] > 10_000


def test_d2_passes_and_its_controls_fail(res_d2):
    assert res_d2.passed, [c.name for c in res_d2.criteria if not c.ok]
    assert len(res_d2.negative_controls) == 3 and all(not c.holds for c in res_d2.negative_controls)
    s = res_d2.data["slopes"]
    assert abs(s["gap"] + 1.985) < 5e-3 and abs(s["sign"] + 2.97) < 1e-2 and abs(s["offset"] + 1.98) < 1e-2
    assert -0.25 < s["noisy"] < -0.12 and s["noiseless"] > -0.02


@pytest.mark.parametrize("cid", ["D1", "D2"])
def test_checks_pass_for_seed_1(cid):
    res = proofs_check.run_check(cid, seed=1)
    assert res.passed, [c.name for c in res.criteria if not c.ok]
    assert res.seed == 1


def test_figures_draw(res_d1, res_d2):
    import io

    import matplotlib.pyplot as plt
    for ax in (D1.figure(res_d1), D2.figure(res_d2), D2.figure_rate(res_d2)):
        assert ax.lines
        ax.figure.savefig(io.BytesIO(), format="png")      # renders the labels (mathtext errors surface here)
    plt.close("all")

# ------------------------------------------------------------- the fast simulation is the library


@pytest.mark.parametrize("seed", [0, 3])
def test_stacked_simulation_equals_library_signsgd(seed):
    a, m = D2.rate_problem(seed)
    lrs, bs, T, chunk = [0.01, 0.02, 0.01, 0.005], [1.0, 0.0, 3.0, 0.5], 700, 300
    avg, xT = D2.simulate_majority_vote(a, m, lrs, bs, T, torch.Generator().manual_seed(seed), chunk=chunk)
    noisy_pos = {0: 0, 2: 1, 3: 2}
    for r, (lr, b) in enumerate(zip(lrs, bs)):
        la, lx = D2.library_majority_vote(a, m, lr, b, T, 3, noisy_pos.get(r, 0), seed, chunk=chunk)
        assert np.array_equal(lx, xT[r]), r            # the same signs, hence bitwise the same iterates
        assert abs(la - avg[r]) <= 1e-12 * avg[r]


def test_stacked_simulation_counts_each_run_over_its_own_horizon():
    a, m = D2.rate_problem(2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    long, _ = D2.simulate_majority_vote(a, m, [0.01, 0.01], 0.0, [200, 500], gen())
    alone, _ = D2.simulate_majority_vote(a, m, [0.01], 0.0, 200, gen())
    assert abs(long[0] - alone[0]) < 1e-14 and long[1] != long[0]


def test_noiseless_signgd_ends_in_a_band_around_x_med():
    a, m = D2.rate_problem(0)
    lr = 1e-3
    _, xT = D2.simulate_majority_vote(a, m, [lr], 0.0, 20_000, torch.Generator().manual_seed(0))
    assert np.abs(xT[0] - cfm.median_fixed_point(a, m)).max() <= lr * (1 + 1e-9)

# ------------------------------------------------------------------------------ closed forms


def _poisson_binomial_at_least(p, k1):
    """P(at least k1 successes) by the O(n^2) dynamic programme (independent of the subset sum)."""
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for pi in p:
        dist[1:] = dist[1:] * (1 - pi) + dist[:-1] * pi
        dist[0] *= 1 - pi
    return dist[k1:].sum()


@pytest.mark.parametrize("n", [1, 3, 5, 7, 9])
def test_subset_sum_equals_the_dynamic_programme(n):
    rng = np.random.default_rng(n)
    g = rng.standard_normal(n) * 2
    for z in (-1.5, 0.0, 0.7, 3.0):
        for b in (0.5, 4.0):
            F = cfm.noise_cdf((z - g) / b)
            assert abs(cfm.median_cdf(z, g, b) - _poisson_binomial_at_least(F, (n - 1) // 2 + 1)) < 1e-14


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_expected_median_and_sign_against_monte_carlo(noise):
    from hetlab.algorithms import Perturbation
    from hetlab.exact import mc_agrees
    g = np.array([-1.0, 0.3, 0.5, 2.0, 4.0])
    b, N = 3.0, 1_000_000
    # M5 (3 standard errors) fails for about 0.3% of the seeds by construction: with seed 1 the Gaussian
    # vote happens to sit 3.4 SE off; seed 0 is the default seed of the project
    X = torch.as_tensor(g)[:, None] + Perturbation(noise, b).sample((5, N), torch.float64,
                                                                     torch.Generator().manual_seed(0))
    assert mc_agrees(agg.coordinate_median(X).numpy(), cfm.expected_median(g, b, noise), rel_tol=0.02)
    assert mc_agrees(agg.majority_vote(X).numpy(), cfm.expected_sign_median(g, b, noise), rel_tol=0.02)


def test_expected_median_exact_cases():
    # symmetric values: the median is symmetric around the centre, whatever b
    for b in (0.3, 2.0, 10.0):
        assert abs(cfm.expected_median([1.0, 2.0, 3.0], b) - 2.0) < 1e-11
        assert abs(cfm.expected_median([-4.0, 0.5, 5.0], b, "uniform") - 0.5) < 1e-11
    # one worker: E[g + b xi] = g
    assert abs(cfm.expected_median([0.7], 5.0) - 0.7) < 1e-11
    assert abs(cfm.expected_median([0.7], 5.0, "uniform") - 0.7) < 1e-11
    # one worker, sign: 2 Phi(g/b) - 1
    assert abs(cfm.expected_sign_median([0.7], 2.0) - math.erf(0.35 / math.sqrt(2))) < 1e-15


@pytest.mark.parametrize("n", [1, 3, 5, 9, 15])
@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_sign_slope_constant_is_the_derivative_at_zero(n, noise):
    eps, b = 1e-5, 1.0
    g = np.full(n, eps)
    deriv = cfm.expected_sign_median(g, b, noise) / eps
    assert abs(deriv - cfm.sign_slope_constant(n, noise)) < 1e-6 * cfm.sign_slope_constant(n, noise)
    if n == 3 and noise == "gaussian":
        assert abs(cfm.sign_slope_constant(3) - 3 / math.sqrt(2 * math.pi)) < 1e-15


def test_median_fixed_point_cases():
    assert cfm.median_fixed_point([1.0, 2.0, 0.5], [0.0, 1.0, 4.0]) == 1.0
    m = np.array([[3.0, -1.0], [0.0, 2.0], [10.0, 5.0], [-2.0, 0.0], [1.0, 1.0]])
    assert np.array_equal(cfm.median_fixed_point(np.ones_like(m), m), np.median(m, axis=0))
    m4 = np.array([0.0, 1.0, 3.0, 10.0])                     # even n: the mean of the middle pair
    assert abs(cfm.median_fixed_point(np.ones(4), m4) - 2.0) < 1e-15
    with pytest.raises(ValueError, match="positive"):
        cfm.median_fixed_point([1.0, 0.0, 1.0], [0.0, 1.0, 2.0])


def test_noisy_sign_root_tends_to_x_star():
    a, m = D2.A1, D2.M1
    xs = (a * m).sum() / a.sum()
    offs = [abs(cfm.noisy_sign_root(a, m, b) - xs) for b in (2.0, 8.0, 32.0)]
    assert offs[0] > offs[1] > offs[2] and offs[2] < 1e-3
    assert abs(cfm.noisy_sign_root(a, m, 1e-3) - 1.0) < 1e-6          # tiny noise: back to x_med


def test_closed_form_errors():
    with pytest.raises(ValueError, match="odd"):
        cfm.median_cdf(0.0, [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="positive"):
        cfm.expected_median([1.0, 2.0, 3.0], 0.0)
    with pytest.raises(ValueError, match="noise"):
        cfm.noise_cdf(0.0, "laplace")
    with pytest.raises(ValueError, match="odd"):
        cfm.sign_slope_constant(4)
    with pytest.raises(ValueError, match="too many"):
        cfm.median_cdf(0.0, np.zeros(21), 1.0)
    with pytest.raises(ValueError, match="not separable"):
        from hetlab.problems import random_quadratics
        cfm.median_fixed_point_problem(random_quadratics(3, 2, seed=0))


def test_median_fixed_point_of_a_problem():
    a, m = D2.rate_problem(0)
    assert np.array_equal(cfm.median_fixed_point_problem(D2.as_problem(a, m)), cfm.median_fixed_point(a, m))

# ------------------------------------------------------------------------------ mutation tests


def test_d1_fails_if_the_vote_were_the_sign_of_the_mean(monkeypatch, fast_d1):
    monkeypatch.setattr(D1.agg, "majority_vote", lambda X: torch.sign(X.mean(-2)))
    assert not D1.run().passed


def test_d1_fails_if_median_gd_were_mean_based(monkeypatch, fast_d1):
    monkeypatch.setattr(D1, "MedianSGD", lambda lr: GD(lr))
    res = D1.run()
    assert not res.passed
    assert res.criterion("[control] medianGD reaches x_star (|x_T - x_star| <= 1e-10)").holds


def test_d1_fails_if_the_prediction_were_x_star(monkeypatch, fast_d1):
    monkeypatch.setattr(D1.cfm, "median_fixed_point", lambda a, m, **kw: np.sum(a * m, 0) / np.sum(a, 0))
    assert not D1.run().passed


def test_d1_fails_if_the_predicted_plateau_were_zero(monkeypatch, fast_d1):
    # "signGD-MV converges" (a plateau ||grad f|| = 0, as at x_star) must be refuted by the measurement
    monkeypatch.setattr(D1.cfm, "global_grad_norm_separable", lambda a, m, x: 0.0 * np.linalg.norm(x))
    assert not D1.run().passed


def test_d2_fails_with_a_wrong_sign_constant(monkeypatch, fast_d2):
    real = cfm.sign_slope_constant
    monkeypatch.setattr(fast_d2.cfm, "sign_slope_constant", lambda n, noise="gaussian": real(n, noise) / n)
    assert not fast_d2.run().passed


def test_d2_fails_with_a_wrong_median_cdf(monkeypatch, fast_d2):
    # "at least k successes" instead of k + 1: the CDF of the second order statistic, not the median
    def wrong(z, g, b, noise="gaussian"):
        g = np.asarray(g, dtype=float)
        F = cfm.noise_cdf((np.asarray(z, dtype=float)[..., None] - g) / b, noise)
        return cfm._at_least(F, (len(g) - 1) // 2)

    monkeypatch.setattr(fast_d2.cfm, "median_cdf", wrong)
    assert not fast_d2.run().passed


def test_d2_fails_if_the_library_perturbation_were_uniform(monkeypatch, fast_d2):
    from hetlab.algorithms import Perturbation
    monkeypatch.setattr(fast_d2, "Perturbation", lambda kind, scale: Perturbation("uniform", scale))
    assert not fast_d2.run().passed


def test_d2_fails_if_the_noisy_runs_had_no_noise(monkeypatch):
    real = D2.simulate_majority_vote
    monkeypatch.setattr(D2, "simulate_majority_vote",
                        lambda a, m, lrs, bs, T, gen, **kw: real(a, m, lrs, 0.0, T, gen, **kw))
    res = D2.run()
    assert not res.passed
    noisy = next(c for c in res.criteria if c.name.startswith("(iv) noisy signSGD-MV"))
    assert not noisy.holds
