"""Tests of the exercise answers of the chapter "Compression under heterogeneity".

The answers live in ``book/solutions/compression.py`` (closed forms in plain NumPy). Each test checks an
answer against an *independent* computation with hetlab: Monte Carlo over the library's compressors and its
D-QSGD / DIANA methods (mean +- k standard errors from ``hetlab.exact.mc_interval``), the library's bit
counts, its LEAD, CHOCO-SGD and DIANA iterated to their fixed points, and its D-SGD closed forms. The
mutation tests show that the same comparisons reject a wrong formula written in the test.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "solutions"))

import compression as sol  # noqa: E402

from hetlab import closed_forms_compression as cfc  # noqa: E402
from hetlab import closed_forms_gossip as cfg  # noqa: E402
from hetlab.algorithms import DIANA, DQSGD, LEAD, ChocoSGD  # noqa: E402
from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.compress import QSGD, Identity, RandK, RandKUnscaled, ScaledSign, Sign, TopK  # noqa: E402
from hetlab.exact import mc_interval  # noqa: E402
from hetlab.problems import Oracle, QuadraticProblem  # noqa: E402
from hetlab.topology import make_topology  # noqa: E402

DT = torch.float64
SEED = 0


def gen(seed=SEED):
    return torch.Generator().manual_seed(seed)


def run(method, prob, T, seed=SEED, x0=None):
    oracle, comm, g = Oracle(prob), SimulatedComm(prob.n), gen(seed)
    s = method.init(torch.zeros(prob.d, dtype=DT) if x0 is None else x0, prob)
    for _ in range(T):
        s = method.step(s, oracle, comm, g)
    return s


def diag_problem(n, d, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    A = np.stack([np.diag(rng.uniform(0.5, 2.0, d)) for _ in range(n)])
    return QuadraticProblem.from_minimizers(A, scale * rng.standard_normal((n, d)))


def compression_mc(C, v, N, seed):
    V = torch.as_tensor(v, dtype=DT).expand(N, len(v)).clone()
    return ((C(V, gen(seed)) - V) ** 2).sum(1).numpy()

# ---------------------------------------------------------------------------- cmp-ex-variance


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("vseed", [0, 1])
def test_qsgd_variance_by_monte_carlo_with_library_qsgd(s, vseed):
    v = np.random.default_rng(vseed).standard_normal(7) * np.array([1, 3, 0.1, 1, 2, 0.5, 1.0])
    m, lo, hi = mc_interval(compression_mc(QSGD(s, 7), v, 200_000, 10 * s + vseed), k=4)
    exact = sol.qsgd_variance(v, s)
    assert lo <= exact <= hi
    assert exact <= sol.qsgd_variance_bound(7, s) * (v @ v) + 1e-12 <= QSGD(s, 7).omega * (v @ v) + 1e-12


def test_qsgd_variance_mutation_is_detected():
    """p^2 instead of p(1 - p), or s instead of s^2, falls outside the Monte Carlo interval."""
    v = np.array([1.0, -2.0, 3.0, 0.5, -0.25, 0.0])
    m, lo, hi = mc_interval(compression_mc(QSGD(2, 6), v, 200_000, 7), k=4)
    nv = np.linalg.norm(v)
    p = 2 * np.abs(v) / nv - np.floor(2 * np.abs(v) / nv)
    wrong_p2 = nv ** 2 / 4 * float((p * p).sum())
    wrong_s = nv ** 2 / 2 * float((p * (1 - p)).sum())
    assert lo <= sol.qsgd_variance(v, 2) <= hi
    assert not lo <= wrong_p2 <= hi and not lo <= wrong_s <= hi


@pytest.mark.parametrize("d, k", [(5, 1), (6, 2), (8, 3), (7, 7)])
def test_randk_variance_enumeration_and_library_monte_carlo(d, k):
    v = np.random.default_rng(d + k).standard_normal(d)
    assert abs(sol.randk_variance_by_enumeration(v, k) - sol.randk_variance(v, k)) < 1e-12 * (1 + v @ v)
    m, lo, hi = mc_interval(compression_mc(RandK(k, d), v, 100_000, d * k), k=4)
    pred = sol.randk_variance(v, k)
    if pred == 0:                      # k = d: no compression
        assert m == 0
    else:
        assert lo <= pred <= hi
        assert abs(RandK(k, d).omega * (v @ v) - pred) < 1e-12 * (v @ v)


def test_qsgd_bound_is_attained_in_order_and_valid_on_hard_vectors():
    # vectors where every r_j has fractional part 1/2 maximise p(1 - p): the d/(4 s^2) term is attained
    d, s = 16, 2
    v = np.full(d, 1.0)                          # r_j = s/sqrt(d) = 0.5
    assert abs(sol.qsgd_variance(v, s) - d / (4 * s ** 2) * (v @ v)) < 1e-12
    rng = np.random.default_rng(3)
    for _ in range(200):
        w = rng.standard_normal(d) * rng.uniform(0, 3, d)
        assert sol.qsgd_variance(w, s) <= sol.qsgd_variance_bound(d, s) * (w @ w) + 1e-12

# ------------------------------------------------------------------------------- cmp-ex-floor


def _floor_setup():
    n, d, k, eta = 4, 6, 2, 0.3
    B = np.random.default_rng(SEED).standard_normal((n, d))
    prob = QuadraticProblem.from_minimizers(np.broadcast_to(np.eye(d), (n, d, d)).copy(), B)
    zeta = float(((B - B.mean(0)) ** 2).sum(1).mean())
    return n, d, k, eta, B, prob, zeta


def _dqsgd_chains(R, T):
    """E||x_t - x*||^2 for t = T from R independent runs of the library's DQSGD (independent compressors)."""
    n, d, k, eta, B, prob, zeta = _floor_setup()
    x_star = prob.x_star
    errs = np.empty(R)
    for r in range(R):
        s = run(DQSGD(eta, RandK(k, d)), prob, T, seed=1000 + r)
        errs[r] = float(((s["x"] - x_star) ** 2).sum())
    return errs


