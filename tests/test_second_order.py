import numpy as np
import torch

from hetlab.algorithms.second_order import LocalNewton
from hetlab.problems import QuadraticProblem, random_quadratics
from proofs_check import a6_localnewton_global_linesearch as a6
from proofs_check._base import iterate


def test_one_newton_step_hand_computed():
    A = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 4.0]]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    prob = QuadraticProblem.from_minimizers(A, b)
    traj, _ = iterate(LocalNewton(1, 1.0, 0.0, line_search=None), prob, 1)
    assert np.allclose(traj[1], [0.5, 1.5], atol=1e-14)  # b_bar
    # exact line search from 0: t* = b_bar^T mean(A_i b_i) / b_bar^T A_bar b_bar
    t = (0.5 * 1.0 + 1.5 * 6.0) / (0.5 ** 2 * 1.5 + 1.5 ** 2 * 2.5)
    traj, _ = iterate(LocalNewton(1, 1.0, 0.0, line_search="exact"), prob, 3)
    assert np.allclose(traj[1], t * np.array([0.5, 1.5]), atol=1e-14)
    assert np.allclose(traj[3], traj[1], atol=1e-14)


def test_single_client_reduces_to_newton():
    prob = random_quadratics(1, 4, seed=3)
    traj, _ = iterate(LocalNewton(1, 1.0, 0.0, line_search=None), prob, 1)
    assert np.allclose(traj[1], prob.x_star.numpy(), atol=1e-12)


def test_armijo_monotone_on_logistic():
    from hetlab.problems import random_logistic
    prob = random_logistic(4, 15, 3, seed=1)
    traj, _ = iterate(LocalNewton(2, 1.0, 1e-3, line_search="auto"), prob, 6)
    f = [float(prob.global_loss(torch.as_tensor(x))) for x in traj]
    assert all(b <= a + 1e-12 for a, b in zip(f, f[1:]))


def test_a6_passes_and_controls_fail():
    r = a6.run(0)
    assert r.passed
    assert all(not c.holds for c in r.negative_controls)
    assert r.runtime_s < 10


def test_a6_mutation_wrong_prediction(monkeypatch):
    monkeypatch.setattr(a6, "line_minimiser_t", lambda prob: 1.0)  # claims the limit is b_bar
    assert not a6.run(0).passed


def test_a6_mutation_implementation(monkeypatch):
    monkeypatch.setattr(LocalNewton, "step_size", lambda self, problem, x, d: torch.tensor(1.0, dtype=x.dtype))
    assert not a6.run(0).passed
