"""Compressors of hetlab.compress: unbiasedness, omega/delta bounds, exact values, bits, errors."""
import math

import pytest
import torch

from hetlab.compress import (QSGD, ContractiveCompressor, Identity, RandK, RandKUnscaled, ScaledSign, Sign,
                             TopK, UnbiasedCompressor)

D = 8
DRAWS = 20000


def _v():
    return torch.tensor([3.0, -1.0, 0.5, 0.0, -2.0, 4.0, -0.25, 1.5], dtype=torch.float64)


def _draws(comp, v, seed=0):
    g = torch.Generator().manual_seed(seed)
    return comp(v.expand(DRAWS, D).clone(), g)  # rows are independent draws


@pytest.mark.parametrize("comp", [RandK(2, D), RandK(5, D), QSGD(1, D), QSGD(4, D)], ids=repr)
def test_unbiased_monte_carlo_within_3se(comp):
    v = _v()
    S = _draws(comp, v)
    mean, se = S.mean(0), S.std(0) / math.sqrt(DRAWS)
    assert torch.all((mean - v).abs() <= 3 * se + 1e-12), (mean, v, se)


@pytest.mark.parametrize("comp", [RandK(2, D), RandK(5, D), QSGD(1, D), QSGD(4, D)], ids=repr)
def test_omega_bound(comp):
    v = _v()
    err = ((_draws(comp, v) - v) ** 2).sum(1)
    m, se = err.mean(), err.std() / math.sqrt(DRAWS)
    assert m - 3 * se <= comp.omega * (v @ v)


def test_randk_omega_tight():
    v = _v()
    comp = RandK(2, D)
    err = ((_draws(comp, v) - v) ** 2).sum(1)
    assert comp.omega == D / 2 - 1
    assert abs(err.mean() - comp.omega * (v @ v)) <= 3 * err.std() / math.sqrt(DRAWS)


def test_qsgd_omega_value():
    assert QSGD(1, 16).omega == min(16 / 1, 4 / 1) == 4
    assert QSGD(8, 16).omega == min(16 / 64, 4 / 8) == 0.25


@pytest.mark.parametrize("comp", [TopK(3, D), RandKUnscaled(3, D), ScaledSign(D)], ids=repr)
def test_delta_bound(comp):
    v = _v()
    err = ((_draws(comp, v) - v) ** 2).sum(1)
    assert err.mean() <= (1 - comp.delta) * (v @ v) + 1e-12


def test_randk_unscaled_delta_tight():
    v = _v()
    comp = RandKUnscaled(3, D)
    err = ((_draws(comp, v) - v) ** 2).sum(1)
    assert abs(err.mean() - (1 - 3 / D) * (v @ v)) <= 3 * err.std() / math.sqrt(DRAWS)


def test_randk_independent_rows_and_k_nonzeros():
    g = torch.Generator().manual_seed(1)
    X = torch.ones(50, D, dtype=torch.float64)
    Y = RandK(3, D)(X, g)
    assert torch.all((Y != 0).sum(1) == 3)
    assert torch.allclose(Y[Y != 0], torch.full((150,), D / 3, dtype=torch.float64))
    assert len({tuple((r != 0).tolist()) for r in Y}) > 10  # different supports per worker


def test_topk_exact():
    X = torch.tensor([[1.0, -5.0, 3.0, 0.5], [0.0, 2.0, -2.5, 1.0]], dtype=torch.float64)
    Y = TopK(2, 4)(X)
    assert torch.equal(Y, torch.tensor([[0.0, -5.0, 3.0, 0.0], [0.0, 2.0, -2.5, 0.0]], dtype=torch.float64))
    assert TopK(2, 4).delta == 0.5
    assert torch.equal(TopK(4, 4)(X), X)


def test_scaled_sign_and_sign():
    v = torch.tensor([2.0, -1.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.equal(ScaledSign(4)(v), torch.tensor([1.0, -1.0, 0.0, 1.0], dtype=torch.float64))  # ||v||_1/d = 1
    assert torch.equal(Sign(4)(v), torch.tensor([1.0, -1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.equal(Sign(4)(3 * v), Sign(4)(v))
    dv = ScaledSign(4).delta_of(v)
    err = ((ScaledSign(4)(v) - v) ** 2).sum()
    assert err <= (1 - dv) * (v @ v) + 1e-12  # with a zero coordinate the bound is strict
    w = torch.tensor([2.0, -1.0, 0.5, 1.0], dtype=torch.float64)
    err_w = ((ScaledSign(4)(w) - w) ** 2).sum()
    assert torch.isclose(err_w, (1 - ScaledSign(4).delta_of(w)) * (w @ w))  # exact without zeros
    assert dv >= 1 / 4 and ScaledSign(4).delta == 0.25
    assert not isinstance(Sign(4), (UnbiasedCompressor, ContractiveCompressor))


def test_qsgd_levels_and_zero():
    g = torch.Generator().manual_seed(0)
    v = _v()
    Y = QSGD(2, D)(v.expand(100, D).clone(), g)
    lv = Y * 2 / v.norm()
    assert torch.allclose(lv, lv.round())
    assert torch.all(torch.sign(Y) * torch.sign(v) >= 0)
    assert torch.equal(QSGD(2, D)(torch.zeros(3, D, dtype=torch.float64), g), torch.zeros(3, D, dtype=torch.float64))


def test_classes_distinct():
    assert isinstance(RandK(1, D), UnbiasedCompressor) and not isinstance(RandK(1, D), ContractiveCompressor)
    assert isinstance(TopK(1, D), ContractiveCompressor) and not isinstance(TopK(1, D), UnbiasedCompressor)
    assert isinstance(RandKUnscaled(1, D), ContractiveCompressor)
    i = Identity(D)
    assert i.omega == 0 and i.delta == 1 and torch.equal(i(_v()), _v())


def test_bits():
    X = torch.zeros(5, 16, dtype=torch.float64)
    assert torch.equal(RandK(2, 16).bits(X), torch.full((5,), 2 * (64 + 4)))
    assert torch.equal(TopK(3, 16).bits(X), torch.full((5,), 3 * (64 + 4)))
    assert torch.equal(Sign(16).bits(X), torch.full((5,), 16))
    assert torch.equal(ScaledSign(16).bits(X), torch.full((5,), 64 + 16))
    assert torch.equal(QSGD(3, 16).bits(X), torch.full((5,), 64 + 16 * 3))
    assert torch.equal(Identity(16).bits(X), torch.full((5,), 64 * 16))
    assert RandK(2, 16).bits(X[0]).shape == (1,)


def test_errors():
    with pytest.raises(ValueError, match="k must lie"):
        RandK(0, D)
    with pytest.raises(ValueError, match="k must lie"):
        TopK(D + 1, D)
    with pytest.raises(TypeError):
        RandKUnscaled(1.5, D)
    with pytest.raises(ValueError, match="s must lie"):
        QSGD(0, D)
    with pytest.raises(ValueError, match="d must lie"):
        ScaledSign(0)
    with pytest.raises(ValueError, match="built for d=8"):
        TopK(2, D)(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        TopK(2, D)(torch.zeros(3, D, dtype=torch.int64))
