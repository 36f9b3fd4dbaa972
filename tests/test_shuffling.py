"""SGD over minibatch rows: random reshuffling, with replacement, and the exact expectation by enumeration
(``hetlab.algorithms.shuffling``). Seeds are fixed and appear in the test ids."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetlab.algorithms import GD, RandomReshuffling, WithReplacementSGD, expected_epoch
from hetlab.algorithms import shuffling
from hetlab.comm import SimulatedComm
from hetlab.exact import affine_fixed_point, mc_interval, method_affine_map
from hetlab.problems import GaussianNoiseOracle, Oracle, QuadraticProblem, random_quadratics

DT = torch.float64


class RecordingOracle(Oracle):
    """The exact oracle, recording which rows were asked for at every call."""

    def __init__(self, problem):
        super().__init__(problem)
        self.calls = []

    def grad(self, X, idx=None, generator=None):
        self.calls.append(None if idx is None else idx.clone())
        return super().grad(X, idx, generator)


def _epochs(method, prob, epochs, seed, x0=None, oracle=None):
    oracle = oracle or Oracle(prob)
    gen = torch.Generator().manual_seed(seed)
    state = method.init(torch.zeros(prob.d, dtype=DT) if x0 is None else x0, prob)
    xs, orders = [], []
    for _ in range(epochs):
        state = method.step(state, oracle, SimulatedComm(1), gen)
        xs.append(state["x"].clone())
        orders.append(state["order"].clone())
    return torch.stack(xs), torch.stack(orders)


@pytest.fixture
def prob5():
    return random_quadratics(5, 3, seed=3)

# ------------------------------------------------------------------------------ random reshuffling


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_rr_visits_each_minibatch_once_per_epoch(prob5, seed):
    oracle = RecordingOracle(prob5)
    _, orders = _epochs(RandomReshuffling(0.05), prob5, 30, seed, oracle=oracle)
    assert len(oracle.calls) == 30 * prob5.n                        # one gradient call per step
    visited = torch.stack([c[0] for c in oracle.calls]).reshape(30, prob5.n)
    assert torch.equal(visited, orders)                              # the state records the order used
    for row in visited:
        assert torch.equal(row.sort().values, torch.arange(prob5.n))  # a permutation: each row once
    assert len({tuple(r.tolist()) for r in visited}) > 10            # and a fresh one per epoch


def test_rr_epoch_is_the_sequence_of_row_steps(prob5):
    x0 = torch.as_tensor(np.random.default_rng(0).standard_normal(3))
    xs, orders = _epochs(RandomReshuffling(0.07), prob5, 1, seed=4, x0=x0)
    x = x0.clone()
    A, c = prob5.A, prob5.c
    for k in orders[0].tolist():
        x = x - 0.07 * (A[k] @ x - c[k])
    assert torch.allclose(xs[0], x, rtol=0, atol=1e-15)


@pytest.mark.parametrize("cls", [RandomReshuffling, WithReplacementSGD])
def test_reproducible_from_the_generator(prob5, cls):
    xa, oa = _epochs(cls(0.05), prob5, 12, seed=11)
    xb, ob = _epochs(cls(0.05), prob5, 12, seed=11)
    xc, oc = _epochs(cls(0.05), prob5, 12, seed=12)
    assert torch.equal(xa, xb) and torch.equal(oa, ob)
    assert not torch.equal(oa, oc)


def test_with_replacement_draws_are_multinomial_from_the_generator(prob5):
    _, orders = _epochs(WithReplacementSGD(0.05, steps=7), prob5, 3, seed=5)
    gen = torch.Generator().manual_seed(5)
    expect = torch.stack([torch.multinomial(prob5.weights, 7, replacement=True, generator=gen) for _ in range(3)])
    assert torch.equal(orders, expect)
    assert orders.shape == (3, 7)


def test_with_replacement_frequencies_follow_the_weights():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    p = random_quadratics(4, 2, weights=q, seed=0)
    _, orders = _epochs(WithReplacementSGD(0.01, steps=50), p, 400, seed=2)
    counts = np.bincount(orders.reshape(-1).numpy(), minlength=4)
    N = counts.sum()
    se = np.sqrt(N * q * (1 - q))
    assert np.all(np.abs(counts - N * q) <= 4 * se), (counts, N * q)


def test_fixed_order_is_deterministic_and_affine(prob5):
    order = [4, 2, 0, 1, 3]
    m = RandomReshuffling(0.05, order=order)
    _, orders = _epochs(m, prob5, 3, seed=0)
    assert all(o.tolist() == order for o in orders)
    M, c, _ = method_affine_map(m, prob5)
    P = np.eye(3)
    for k in order:
        P = (np.eye(3) - 0.05 * prob5.A[k].numpy()) @ P
    assert np.abs(M - P).max() < 1e-14


def test_m_equal_one_is_gradient_descent():
    p = random_quadratics(1, 4, seed=2)
    x0 = torch.as_tensor(np.random.default_rng(1).standard_normal(4))
    gd = GD(0.1)
    s = gd.step(gd.init(x0, p), Oracle(p), SimulatedComm(1), None)
    for method in (RandomReshuffling(0.1), WithReplacementSGD(0.1)):
        xs, _ = _epochs(method, p, 1, seed=0, x0=x0)
        assert torch.allclose(xs[0], s["x"], rtol=0, atol=1e-15)
    assert torch.allclose(expected_epoch(p, 0.1, x0), s["x"], rtol=0, atol=1e-15)
    assert torch.allclose(expected_epoch(p, 0.1, x0, "replacement"), s["x"], rtol=0, atol=1e-15)


def test_rr_works_with_a_noisy_oracle(prob5):
    xs, _ = _epochs(RandomReshuffling(0.05), prob5, 4, seed=0, oracle=GaussianNoiseOracle(prob5, 0.1))
    assert xs.shape == (4, 3) and torch.isfinite(xs).all()


def test_validation_errors(prob5):
    with pytest.raises(ValueError, match="non-uniform weights"):
        RandomReshuffling(0.05).init(torch.zeros(3), random_quadratics(3, 3, weights=[1, 2, 3], seed=0))
    with pytest.raises(ValueError, match="permutation"):
        RandomReshuffling(0.05, order=[0, 0, 1, 2, 3]).init(torch.zeros(3), prob5)
    with pytest.raises(ValueError, match="stability limit"):
        RandomReshuffling(5.0).init(torch.zeros(3), prob5)
    with pytest.raises(ValueError, match="positive"):
        WithReplacementSGD(-0.1)
    with pytest.raises(ValueError, match="steps"):
        WithReplacementSGD(0.1, steps=0)
    with pytest.raises(ValueError, match="copies"):
        shuffling.all_permutations(12)
    with pytest.raises(ValueError, match="scheme"):
        expected_epoch(prob5, 0.1, torch.zeros(3), "sorted")
    with pytest.raises(ValueError, match="deterministic"):
        expected_epoch(prob5, 0.1, torch.zeros(3), oracle=GaussianNoiseOracle(prob5, 1.0))
    with pytest.raises(ValueError, match="shape"):
        shuffling.sgd_pass(torch.zeros(2, 3, dtype=DT), torch.zeros(3, 1, dtype=torch.long), Oracle(prob5), 0.1)

# ----------------------------------------------------------------------------- exact expectations


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_enumerations_are_complete(m):
    P = shuffling.all_permutations(m)
    assert P.shape == (math.factorial(m), m)
    assert len({tuple(r) for r in P.tolist()}) == math.factorial(m)
    S = shuffling.all_sequences(m, 3)
    assert S.shape == (m ** 3, 3) and len({tuple(r) for r in S.tolist()}) == m ** 3


@pytest.mark.parametrize("scheme, cls, seed", [("rr", RandomReshuffling, 0), ("rr", RandomReshuffling, 1),
                                               ("replacement", WithReplacementSGD, 2)])
def test_enumerated_expectation_equals_monte_carlo_mean(scheme, cls, seed):
    """M5: the exact mean lies in the Monte Carlo mean +- 3 SE of many independent epochs of the method."""
    p = random_quadratics(4, 3, seed=seed)
    x0 = torch.as_tensor(2 * np.random.default_rng(seed).standard_normal(3))
    eta, N = 0.15, 4000
    exact = expected_epoch(p, eta, x0, scheme).numpy()
    method, oracle, comm = cls(eta), Oracle(p), SimulatedComm(1)
    gen = torch.Generator().manual_seed(100 + seed)
    state0 = method.init(x0, p)
    ends = np.stack([method.step(state0, oracle, comm, gen)["x"].numpy() for _ in range(N)])
    for j in range(3):
        mean, lo, hi = mc_interval(ends[:, j])
        assert lo <= exact[j] <= hi, (j, exact[j], mean, lo, hi)
    # and the epochs really are random: the spread is far above round-off
    assert ends.std(0).min() > 1e-3


def test_rr_expectation_is_the_average_over_fixed_orders():
    p = random_quadratics(3, 2, seed=4)
    x0 = torch.tensor([1.0, -2.0], dtype=DT)
    mean, (orders, ends, probs) = expected_epoch(p, 0.2, x0, return_paths=True)
    runs = []
    for o in orders.tolist():
        m = RandomReshuffling(0.2, order=o)
        runs.append(m.step(m.init(x0, p), Oracle(p), SimulatedComm(1), None)["x"])
    runs = torch.stack(runs)
    assert torch.allclose(runs, ends, rtol=0, atol=1e-15)
    assert torch.allclose(mean, runs.mean(0), rtol=0, atol=1e-15)
    assert torch.allclose(probs.sum(), torch.tensor(1.0, dtype=DT))


@pytest.mark.parametrize("weights", [None, [0.1, 0.2, 0.3, 0.4]])
def test_with_replacement_expectation_is_gradient_descent(weights):
    """Affine update, index independent of the iterate: E x^+ = E x - eta grad f(E x), exactly."""
    p = random_quadratics(4, 3, weights=weights, seed=6)
    x0 = torch.as_tensor(np.random.default_rng(6).standard_normal(3))
    for steps in (1, 2, 4):
        ex = expected_epoch(p, 0.1, x0, "replacement", steps=steps)
        gd = GD(0.1)
        state = gd.init(x0, p)
        for _ in range(steps):
            state = gd.step(state, Oracle(p), SimulatedComm(p.n), None)
        assert torch.allclose(ex, state["x"], rtol=0, atol=1e-14)


def test_rr_expectation_is_not_gradient_descent():
    """Reshuffling is not with replacement: the mean epoch differs from m GD steps at order eta^2."""
    p = random_quadratics(4, 3, seed=0)
    x0 = torch.as_tensor(np.random.default_rng(0).standard_normal(3))
    gaps = []
    for eta in (0.02, 0.01, 0.005):
        rr = expected_epoch(p, eta, x0)
        wr = expected_epoch(p, eta, x0, "replacement")
        gaps.append(float((rr - wr).norm()))
    slope = np.polyfit(np.log([0.02, 0.01, 0.005]), np.log(gaps), 1)[0]
    assert abs(slope - 2) < 0.1


def test_expected_epoch_affine_map_and_its_fixed_point():
    p = random_quadratics(3, 2, seed=1)
    M, c = shuffling.expected_epoch_affine_map(p, 0.1)
    z = affine_fixed_point(M, c)
    again = expected_epoch(p, 0.1, torch.as_tensor(z)).numpy()
    assert np.abs(again - z).max() < 1e-13
    # iterating the expected epoch converges there
    x = torch.zeros(2, dtype=DT)
    for _ in range(400):
        x = expected_epoch(p, 0.1, x)
    assert np.abs(x.numpy() - z).max() < 1e-10


def test_two_minibatch_expectation_by_hand():
    """m = 2: the mean of the two orders, written out."""
    A = np.array([[[2.0, 0.3], [0.3, 1.0]], [[0.5, -0.2], [-0.2, 1.5]]])
    b = np.array([[1.0, -1.0], [-2.0, 0.5]])
    p = QuadraticProblem.from_minimizers(A, b)
    x0 = np.array([0.3, 0.7])
    eta = 0.1

    def step(x, k):
        return x - eta * A[k] @ (x - b[k])

    by_hand = 0.5 * (step(step(x0, 0), 1) + step(step(x0, 1), 0))
    assert np.abs(expected_epoch(p, eta, torch.as_tensor(x0)).numpy() - by_hand).max() < 1e-15