def test_dqsgd_second_moment_by_monte_carlo_with_library_dqsgd():
    n, d, k, eta, B, prob, zeta = _floor_setup()
    T = 4
    m, lo, hi = mc_interval(_dqsgd_chains(3000, T), k=4)
    pred = sol.dqsgd_second_moment(eta, d / k - 1, zeta, n, float(prob.x_star @ prob.x_star), T)
    assert lo <= pred <= hi
    # mutation: the factor of shared randomness (omega instead of omega / n) is rejected
    a_wrong = (1 - eta) ** 2 + eta ** 2 * (d / k - 1)
    c_wrong = eta ** 2 * (d / k - 1) * zeta
    mw = float(prob.x_star @ prob.x_star)
    for _ in range(T):
        mw = a_wrong * mw + c_wrong
    assert not lo <= mw <= hi


def test_dqsgd_floor_matches_library_closed_form_and_long_run():
    n, d, k, eta, B, prob, zeta = _floor_setup()
    omega = d / k - 1
    assert abs(sol.dqsgd_floor(eta, omega, zeta, n) - cfc.dqsgd_floor(eta, omega, zeta, n)) < 1e-14
    assert abs(sol.dqsgd_second_moment(eta, omega, zeta, n, 5.0, 400) - sol.dqsgd_floor(eta, omega, zeta, n)) < 1e-12
    # time average of one long library run (after burn-in) agrees with the floor to 5%
    oracle, comm, g = Oracle(prob), SimulatedComm(n), gen(5)
    method = DQSGD(eta, RandK(k, d))
    s = method.init(torch.zeros(d, dtype=DT), prob)
    acc, T = 0.0, 20_000
    for t in range(200 + T):
        s = method.step(s, oracle, comm, g)
        if t >= 200:
            acc += float(((s["x"] - prob.x_star) ** 2).sum())
    assert abs(acc / T / sol.dqsgd_floor(eta, omega, zeta, n) - 1) < 0.05
    eta_bad = 1.01 * 2.0 / (1 + omega / n)          # past the stability limit: no finite floor
    assert sol.dqsgd_floor(eta_bad, omega, zeta, n) == math.inf
    with pytest.raises(ValueError):
        cfc.dqsgd_floor(eta_bad, omega, zeta, n)


