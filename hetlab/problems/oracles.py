r"""Stochastic first-order oracles with known noise level :math:`\sigma^2`.

An oracle returns stacked stochastic gradients ``g = oracle.grad(X, idx, generator)`` of shape
``[n_sel, d]`` with :math:`\mathbb E g_i=\nabla f_i(x_i)`. Every oracle states its noise exactly:
``sigma_sq(x)`` returns, for each client, :math:`\sigma_i^2(x)=\mathbb E\|g_i-\nabla f_i(x)\|^2`.
Randomness comes only from the ``torch.Generator`` passed in, so runs are reproducible.
"""
from __future__ import annotations

import torch

from .base import Problem


class Oracle:
    """Exact gradients (``sigma^2 = 0``). Base class of the stochastic oracles."""

    stochastic = False

    def __init__(self, problem: Problem):
        self.problem = problem

    def grad(self, X, idx=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.problem.grad(X, idx)

    def sigma_sq(self, x) -> torch.Tensor:
        """Per-client noise :math:`\\sigma_i^2(x)` at the common point ``x`` (``[n]``)."""
        return torch.zeros(self.problem.n, dtype=self.problem.dtype)

    def __repr__(self):
        return f"{type(self).__name__}({self.problem!r})"


ExactOracle = Oracle


class GaussianNoiseOracle(Oracle):
    r"""Additive Gaussian noise :math:`g_i=\nabla f_i(x_i)+\xi_i`, :math:`\xi_i\sim\mathcal N(0,\frac{\sigma^2}{d}I)`,
    independent across workers and calls, so :math:`\mathbb E\|\xi_i\|^2=\sigma^2` exactly."""

    stochastic = True

    def __init__(self, problem: Problem, sigma: float):
        super().__init__(problem)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def grad(self, X, idx=None, generator=None):
        G = self.problem.grad(X, idx)
        noise = torch.randn(G.shape, dtype=G.dtype, generator=generator).to(G.device)  # CPU generator
        return G + (self.sigma / self.problem.d ** 0.5) * noise

    def sigma_sq(self, x):
        return torch.full((self.problem.n,), self.sigma ** 2, dtype=self.problem.dtype)


class MinibatchOracle(Oracle):
    """Minibatch gradients of a finite-sum problem, sampled with or without replacement.

    Each call draws, for every selected client independently, ``batch_size`` sample indices among
    that client's ``m_i`` samples (without replacement: a uniformly random subset; with replacement:
    i.i.d. uniform). The noise level is exact: :meth:`sigma_sq` calls the problem's
    ``minibatch_variance``.
    """

    stochastic = True

    def __init__(self, problem, batch_size: int, replace: bool = False):
        super().__init__(problem)
        if not hasattr(problem, "minibatch_grad"):
            raise TypeError(f"{type(problem).__name__} has no per-sample access; use a finite-sum problem "
                            "(LeastSquaresProblem, LogisticRegressionProblem) or GaussianNoiseOracle")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        mmin = int(problem.counts.min())
        if not replace and batch_size > mmin:
            raise ValueError(f"batch_size {batch_size} exceeds the smallest client's sample count {mmin}; "
                             "sampling without replacement needs batch_size <= min_i m_i (or use replace=True)")
        self.batch_size, self.replace = int(batch_size), bool(replace)

    def sample(self, idx=None, generator=None) -> torch.Tensor:
        """Sample indices ``[n_sel, batch_size]`` (one independent draw per selected client)."""
        # the generator lives on the CPU: draw there, with the masks brought to the CPU (a CUDA problem
        # receives CPU indices and moves them itself)
        counts = self.problem._rows(self.problem.counts, idx).cpu()
        m_max = self.problem.Z.shape[1]
        if self.replace:
            u = torch.rand(len(counts), self.batch_size, generator=generator, dtype=torch.float64)
            return (u * counts[:, None]).long().clamp(max=m_max - 1)
        keys = torch.rand(len(counts), m_max, generator=generator, dtype=torch.float64)
        keys = keys.masked_fill(~self.problem._rows(self.problem.mask, idx).cpu(), 2.0)  # padding never chosen
        return keys.topk(self.batch_size, dim=1, largest=False).indices

    def grad(self, X, idx=None, generator=None):
        return self.problem.minibatch_grad(X, self.sample(idx, generator), idx)

    def sigma_sq(self, x):
        return self.problem.minibatch_variance(x, self.batch_size, self.replace)
