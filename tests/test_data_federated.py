"""Glue of hetlab.data: (X, y, parts) -> padded stacked problems, and the gradient dissimilarity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hetlab import data as D
from hetlab.problems import LeastSquaresProblem, LogisticRegressionProblem

SEED = 0


@pytest.fixture(scope="module")
def digits():
    return D.load_digits_dataset()


def test_pad_unpad_round_trip():
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((50, 3))
    y = rng.integers(0, 4, 50)
    parts = D.quantity_skew(50, 6, SEED, alpha=0.5, min_size=1)
    Z, Y, counts = D.pad_clients(X, y, parts)
    m_max = max(p.size for p in parts)
    assert Z.shape == (6, m_max, 3) and Y.shape == (6, m_max) and Y.dtype == y.dtype
    np.testing.assert_array_equal(counts, [p.size for p in parts])
    for k, ((Xk, yk), p) in enumerate(zip(D.unpad_clients(Z, Y, counts), parts)):
        np.testing.assert_array_equal(Xk, X[p])
        np.testing.assert_array_equal(yk, y[p])
        assert not Z[k, p.size:].any() and not Y[k, p.size:].any()  # padding is zero
    # reassembling by the parts gives the original data back
    Xr = np.empty_like(X)
    Xr[np.concatenate(parts)] = np.concatenate([Xk for Xk, _ in D.unpad_clients(Z, Y, counts)])
    np.testing.assert_array_equal(Xr, X)


def test_pad_validates_inputs():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="belong to no client"):
        D.pad_clients(X, np.zeros(5), [np.array([0, 1])])
    with pytest.raises(ValueError, match=r"y must have shape \[5\]"):
        D.pad_clients(X, np.zeros(4), [np.arange(5)])
    with pytest.raises(ValueError, match="counts must lie in"):
        D.unpad_clients(np.zeros((2, 3, 1)), np.zeros((2, 3)), np.array([1, 4]))


def test_federated_logistic_matches_the_problem_built_by_hand(digits):
    X, y = digits
    parts = D.dirichlet(y, 5, 1.0, SEED)
    prob = D.federated_logistic(X, y, parts, lam=0.1, positive=[0, 3, 8])
    assert isinstance(prob, LogisticRegressionProblem) and prob.n == 5 and prob.d == 64
    yb = np.where(np.isin(y, [0, 3, 8]), 1.0, -1.0)
    x = torch.linspace(-0.3, 0.2, 64, dtype=torch.float64)
    N = y.size
    # the sample-weighted global loss is the plain average over all samples
    direct = np.mean(np.logaddexp(0.0, -yb * (X @ x.numpy()))) + 0.05 * float(x @ x)
    assert float(prob.global_loss(x)) == pytest.approx(direct, rel=1e-13)
    np.testing.assert_allclose(prob.weights.numpy(), [p.size / N for p in parts], rtol=1e-15)


def test_federated_logistic_labels_and_empty_clients(digits):
    X, y = digits
    with pytest.raises(ValueError, match="pass positive="):
        D.federated_logistic(X, y, D.iid(y.size, 3, SEED))
    pm = np.where(y < 5, 1, -1)
    p1 = D.federated_logistic(X, pm, D.iid(y.size, 3, SEED), intercept=True)
    p2 = D.federated_logistic(X, y, D.iid(y.size, 3, SEED), positive=range(5), intercept=True)
    assert p1.d == 65 and torch.equal(p1.y, p2.y)
    parts = [np.arange(y.size), np.array([], dtype=np.int64)]
    with pytest.raises(ValueError, match=r"clients \[1\] hold no sample.*min_size"):
        D.federated_logistic(X, y, parts, positive=1)
    with pytest.raises(ValueError, match="every label the same sign"):
        D.binary_labels(y, range(10))


def test_federated_least_squares_minimiser_is_pooled_ridge():
    r"""With sample weights the global objective is (1/2N)||Xx - t||^2 + lam/2 ||x||^2, whatever the
    partition, so x_star = (X^T X + N lam I)^{-1} X^T t."""
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((120, 4))
    t = X @ rng.standard_normal(4) + 0.1 * rng.standard_normal(120)
    lam = 0.05
    expected = np.linalg.solve(X.T @ X + 120 * lam * np.eye(4), X.T @ t)
    for parts in (D.iid(120, 4, SEED), D.quantity_skew(120, 7, SEED, alpha=0.3)):
        prob = D.federated_least_squares(X, t, parts, lam=lam)
        assert isinstance(prob, LeastSquaresProblem)
        np.testing.assert_allclose(prob.x_star.numpy(), expected, rtol=1e-11)


def test_zeta_sq_at_equals_its_definition(digits):
    r"""At x = 0 the logistic gradient of client i is -(1/2) mean_j y_ij z_ij (sigma(0) = 1/2); zeta^2 is
    sum_i q_i ||g_i - g||^2 with q_i = m_i / N and g = sum_i q_i g_i."""
    X, y = digits
    parts = D.dirichlet(y, 7, 0.3, SEED)
    prob = D.federated_logistic(X, y, parts, lam=0.01, positive=range(5))
    yb = np.where(y < 5, 1.0, -1.0)
    G = np.stack([-0.5 * (yb[p, None] * X[p]).mean(0) for p in parts])
    q = np.array([p.size for p in parts]) / y.size
    g = q @ G
    expected = float(q @ ((G - g) ** 2).sum(1))
    assert D.zeta_sq_at(prob) == pytest.approx(expected, rel=1e-12)
    assert D.zeta_sq_at(prob, torch.zeros(64, dtype=torch.float64)) == D.zeta_sq_at(prob)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_skew_increases_zeta_sq_on_digits(digits, seed):
    """Qualitative: Dirichlet alpha = 100 (near IID) has a much smaller gradient dissimilarity at x = 0
    than alpha = 0.1 (strong label skew), on a one-vs-rest digits problem."""
    X, y = digits
    z = {a: D.zeta_sq_at(D.federated_logistic(X, y, D.dirichlet(y, 10, a, seed), lam=0.01, positive=range(5)))
         for a in (100.0, 0.1)}
    assert z[100.0] < 0.1 * z[0.1]
