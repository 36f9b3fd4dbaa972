
import numpy as np
import pytest
from scipy.optimize import minimize

from hetlab.algorithms.server_side import (FedAWARE, fedaware_direction, frank_wolfe_min_norm, kkt_residuals,
                                           min_norm_simplex, two_vector_alpha, weighted_diversity)
from hetlab.problems import random_quadratics
from proofs_check import e3_fedaware_min_norm_diversity as e3
from proofs_check._base import iterate


def test_hand_computed_cases():
    V = np.eye(3)
    assert np.allclose(min_norm_simplex(V), [1 / 3] * 3, atol=1e-14)
    V = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # 0 in hull of first two
    lam = min_norm_simplex(V)
    assert np.allclose(lam @ V, 0, atol=1e-14) and lam[2] == 0
    V = np.array([[1.0, 1.0], [2.0, 2.0]])  # nearest point is v_0
    assert np.allclose(min_norm_simplex(V), [1, 0])
    assert two_vector_alpha([1.0, 1.0], [2.0, 2.0]) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_kkt_and_slsqp_agree(seed):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((6, 4)) + 0.5
    lam = min_norm_simplex(V)
    kmin, ksupp, feas = kkt_residuals(V, lam)
    assert kmin >= -1e-10 and ksupp <= 1e-10 and feas <= 1e-14
    G = V @ V.T
    res = minimize(lambda l: l @ G @ l, np.full(6, 1 / 6), method="SLSQP", bounds=[(0, 1)] * 6,
                   constraints=[{"type": "eq", "fun": lambda l: l.sum() - 1}], options={"ftol": 1e-15})
    assert lam @ G @ lam <= res.fun + 1e-12
    assert np.sum((frank_wolfe_min_norm(V, 3000) @ V) ** 2) - lam @ G @ lam <= 1e-8


def test_diversity_identity_for_unit_vectors():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((5, 5))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    lam = rng.dirichlet(np.ones(5))
    assert weighted_diversity(V, lam) == pytest.approx(1 / np.sum((lam @ V) ** 2), rel=1e-12)


def test_fedaware_zero_rows_excluded_and_runs():
    import torch
    M = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    d, lam = fedaware_direction(M)
    assert lam[1] == 0 and torch.allclose(d, torch.tensor([0.5, 0.5], dtype=torch.float64))
    prob = random_quadratics(4, 3, seed=0)
    traj, st = iterate(FedAWARE(lr=0.1, local_steps=2, alpha=0.5, participation=2, projection=True), prob, 5)
    assert np.isfinite(traj).all() and traj.shape == (6, 3)


def test_e3_passes_and_controls_fail():
    r = e3.run(0)
    assert r.passed and all(not c.holds for c in r.negative_controls) and r.runtime_s < 10


def test_e3_mutation(monkeypatch):
    # uniform weights instead of the min-norm solution
    monkeypatch.setattr(e3, "min_norm_simplex", lambda V: np.full(len(V), 1 / len(V)))
    assert not e3.run(0).passed


def test_fedaware_composes_with_server_optimizers_and_ignores_roundoff_directions():
    import torch as _t

    from hetlab.algorithms import FedAWARE, ServerMomentum, ServerSGD
    from hetlab.comm import SimulatedComm
    from hetlab.problems import Oracle, random_quadratics
    prob = random_quadratics(5, 3, seed=1)
    o, c = Oracle(prob), SimulatedComm(5)
    x0 = _t.zeros(3, dtype=_t.float64)
    a, b = FedAWARE(0.05, 3, server_lr=0.7), FedAWARE(0.05, 3, server_opt=ServerMomentum(0.7, 0.0))
    sa, sb = a.init(x0, prob), b.init(x0, prob)
    for _ in range(5):
        sa, sb = a.step(sa, o, c, None), b.step(sb, o, c, None)
    assert _t.allclose(sa["x"], sb["x"], atol=1e-14)
    assert "server_m" in sb and repr(ServerSGD(0.7)) == a.hyperparameters()["server_opt"]
    # with a huge zero tolerance every direction counts as zero: the server never moves, projection or not
    for proj in (False, True):
        m = FedAWARE(0.05, 3, projection=proj, zero_tol=1e9)
        s = m.init(x0, prob)
        s = m.step(s, o, c, None)
        assert _t.equal(s["x"], x0)
