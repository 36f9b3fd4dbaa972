"""Shared helpers of the core-library tests (float64 everywhere, fixed seeds)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hetlab.comm import SimulatedComm  # noqa: E402
from hetlab.problems import Oracle, random_quadratics  # noqa: E402

DT = torch.float64


def run_rounds(method, problem, rounds, *, oracle=None, seed=0, x0=None, every=None):
    """Run ``rounds`` rounds of ``method`` by hand (no run loop); return the final state and,
    if ``every`` is a callable, call ``every(r, state)`` after each round ``r = 1..rounds``."""
    oracle = oracle if oracle is not None else Oracle(problem)
    comm = SimulatedComm(problem.n)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.zeros(problem.d, dtype=DT) if x0 is None else torch.as_tensor(x0, dtype=DT)
    state = method.init(x0, problem)
    for r in range(1, rounds + 1):
        state = method.step(state, oracle, comm, gen)
        if every is not None:
            every(r, state)
    return state


def rel_err(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def a1_problem():
    """THEORY A1: n=8, d=5, spectrum U[0.5, 2], b_i ~ N(0, I), seed 0."""
    return random_quadratics(8, 5, spectrum=(0.5, 2.0), seed=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
