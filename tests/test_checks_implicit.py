"""Checks B1 (GD's implicit gradient regulariser) and B2 (SGD with random reshuffling): they pass for several
seeds, every negative control fails, they stay fast, and they *can* fail: mutating the modified loss
(coefficient, sign, missing variance term) or the implementation (the GD step, the enumeration over orders,
the SGD pass) makes ``run().passed`` False."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import proofs_check
from hetlab import modified_losses as ml
from hetlab.algorithms import GD, shuffling

B1 = proofs_check.get("B1")
B2 = proofs_check.get("B2")


@pytest.mark.parametrize("cid", ["B1", "B2"])
@pytest.mark.parametrize("seed", [0, 1, 4, 9])
def test_checks_pass_and_controls_fail(cid, seed):
    res = proofs_check.run_check(cid, seed=seed)
    assert res.passed, [c.name for c in res.criteria if not c.ok]
    assert res.seed == seed
    assert len(res.negative_controls) >= 2
    assert all(not c.holds for c in res.negative_controls)


def test_b1_numbers_are_those_of_theory():
    res = B1.run(0)
    s = res.data["slopes"]
    assert abs(s["plain"] - 2) < 0.1 and abs(s["modified"] - 3) < 0.1
    assert 0.5 <= res.data["series"]["ratio"] <= 2
    assert res.data["series"]["frob2"] / res.data["series"]["frob3"] >= 10


def test_b2_enumerates_all_orders(monkeypatch):
    seen = []
    real = shuffling.sgd_pass

    def spy(X, orders, *a, **k):
        seen.append(orders.shape)
        return real(X, orders, *a, **k)

    monkeypatch.setattr(shuffling, "sgd_pass", spy)
    B2.run(0)
    assert (24, 4) in seen and (256, 4) in seen


@pytest.mark.parametrize("cid", ["B1", "B2"])
def test_figures_draw(cid):
    import matplotlib.pyplot as plt
    mod = proofs_check.get(cid)
    ax = mod.figure(mod.run(0))
    assert len(ax.lines) >= 5
    plt.close(ax.figure)

# ------------------------------------------------------------------------------------- mutations


def _fails(mod, seed=0):
    res = mod.run(seed)
    return not res.passed


@pytest.mark.parametrize("factor", [2.0, -1.0, 0.0])
def test_b1_fails_with_a_wrong_igr_coefficient(monkeypatch, factor):
    monkeypatch.setattr(ml, "igr_loss", lambda p, h: ml.modified_loss(p, grad_norm=factor * h / 4))
    assert _fails(B1)


def test_b1_fails_when_gd_takes_two_half_steps(monkeypatch):
    """A GD whose step is two half steps agrees with GD to first order only (coefficient h/8 instead of h/4)."""
    real = GD.step

    def two_half_steps(self, state, oracle, comm, generator):
        lr = self.lr
        self.lr = lr / 2
        try:
            return real(self, real(self, state, oracle, comm, generator), oracle, comm, generator)
        finally:
            self.lr = lr

    monkeypatch.setattr(GD, "step", two_half_steps)
    assert _fails(B1)


def test_b1_fails_with_a_truncated_matrix_log(monkeypatch):
    monkeypatch.setattr(ml, "gd_exact_modified_hessian", lambda H, h: ml.log_series_hessian(H, h, 3))
    assert _fails(B1)


@pytest.mark.parametrize("coef", ["half", "minus", "no_variance"])
def test_b2_fails_with_a_wrong_rr_loss(monkeypatch, coef):
    wrong = {
        "half": lambda p, e: ml.modified_loss(p, mean_grad_norm=e / 8),
        "minus": lambda p, e: ml.modified_loss(p, mean_grad_norm=-e / 4),
        "no_variance": lambda p, e: ml.igr_loss(p, e),
    }[coef]
    monkeypatch.setattr(ml, "sgd_rr_loss", wrong)
    assert _fails(B2)


def test_b2_fails_when_the_enumeration_uses_one_order(monkeypatch):
    real = shuffling.all_permutations
    monkeypatch.setattr(shuffling, "all_permutations", lambda m: real(m)[:1].repeat(24, 1))
    assert _fails(B2)


def test_b2_fails_when_the_epoch_uses_stale_gradients(monkeypatch):
    """An 'SGD pass' that evaluates every minibatch gradient at the epoch's start point is GD in disguise."""
    def stale(X, orders, oracle, lr, generator=None):
        X0 = X
        for s in range(orders.shape[1]):
            X = X - lr * oracle.grad(X0, orders[:, s], generator)
        return X

    monkeypatch.setattr(shuffling, "sgd_pass", stale)
    assert _fails(B2)


def test_b2_fails_when_with_replacement_uses_the_rr_loss(monkeypatch):
    """If with-replacement sampling had the RR modified loss, its own-loss criterion would fail."""
    monkeypatch.setattr(ml, "sgd_with_replacement_loss", lambda p, e: ml.sgd_rr_loss(p, e))
    assert _fails(B2)


def test_residual_grid_spans_a_decade():
    for mod, grid in ((B1, B1.HS), (B2, B2.ETAS)):
        assert len(grid) >= 4 and np.log10(grid.max() / grid.min()) >= 1.0
    assert B1.make_problem(0)[0].L * B1.HS.max() <= 0.2
    assert B2.M * B2.make_problem(0)[0].L * B2.ETAS.max() <= 0.35
    torch.manual_seed(0)  # nothing in the checks depends on the global generator
    assert B2.run(3).passed
