"""Compressed methods (hetlab.algorithms.compressed) and the F1 check."""
import numpy as np
import pytest
import torch

import proofs_check.f1_compression_heterogeneity_dqsgd_vs_ef as f1
from hetlab.algorithms.compressed import DIANA, DQSGD, EF21, EFSGD
from hetlab.algorithms.sgd import GD
from hetlab.closed_forms_compression import dqsgd_floor
from hetlab.compress import Identity, RandK, TopK
from hetlab.problems import Oracle, QuadraticProblem, random_quadratics
from proofs_check._base import iterate


def _prob(seed=0, n=6, d=5):
    return random_quadratics(n, d, spectrum=(0.5, 2.0), seed=seed)


@pytest.mark.parametrize("make", [lambda d: DQSGD(0.3, Identity(d)), lambda d: EFSGD(0.3, Identity(d)),
                                  lambda d: DIANA(0.3, Identity(d)), lambda d: EF21(0.3, Identity(d))],
                         ids=["dqsgd", "ef", "diana", "ef21"])
def test_identity_compressor_reduces_to_gd(make):
    prob = _prob()
    tr, st = iterate(make(prob.d), prob, 50)
    tr_gd, _ = iterate(GD(0.3), prob, 50)
    assert np.max(np.abs(tr - tr_gd)) <= 1e-13
    assert st["bits"] >= 50 * prob.n * prob.d * 64


def _identity_problem(seed=0, n=10, d=20):
    B = np.random.default_rng(seed).standard_normal((n, d))
    return QuadraticProblem.from_minimizers(torch.tensor(np.broadcast_to(np.eye(d), (n, d, d)).copy()),
                                            torch.tensor(B)), B


def test_diana_reaches_x_star_dqsgd_does_not():
    prob, B = _identity_problem()
    tr, st = iterate(DIANA(0.05, RandK(2, 20)), prob, 3000)
    assert np.sum((tr[-1] - B.mean(0)) ** 2) <= 1e-20
    assert st["bits"] == 3000 * 10 * 2 * (64 + 5)
    tr_q, _ = iterate(DQSGD(0.05, RandK(2, 20)), prob, 3000)
    assert np.sum((tr_q[-1] - B.mean(0)) ** 2) >= 1e-3


def test_ef21_topk_converges_on_heterogeneous_quadratics():
    prob = _prob()
    tr, _ = iterate(EF21(0.05, TopK(2, prob.d)), prob, 4000)
    assert np.linalg.norm(tr[-1] - prob.x_star.numpy()) <= 1e-10


def test_fast_oracle_matches_library_oracle():
    prob, _ = _identity_problem()
    X = torch.randn(10, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(f1._IdentityHessianOracle(prob).grad(X), Oracle(prob).grad(X), atol=1e-14, rtol=0)


def test_method_input_errors():
    with pytest.raises(TypeError, match="UnbiasedCompressor"):
        DQSGD(0.1, TopK(2, 5))
    with pytest.raises(TypeError, match="ContractiveCompressor"):
        EFSGD(0.1, RandK(2, 5))
    with pytest.raises(ValueError, match="lr"):
        DIANA(0.0, RandK(2, 5))
    with pytest.raises(ValueError, match="d=4"):
        DQSGD(0.1, RandK(2, 4)).init(torch.zeros(5, dtype=torch.float64), _prob())
    assert DIANA(0.1, RandK(2, 10)).alpha == pytest.approx(0.2)
    with pytest.raises(ValueError):
        dqsgd_floor(1.9, 9, 1.0, 10)


def test_floor_formula_values():
    assert dqsgd_floor(0.1, 9, 2.0, 10) == pytest.approx(0.1 * 9 * 2 / (10 * (2 - 0.1 - 0.09)))


@pytest.fixture(scope="module")
def f1_results():
    return {s: f1.run(seed=s) for s in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_f1_passes(f1_results, seed):
    r = f1_results[seed]
    assert r.passed, [c.to_dict() for c in r.criteria if not c.ok]
    assert r.seed == seed and r.runtime_s < 20


@pytest.mark.parametrize("seed", [0, 1])
def test_f1_negative_controls_fail(f1_results, seed):
    r = f1_results[seed]
    assert len(r.negative_controls) == 3
    assert all(not c.holds for c in r.negative_controls)


def test_f1_figure(f1_results):
    import matplotlib
    matplotlib.use("Agg")
    assert f1.figure(f1_results[0]) is not None


def test_f1_mutation_floor_times_two(monkeypatch):
    monkeypatch.setattr(f1, "dqsgd_floor", lambda *a: 2 * dqsgd_floor(*a))
    assert f1.run(seed=0).passed is False
