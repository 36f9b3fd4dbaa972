"""The runs compared between the simulated and the torch.distributed backends (shared by the test and
its torchrun worker script). Every case is float64 with a fixed seed."""
from __future__ import annotations

import torch

from hetlab.algorithms import DSGD, FedAvg, RelaySGD, Scaffold
from hetlab.models import mlp
from hetlab.problems import (GaussianNoiseOracle, MinibatchOracle, NNProblem, random_least_squares,
                             random_quadratics)
from hetlab.topology import make_topology

N, D, ROUNDS, SEED = 10, 4, 6, 3   # 10 workers over 4 processes: blocks of 3, 3, 2, 2


def fedavg_minibatch():
    prob = random_least_squares(N, 12, D, seed=1)
    return prob, MinibatchOracle(prob, 3), FedAvg(0.5 / prob.L, 4), torch.zeros(D, dtype=torch.float64)


def scaffold_noise():
    prob = random_quadratics(N, D, seed=2)
    return prob, GaussianNoiseOracle(prob, 0.3), Scaffold(0.05, 3), torch.ones(D, dtype=torch.float64)


def dsgd_ring():
    prob = random_quadratics(N, D, seed=4)
    return (prob, GaussianNoiseOracle(prob, 0.2), DSGD(0.05, make_topology("ring", N)),
            torch.zeros(D, dtype=torch.float64))


def fedavg_mlp():
    g = torch.Generator().manual_seed(5)
    Z = torch.randn(N, 8, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N, 8), generator=g)
    counts = torch.tensor([8, 5, 6, 8, 4, 8, 7, 3, 8, 6])
    torch.manual_seed(0)
    prob = NNProblem(mlp([6, 5, 3]), Z, y, counts, dtype=torch.float64)
    return prob, MinibatchOracle(prob, 2), FedAvg(0.1, 3, check_stability=False), prob.initial_point()


def relaysgd_tree():
    import networkx as nx
    prob = random_quadratics(N, D, seed=6)
    return (prob, GaussianNoiseOracle(prob, 0.2), RelaySGD(0.05, nx.balanced_tree(2, 3).subgraph(range(N)).copy()),
            torch.zeros(D, dtype=torch.float64))


def fedavg_partial():
    """4 of 10 clients per round: some processes hold no sampled client in some rounds."""
    prob = random_least_squares(N, 12, D, seed=7)
    return (prob, MinibatchOracle(prob, 3), FedAvg(0.5 / prob.L, 3, participation=0.4),
            torch.zeros(D, dtype=torch.float64))


def scaffold_partial():
    prob = random_quadratics(N, D, seed=8)
    return (prob, GaussianNoiseOracle(prob, 0.3), Scaffold(0.05, 2, participation=3, option="I"),
            torch.ones(D, dtype=torch.float64))


CASES = {"fedavg_minibatch": fedavg_minibatch, "fedavg_partial": fedavg_partial, "scaffold_partial": scaffold_partial, "scaffold_noise": scaffold_noise, "dsgd_ring": dsgd_ring,
         "fedavg_mlp": fedavg_mlp, "relaysgd_tree": relaysgd_tree}
