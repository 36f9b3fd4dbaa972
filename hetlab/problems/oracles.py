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
    """Exact gradients (``sigma^2 = 0``). Base class of the stochastic oracles.

    Contract for subclasses: ``grad(X, idx, generator)`` returns a new tensor and keeps no reference to
    ``X`` (the local-step loops update their points in place between calls).
    """

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

    Every draw consumes exactly ``rows * batch_size`` float64 uniforms of the generator, so
    :meth:`sample_many` (all local steps of a round at once, which is how :func:`local_steps` asks for
    them) gives the same indices as that many calls of :meth:`sample`.
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
        self._counts = problem.counts.cpu()  # the generator lives on the CPU: draw there

    def sample(self, idx=None, generator=None) -> torch.Tensor:
        """Sample indices ``[n_sel, batch_size]`` (one independent draw per selected client)."""
        return self.sample_many(1, idx, generator)[0]

    def sample_many(self, steps: int, idx=None, generator=None) -> torch.Tensor:
        r"""Indices ``[steps, n_sel, batch_size]`` of ``steps`` independent draws, equal to ``steps`` calls of
        :meth:`sample` with the same generator (CPU indices; a CUDA problem moves them itself).

        Without replacement this is Floyd's algorithm, vectorised over all rows and steps: for
        :math:`s=0,\dots,b-1` and :math:`j=m-b+s`, draw :math:`t` uniform on :math:`\{0,\dots,j\}` and add
        :math:`t`, or :math:`j` if :math:`t` was already chosen. Every :math:`b`-subset of the
        :math:`m` samples comes out with probability :math:`1/\binom mb` (by induction on :math:`s`), the
        padding is never reached, and it costs :math:`b` uniforms per row instead of :math:`m`.
        """
        counts = self._counts if idx is None else self._counts[idx.cpu()]
        b = self.batch_size
        u = torch.rand(steps, len(counts), b, generator=generator, dtype=torch.float64)
        # floor(u * top) is uniform on {0..top-1}; the product can round up to top when u is within an ulp of 1
        if self.replace:
            top = counts[None, :, None]
            return torch.minimum((u * top).long(), top - 1)
        # j + 1 for s = 0..b-1, position-major [b, steps * rows] so that each position s is one contiguous row
        top = (counts[None, :, None] - b + 1 + torch.arange(b)).expand(steps, -1, -1).reshape(-1, b).t()
        J = top - 1
        T = torch.minimum((u.reshape(-1, b).t() * top).long(), J)
        for s in range(1, b):
            Ts = T[s]
            torch.where((T[:s] == Ts).any(0), J[s], Ts, out=Ts)
        return T.t().reshape(steps, len(counts), b)

    def grad(self, X, idx=None, generator=None):
        return self.problem.minibatch_grad(X, self.sample(idx, generator), idx)

    def draw_steps(self, steps: int, idx=None, generator=None) -> "_MinibatchSteps":
        """The random part of ``steps`` consecutive :meth:`grad` calls, drawn at once (same numbers as
        calling :meth:`grad` ``steps`` times); see :class:`_MinibatchSteps`."""
        return _MinibatchSteps(self.problem, self.sample_many(steps, idx, generator), idx)

    def sigma_sq(self, x):
        return self.problem.minibatch_variance(x, self.batch_size, self.replace)


class _MinibatchSteps:
    """The minibatches of ``K`` local steps, drawn in advance: ``grad(X, k)`` is step ``k``'s gradient and
    ``step_(X, k, lr)`` its SGD step applied in place (fused when the problem has ``minibatch_step_``)."""

    def __init__(self, problem, samples, idx):
        self.problem, self.samples, self.idx = problem, samples, idx
        self._fused = getattr(problem, "minibatch_step_", None)

    def grad(self, X, k):
        return self.problem.minibatch_grad(X, self.samples[k], self.idx)

    def step_(self, X, k, lr):
        if self._fused is not None:
            return self._fused(X, self.samples[k], lr, self.idx)
        return X.add_(self.grad(X, k), alpha=-lr)

