"""Robust aggregators (``hetlab.aggregate``): hand-computed inputs, invariances, robustness, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize
import torch

from hetlab import aggregate as agg
from hetlab.comm import SimulatedComm

DT = torch.float64


def T(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


ALL = {
    "mean": agg.mean,
    "median": agg.coordinate_median,
    "trimmed_mean": lambda X: agg.trimmed_mean(X, 1),
    "majority_vote": agg.majority_vote,
    "geometric_median": lambda X: agg.geometric_median(X, tol=1e-13),
    "krum": lambda X: agg.krum(X, 1),
    "multi_krum": lambda X: agg.krum(X, 1, m=3),
}

# ------------------------------------------------------------------------------ hand-computed


def test_mean_and_median_of_three_rows():
    X = T([[0.0, 1.0, -4.0], [1.0, 5.0, 2.0], [10.0, -2.0, 3.0]])
    assert torch.equal(agg.mean(X), T([11 / 3, 4 / 3, 1 / 3]))
    assert torch.equal(agg.coordinate_median(X), T([1.0, 1.0, 2.0]))


def test_median_of_even_n_is_the_mean_of_the_middle_pair():
    X = T([[-3.0], [-1.0], [2.0], [5.0]])
    assert agg.coordinate_median(X).item() == 0.5          # torch.median would give -1
    X = T(np.random.default_rng(0).standard_normal((6, 7)))
    assert np.allclose(agg.coordinate_median(X).numpy(), np.median(X.numpy(), axis=0), rtol=0, atol=1e-15)


def test_trimmed_mean_drops_the_extremes():
    X = T([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [100.0, 7.0], [-50.0, -7.0]])
    assert torch.equal(agg.trimmed_mean(X, 1), T([2.0, 0.0]))
    assert torch.equal(agg.trimmed_mean(X, 0), agg.mean(X))
    assert torch.equal(agg.trimmed_mean(X, 2), agg.coordinate_median(X))


@pytest.mark.parametrize("n", [4, 5, 6, 9])
def test_trimmed_mean_with_maximal_trim_is_the_median(n):
    X = T(np.random.default_rng(n).standard_normal((n, 8)))
    assert torch.allclose(agg.trimmed_mean(X, (n - 1) // 2), agg.coordinate_median(X), rtol=0, atol=1e-15)


def test_majority_vote_with_ties_and_abstentions():
    X = T([[1.0, 1.0, 0.0, 2.0, -1.0],
           [-1.0, 2.0, 0.0, -3.0, -1.0],
           [0.0, -5.0, 4.0, 0.0, 1.0]])
    # col 0: +,-,abstain -> tie 0; col 1: +,+,- -> +; col 2: only one voter -> +; col 3: +,- -> 0; col 4: -,-,+ -> -
    assert torch.equal(agg.majority_vote(X), T([0.0, 1.0, 1.0, 0.0, -1.0]))
    assert torch.equal(agg.majority_vote(T([[2.0], [-7.0]])), T([0.0]))          # even n tie
    assert torch.equal(agg.majority_vote(T([[0.0], [0.0]])), T([0.0]))           # sign(0) = 0


@pytest.mark.parametrize("n", [1, 3, 5, 7, 11])
def test_majority_vote_is_the_sign_of_the_median_for_odd_n(n):
    X = T(np.random.default_rng(n).standard_normal((n, 20_000)))
    assert torch.equal(agg.majority_vote(X), torch.sign(agg.coordinate_median(X)))


def test_the_identity_fails_for_even_n():
    X = T([[-3.0], [-1.0], [2.0], [5.0]])
    assert agg.majority_vote(X).item() == 0.0 and torch.sign(agg.coordinate_median(X)).item() == 1.0


def test_krum_picks_the_obvious_inlier():
    # 1-D points 0, 1, -1, 0.5 and an outlier 100; f = 1: scores over the 2 nearest other points are
    # 1.25, 1.25, 3.25, 0.5, huge -> Krum returns 0.5; multi-Krum (m = 2) averages 0.5 and 0 (tie 0/1: lowest index)
    X = T([[0.0], [1.0], [-1.0], [0.5], [100.0]])
    assert torch.equal(agg.krum_scores(X, 1)[:4], T([1.25, 1.25, 3.25, 0.5]))
    assert agg.krum(X, 1).item() == 0.5
    assert agg.krum(X, 1, m=2).item() == 0.25
    assert torch.allclose(agg.krum(X, 1, m=5), agg.mean(X))


def test_krum_returns_a_row():
    X = T(np.random.default_rng(1).standard_normal((9, 4)))
    out = agg.krum(X, 2)
    assert any(torch.equal(out, row) for row in X)


def test_geometric_median_of_collinear_points():
    X = T([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    assert torch.allclose(agg.geometric_median(X), T([1.0, 1.0]), rtol=0, atol=1e-10)
    # even number of collinear points: every point of the middle segment is a minimiser
    X = T([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    z = agg.geometric_median(X, tol=1e-14)
    assert abs(z[1].item()) < 1e-12 and 1.0 - 1e-9 <= z[0].item() <= 3.0 + 1e-9


def test_geometric_median_of_symmetric_sets_and_an_obtuse_vertex():
    sq = T([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert torch.allclose(agg.geometric_median(sq), T([0.5, 0.5]), atol=1e-12)
    tri = T([[1.0, 0.0], [-0.5, 3 ** 0.5 / 2], [-0.5, -(3 ** 0.5) / 2]])
    assert torch.allclose(agg.geometric_median(tri, tol=1e-14), T([0.0, 0.0]), atol=1e-10)
    # an angle >= 120 degrees at the origin: the Fermat point is that vertex
    obt = T([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.1]])
    assert torch.allclose(agg.geometric_median(obt, tol=1e-14), T([0.0, 0.0]), atol=1e-9)


def test_geometric_median_minimises_the_sum_of_distances():
    X = np.random.default_rng(3).standard_normal((7, 3)) * [1.0, 3.0, 0.5]
    z, info = agg.geometric_median(T(X), tol=1e-13, return_info=True)
    assert info["converged"]

    def obj(y):
        return np.linalg.norm(X - y, axis=1).sum()

    ref = scipy.optimize.minimize(obj, X.mean(0), method="Nelder-Mead",
                                  options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000}).x
    assert obj(z.numpy()) <= obj(ref) + 1e-12
    assert np.linalg.norm(z.numpy() - ref) < 1e-5

# ------------------------------------------------------------------------------ invariances


@pytest.mark.parametrize("name", list(ALL))
def test_permutation_of_workers_does_not_matter(name):
    rng = np.random.default_rng(4)
    X = T(rng.standard_normal((7, 5)))
    perm = torch.as_tensor(rng.permutation(7))
    a, b = ALL[name](X), ALL[name](X[perm])
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["mean", "median", "trimmed_mean", "geometric_median", "krum", "multi_krum"])
def test_translation_equivariance(name):
    rng = np.random.default_rng(5)
    X = T(rng.standard_normal((7, 5)))
    t = T(rng.standard_normal(5) * 3)
    assert torch.allclose(ALL[name](X + t), ALL[name](X) + t, rtol=0, atol=1e-9)


def test_majority_vote_is_invariant_to_positive_rescaling_of_each_worker():
    rng = np.random.default_rng(6)
    X = T(rng.standard_normal((5, 9)))
    s = T(rng.uniform(0.1, 10, size=(5, 1)))
    assert torch.equal(agg.majority_vote(X * s), agg.majority_vote(X))
    # but it is not translation equivariant (it is a sign)
    assert not torch.equal(agg.majority_vote(X + 5.0), agg.majority_vote(X) + 5.0)


def test_geometric_median_is_rotation_equivariant_the_coordinate_median_is_not():
    rng = np.random.default_rng(7)
    X = T(rng.standard_normal((5, 3)))
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    Q = T(Q)
    assert torch.allclose(agg.geometric_median(X @ Q, tol=1e-14), agg.geometric_median(X, tol=1e-14) @ Q, atol=1e-9)
    assert not torch.allclose(agg.coordinate_median(X @ Q), agg.coordinate_median(X) @ Q, atol=1e-3)


@pytest.mark.parametrize("name", list(ALL))
def test_batch_dimensions_are_independent_problems(name):
    X = T(np.random.default_rng(8).standard_normal((3, 2, 7, 4)))
    out = ALL[name](X)
    assert out.shape == (3, 2, 4)
    for i in range(3):
        for j in range(2):
            assert torch.allclose(out[i, j], ALL[name](X[i, j]), rtol=0, atol=1e-12)


def test_identical_rows_give_that_row():
    row = T([1.5, -2.0, 0.25])
    X = row.expand(5, 3).clone()
    for name in ["mean", "median", "trimmed_mean", "geometric_median", "krum", "multi_krum"]:
        assert torch.allclose(ALL[name](X), row, rtol=0, atol=1e-15), name
    assert torch.equal(agg.majority_vote(X), torch.sign(row))

# ------------------------------------------------------------------------------ robustness


@pytest.mark.parametrize("name, f", [("median", 3), ("trimmed_mean", 2), ("geometric_median", 3), ("krum", 2)])
def test_bounded_under_tolerated_attackers_broken_beyond(name, f):
    rng = np.random.default_rng(9)
    n = 7
    honest = rng.standard_normal((n - f, 4))
    fns = {"median": agg.coordinate_median, "trimmed_mean": lambda X: agg.trimmed_mean(X, 2),
           "geometric_median": lambda X: agg.geometric_median(X, tol=1e-12),
           "krum": lambda X: agg.krum(X, 2)}
    makers = {"median": agg.CoordinateMedian(), "trimmed_mean": agg.TrimmedMean(2),
              "geometric_median": agg.GeometricMedian(), "krum": agg.Krum(2)}
    assert makers[name].max_byzantine(n) == f
    for big in (1e3, 1e6, 1e9):
        X = T(np.vstack([honest, np.full((f, 4), big)]))
        out = fns[name](X).numpy()
        assert np.abs(out).max() <= 3 * np.abs(honest).max() + 1e-6, (name, big)
    # one more attacker than tolerated moves the median-type rules arbitrarily far
    if name in ("median", "geometric_median"):
        X = T(np.vstack([honest[: n - f - 1], np.full((f + 1, 4), 1e9)]))
        assert np.abs(fns[name](X).numpy()).max() > 1e8


def test_one_attacker_moves_the_mean_anywhere():
    honest = T(np.random.default_rng(10).standard_normal((6, 3)))
    for big in (1e3, 1e9):
        X = torch.cat([honest, torch.full((1, 3), big, dtype=DT)])
        assert agg.mean(X).abs().min() > big / 7 - 10
        assert agg.coordinate_median(X).abs().max() < 10
    assert agg.Mean().max_byzantine(7) == 0

# ------------------------------------------------------------------------------ objects, errors


def test_make_aggregator_and_properties():
    assert isinstance(agg.make_aggregator("median"), agg.CoordinateMedian)
    assert isinstance(agg.make_aggregator("sign"), agg.MajorityVote)
    assert agg.make_aggregator("majority_vote").sign_output
    assert not agg.make_aggregator("mean").sign_output
    k = agg.make_aggregator("multi_krum", f=1, m=2)
    assert k.name == "multi_krum" and k.f == 1 and k.m == 2
    tm = agg.make_aggregator("trimmed_mean", trim=2)
    assert tm.max_byzantine(9) == 2
    custom = agg.make_aggregator(lambda X: X[0])
    assert torch.equal(custom(T([[1.0], [2.0]])), T([1.0]))
    assert agg.CoordinateMedian().max_byzantine(8) == 3 and agg.GeometricMedian().max_byzantine(9) == 4
    assert agg.make_aggregator(tm) is tm


def test_aggregate_goes_through_comm_gather():
    comm = SimulatedComm(3)
    X = T([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    out = agg.aggregate(comm, X, "median")
    assert torch.equal(out, T([3.0, 2.0])) and comm.bytes_sent == X.numel() * 8


def test_errors_say_what_to_do():
    X = T(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"n > 2f \+ 2"):
        agg.krum(X, 1)
    with pytest.raises(ValueError, match=r"n > 2f \+ 2"):
        agg.Krum(1).max_byzantine(4)
    with pytest.raises(ValueError, match="2 \\* trim must be < n"):
        agg.trimmed_mean(X, 2)
    with pytest.raises(ValueError, match="non-negative integer"):
        agg.trimmed_mean(X, -1)
    with pytest.raises(ValueError, match="non-negative integer"):
        agg.TrimmedMean(1.5)
    with pytest.raises(ValueError, match="shape"):
        agg.coordinate_median(T([1.0, 2.0]))
    with pytest.raises(ValueError, match="unknown aggregator"):
        agg.make_aggregator("average")
    with pytest.raises(ValueError, match="trim="):
        agg.make_aggregator("trimmed_mean")
    with pytest.raises(ValueError, match="f="):
        agg.make_aggregator("krum")
    with pytest.raises(ValueError, match="m"):
        agg.krum(T(np.zeros((5, 2))), 1, m=6)
    with pytest.raises(TypeError):
        agg.make_aggregator(3)
    with pytest.raises(ValueError, match="on_cap"):
        agg.geometric_median(X, on_cap="never")


def test_geometric_median_iteration_cap():
    X = T(np.random.default_rng(11).standard_normal((6, 3)))
    with pytest.raises(RuntimeError, match="max_iter"):
        agg.geometric_median(X, tol=1e-15, max_iter=2, on_cap="raise")
    with pytest.warns(agg.GeometricMedianWarning):
        agg.geometric_median(X, tol=1e-15, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = agg.geometric_median(X, tol=1e-15, max_iter=2, on_cap="ignore", return_info=True)
    assert info["iterations"] == 2 and not info["converged"]
