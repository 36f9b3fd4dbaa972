"""CHOCO-SGD and LEAD (compressed decentralized methods) and check C8's ability to fail."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import proofs_check
from hetlab.algorithms import DSGD, LEAD, ChocoSGD
from hetlab.comm import SimulatedComm
from hetlab.compress import QSGD, Identity, RandK, RandKUnscaled, TopK
from hetlab.problems import Oracle, QuadraticProblem
from hetlab.topology import make_topology

DT = torch.float64


def problem(n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    A = np.stack([np.diag(rng.uniform(0.5, 2.0, d)) for _ in range(n)])
    return QuadraticProblem.from_minimizers(A, 2.0 * rng.standard_normal((n, d)))


def iterate(method, prob, T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    oracle, comm = Oracle(prob), SimulatedComm(prob.n)
    s = method.init(torch.zeros(prob.d, dtype=DT), prob)
    for _ in range(T):
        s = method.step(s, oracle, comm, gen)
    return s


def test_choco_with_identity_and_gamma_one_is_dsgd_atc_after_first_round():
    # with exact messages X_hat = X_half, so X <- X_half + (W - I) X_half = W (X - eta G): D-SGD (ATC)
    prob, ring = problem(), make_topology("ring", 6)
    a = iterate(ChocoSGD(0.1, ring, Identity(5), gamma=1.0), prob, 50)
    b = iterate(DSGD(0.1, ring, ordering="atc"), prob, 50)
    assert torch.allclose(a["X"], b["X"], atol=1e-12, rtol=0)


def test_choco_plateaus_at_the_dsgd_fixed_point_of_the_lazy_matrix_not_at_x_star():
    # at a fixed point the message vanishes (X_hat = X - eta G(X)), so eta G = gamma (W - I)(X - eta G):
    # D-SGD's (ATC) fixed point for W_gamma = I + gamma (W - I), which is not consensual at x*
    prob, ring = problem(), make_topology("ring", 6)
    lr, gamma = 0.1, 0.2
    s = iterate(ChocoSGD(lr, ring, TopK(2, 5), gamma=gamma), prob, 6000)
    X = s["X"]
    Y = X - lr * prob.grad(X)
    W = ring.W(0).to(DT)
    resid = lr * prob.grad(X) - gamma * (W - torch.eye(6, dtype=DT)) @ Y
    assert float(resid.abs().max()) < 1e-10
    assert float((X - prob.x_star).norm()) > 1e-2


def test_lead_converges_linearly_with_compression_and_keeps_dual_sum_zero():
    prob, ring = problem(), make_topology("ring", 6)
    s = iterate(LEAD(0.1, ring, RandK(2, 5), gamma=0.1), prob, 3000, seed=3)
    assert float((s["X"] - prob.x_star).abs().max()) < 1e-8
    assert float(s["D"].sum(0).abs().max()) < 1e-8
    # alpha defaults to 1 / (1 + omega)
    assert LEAD(0.1, ring, RandK(2, 5), gamma=0.1).alpha == pytest.approx(1 / (1 + RandK(2, 5).omega))


def test_lead_without_compression_is_exact_diffusion_and_fast():
    prob, ring = problem(), make_topology("ring", 6)
    s = iterate(LEAD(0.2, ring, Identity(5), gamma=1.0, alpha=1.0), prob, 400)
    assert float((s["X"] - prob.x_star).abs().max()) < 1e-10


def test_bits_are_counted_per_worker_message():
    prob, ring = problem(), make_topology("ring", 6)
    c = RandK(2, 5)
    s = iterate(LEAD(0.1, ring, c, gamma=0.1), prob, 7)
    per_round = int(c.bits(torch.zeros(6, 5, dtype=DT)).sum())
    assert s["round_bits"] == per_round and s["bits"] == 7 * per_round
    s = iterate(ChocoSGD(0.1, ring, TopK(1, 5), gamma=0.5), prob, 3)
    assert s["bits"] == 3 * int(TopK(1, 5).bits(torch.zeros(6, 5, dtype=DT)).sum())


def test_compressor_class_is_enforced():
    ring = make_topology("ring", 6)
    with pytest.raises(TypeError, match="ContractiveCompressor"):
        ChocoSGD(0.1, ring, RandK(2, 5), gamma=0.5)
    with pytest.raises(TypeError, match="UnbiasedCompressor"):
        LEAD(0.1, ring, TopK(2, 5), gamma=0.5)
    with pytest.raises(ValueError, match="gamma"):
        ChocoSGD(0.1, ring, RandKUnscaled(2, 5), gamma=0.0)
    with pytest.raises(ValueError, match="alpha"):
        LEAD(0.1, ring, QSGD(2, 5), gamma=0.5, alpha=1.5)
    with pytest.raises(ValueError, match="d=4"):
        LEAD(0.1, ring, RandK(2, 4), gamma=0.5).init(torch.zeros(5, dtype=DT), problem())


def test_scaled_randk_would_break_choco_which_is_why_the_class_is_checked():
    # pitfall 2 of THEORY C8: bypass the type check and feed the unbiased (d/k-scaled) rand-k to CHOCO
    prob, ring = problem(), make_topology("ring", 6)
    m = ChocoSGD(0.05, ring, RandKUnscaled(1, 5), gamma=0.5)
    m.compressor = RandK(1, 5)
    s = iterate(m, prob, 300, seed=1)
    assert not torch.isfinite(s["X"]).all() or float(s["X"].abs().max()) > 1e6


def test_c8_fails_if_lead_forgets_the_dual_correction(monkeypatch):
    mod = proofs_check.get("C8")

    class NoDual(LEAD):  # without D, LEAD is compressed D-SGD-like and keeps the heterogeneity bias
        def step(self, state, oracle, comm, generator):
            s = super().step(state, oracle, comm, generator)
            s["D"] = torch.zeros_like(s["D"])
            return s

    monkeypatch.setattr(mod, "LEAD", NoDual)
    assert not mod.run().passed


def test_c8_fails_if_choco_were_exact(monkeypatch):
    mod = proofs_check.get("C8")
    monkeypatch.setattr(mod, "ChocoSGD", lambda lr, top, comp, gamma: LEAD(0.1, top, RandK(2, 10), gamma=0.05,
                                                                           alpha=0.1))
    assert not mod.run().passed