def test_shared_mask_has_no_floor():
    """Shared masks: D-QSGD applies the library's RandK to the mean gradient; E||e_t||^2 = factor^t ||e_0||^2."""
    n, d, k, eta, B, prob, zeta = _floor_setup()
    R, T = 20_000, 8
    Rk = RandK(k, d)
    g = gen(11)
    X = torch.zeros(R, d, dtype=DT)
    b_bar = torch.as_tensor(B).mean(0)
    for _ in range(T):
        X = X - eta * Rk(X - b_bar, g)       # one mask per run, shared by all workers: Q(mean_i (x - b_i))
    m, lo, hi = mc_interval(((X - prob.x_star) ** 2).sum(1).numpy(), k=4)
    pred = sol.shared_mask_factor(eta, d / k - 1) ** T * float(prob.x_star @ prob.x_star)
    assert lo <= pred <= hi
    assert sol.shared_mask_factor(2.0 / (1 + d / k - 1), d / k - 1) == pytest.approx(1.0)

# -------------------------------------------------------------------------------- cmp-ex-bits


@pytest.mark.parametrize("d", [1, 2, 3, 10, 20, 64, 100, 1000, 10 ** 6])
def test_bits_per_message_against_library(d):
    for k in sorted({1, max(1, d // 10), d}):
        assert sol.bits_per_message("rand_k", d, k=k) == int(RandK(k, d).bits(torch.zeros(d))[0])
        assert sol.bits_per_message("top_k", d, k=k) == int(TopK(k, d).bits(torch.zeros(d))[0])
        assert sol.bits_per_message("rand_k_unscaled", d, k=k) == int(RandKUnscaled(k, d).bits(torch.zeros(d))[0])
    for s in (1, 2, 3, 4, 7, 8, 15, 16):
        assert sol.bits_per_message("qsgd", d, s=s) == int(QSGD(s, d).bits(torch.zeros(d))[0])
    assert sol.bits_per_message("identity", d) == int(Identity(d).bits(torch.zeros(d))[0])
    assert sol.bits_per_message("scaled_sign", d) == int(ScaledSign(d).bits(torch.zeros(d))[0])
    assert sol.bits_per_message("sign", d) == int(Sign(d).bits(torch.zeros(d))[0])


def test_bits_mutation_is_detected():
    """Indices counted with floor(log2 d) + 0 bits, or QSGD without its norm, disagree with the library."""
    d, k = 20, 2
    wrong_index = k * (64 + math.floor(math.log2(d)))
    assert wrong_index != int(RandK(k, d).bits(torch.zeros(d))[0]) == sol.bits_per_message("rand_k", d, k=k)
    wrong_qsgd = d * (1 + math.ceil(math.log2(4 + 1)))
    assert wrong_qsgd != int(QSGD(4, d).bits(torch.zeros(d))[0]) == sol.bits_per_message("qsgd", d, s=4)


def _first_below(method, prob, tol, T):
    oracle, comm, g = Oracle(prob), SimulatedComm(prob.n), gen(1)
    s = method.init(torch.zeros(prob.d, dtype=DT), prob)
    for t in range(1, T + 1):
        s = method.step(s, oracle, comm, g)
        if float(((s["X"] - prob.x_star) ** 2).sum(1).mean().sqrt()) <= tol:
            return t, s["bits"]
    raise AssertionError("target not reached")


def test_bits_ratio_from_library_state_bits():
    """The library's cumulative bit counters equal rounds x workers x bits per message, so the total bits
    ratio of LEAD (rand-2) against NIDS (identity) is the iteration ratio times the per-message ratio."""
    prob, ring = diag_problem(6, 10, 4, scale=3.0), make_topology("ring", 6)
    it_c, bits_c = _first_below(LEAD(0.1, ring, RandK(2, 10), gamma=0.05, alpha=0.1), prob, 1e-6, 3000)
    it_u, bits_u = _first_below(LEAD(0.1, ring, Identity(10), gamma=1.0, alpha=1.0), prob, 1e-6, 3000)
    b_c, b_u = sol.bits_per_message("rand_k", 10, k=2), sol.bits_per_message("identity", 10)
    assert bits_c == it_c * 6 * b_c and bits_u == it_u * 6 * b_u
    assert abs(sol.bits_ratio(it_c, it_u, b_c, b_u) - bits_c / bits_u) < 1e-12
    assert (bits_c < bits_u) == (it_c / it_u < sol.break_even_ratio(b_c, b_u))

# -------------------------------------------------------------------------------- cmp-ex-lead


@pytest.fixture(scope="module")
def lead_setup():
    prob, ring = diag_problem(8, 10, 0, scale=3.0), make_topology("ring", 8)
    fp = sol.lead_fixed_point(prob.A.numpy(), prob.b.numpy(), ring.W_numpy())
    return prob, ring, fp


def test_lead_converges_to_the_fixed_point(lead_setup):
    prob, ring, fp = lead_setup
    s = run(LEAD(0.1, ring, RandK(2, 10), gamma=0.05, alpha=0.1), prob, 2500, seed=3)
    for key in ("X", "D", "H", "H_w"):
        assert np.abs(s[key].numpy() - fp[key]).max() < 1e-8, key
    # the uncompressed method (NIDS) has the same fixed point
    s = run(LEAD(0.1, ring, Identity(10), gamma=1.0, alpha=1.0), prob, 1000)
    assert np.abs(s["D"].numpy() - fp["D"]).max() < 1e-9
    assert np.abs(fp["D"].sum(0)).max() < 1e-12


def test_lead_fixed_point_is_invariant_under_one_library_step(lead_setup):
    prob, ring, fp = lead_setup
    method = LEAD(0.1, ring, RandK(2, 10), gamma=0.05, alpha=0.1)
    state = {k: torch.as_tensor(v) for k, v in fp.items()} | {"round": 0, "bits": 0, "round_bits": 0}
    for seed in range(5):
        nxt = method.step(state, Oracle(prob), SimulatedComm(8), gen(seed))
        for key in fp:
            assert float((nxt[key] - state[key]).abs().max()) < 1e-12
    # mutation: the dual with the wrong sign is not a fixed point
    bad = dict(state, D=-state["D"])
    nxt = method.step(bad, Oracle(prob), SimulatedComm(8), gen(0))
    assert float((nxt["X"] - bad["X"]).abs().max()) > 1e-3


def test_lead_invariants_along_a_run(lead_setup):
    prob, ring, _ = lead_setup
    method = LEAD(0.1, ring, RandK(2, 10), gamma=0.05, alpha=0.1)
    oracle, comm, g = Oracle(prob), SimulatedComm(8), gen(2)
    s = method.init(torch.zeros(10, dtype=DT), prob)
    W = ring.W(0)
    for _ in range(200):
        s = method.step(s, oracle, comm, g)
        assert float((s["H_w"] - W @ s["H"]).abs().max()) < 1e-10 * (1 + float(s["H"].abs().max()))
        assert float(s["D"].sum(0).abs().max()) < 1e-10 * (1 + float(s["D"].abs().max()))

# ------------------------------------------------------------------------------- cmp-ex-diana


def test_diana_shifts_converge_to_local_gradients_at_x_star():
    prob = diag_problem(5, 8, 1)
    s = run(DIANA(0.2, RandK(2, 8)), prob, 3000)
    h_star = sol.diana_shift_limit(prob.A.numpy(), prob.b.numpy())
    assert np.abs(s["h"].numpy() - h_star).max() < 1e-10
    assert np.abs(h_star).max() > 1.0                       # heterogeneous: the limits are far from 0
    # mutation: the global gradient at x* (zero) is not the limit
    assert np.abs(s["h"].numpy() - 0.0).max() > 1.0


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.5, 0.7])
def test_diana_shift_factor_with_one_library_step(alpha):
    """One step of the library's DIANA from x = x* with random shifts, many independent workers at once:
    E||h+ - h*||^2 / ||h - h*||^2 per worker equals the factor."""
    n, d, k = 4000, 6, 2
    rng = np.random.default_rng(7)
    A = np.stack([np.diag(rng.uniform(0.5, 2.0, d)) for _ in range(n)])
    prob = QuadraticProblem.from_minimizers(A, rng.standard_normal((n, d)))
    method = DIANA(0.1, RandK(k, d), alpha=alpha)
    state = method.init(prob.x_star.clone(), prob)
    h_star = torch.as_tensor(sol.diana_shift_limit(A, prob.b.numpy()))
    U = torch.as_tensor(rng.standard_normal((n, d)))
    state["h"] = h_star + U
    nxt = method.step(state, Oracle(prob), SimulatedComm(n), gen(int(alpha * 100)))
    ratio = (((nxt["h"] - h_star) ** 2).sum(1) / (U ** 2).sum(1)).numpy()
    m, lo, hi = mc_interval(ratio, k=4)
    omega = d / k - 1
    assert lo <= sol.diana_shift_factor(alpha, omega) <= hi
    assert not lo <= 1 - alpha <= hi                         # mutation: a deterministic 1 - alpha contraction


def test_diana_best_alpha():
    for omega in (0.0, 1.0, 3.0, 9.0):
        a, f = sol.diana_best_alpha(omega)
        grid = np.linspace(1e-3, 1.0, 2001)
        assert f <= min(sol.diana_shift_factor(x, omega) for x in grid) + 1e-12
        assert abs(f - omega / (1 + omega)) < 1e-14

# ------------------------------------------------------------------------------- cmp-ex-choco


@pytest.mark.parametrize("compressor", [TopK(2, 10), RandKUnscaled(2, 10), Identity(10)])
@pytest.mark.parametrize("gamma", [0.1, 0.3])
def test_choco_converges_to_dsgd_fixed_point_with_lazy_mixing(compressor, gamma):
    prob, ring = diag_problem(8, 10, 0, scale=3.0), make_topology("ring", 8)
    W = ring.W_numpy()
    X_fp = sol.choco_fixed_point(prob.A.numpy(), prob.b.numpy(), W, 0.05, gamma)
    s = run(ChocoSGD(0.05, ring, compressor, gamma=gamma), prob, 3000, seed=2)
    assert np.abs(s["X"].numpy() - X_fp).max() < 1e-9
    assert np.abs(X_fp - cfg.dsgd_fixed_point(prob, sol.lazy_mixing(W, gamma), 0.05, "atc")).max() < 1e-10
    assert sol.rms_error(X_fp, prob.x_star.numpy()) > 0.1


def test_choco_fixed_point_mutation_plain_w_is_detected():
    prob, ring = diag_problem(8, 10, 0, scale=3.0), make_topology("ring", 8)
    s = run(ChocoSGD(0.05, ring, TopK(2, 10), gamma=0.1), prob, 3000, seed=2)
    wrong = cfg.dsgd_fixed_point(prob, ring.W_numpy(), 0.05, "atc")       # gamma ignored
    assert np.abs(s["X"].numpy() - wrong).max() > 0.1


def test_choco_fixed_point_is_consensual_without_heterogeneity():
    rng = np.random.default_rng(5)
    A = np.stack([np.diag(rng.uniform(0.5, 2.0, 4)) for _ in range(6)])
    b = np.broadcast_to(rng.standard_normal(4), (6, 4)).copy()               # common minimiser
    X_fp = sol.choco_fixed_point(A, b, make_topology("ring", 6).W_numpy(), 0.1, 0.2)
    assert np.abs(X_fp - b).max() < 1e-12
