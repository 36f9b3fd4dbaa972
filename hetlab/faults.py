r"""Byzantine workers: some workers send something other than their gradient.

:class:`ByzantineFaults` picks a set of ``f`` workers once, **deterministically from its seed**
(``torch.randperm(n)`` with a generator seeded by ``seed``, first ``f`` entries, sorted), and replaces
their rows of a stacked message ``G [n, d]`` by an attack:

==============  =====================================================================================
``attack``      what a Byzantine worker :math:`i` sends instead of its vector :math:`g_i`
==============  =====================================================================================
``"sign_flip"`` :math:`-\lambda\,g_i` (``scale`` :math:`\lambda`, default 1): the reversed gradient
``"scale"``     :math:`\lambda\,g_i` (e.g. :math:`\lambda=100`: a huge step in the right direction,
                or a negative :math:`\lambda` for a huge step in the wrong one)
``"random"``    :math:`\lambda\,z_i`, :math:`z_i\sim\mathcal N(0,I_d)`, fresh every call (drawn from
                the generator passed to :meth:`ByzantineFaults.apply`, i.e. the run's generator)
==============  =====================================================================================

It composes with every method of :mod:`hetlab.algorithms.robust` (``faults=``): the honest rows are
computed as usual (gradient, then the optional perturbation), the Byzantine rows are replaced, and the
aggregator sees the result. The attacks here are "blind": they use only the attacker's own vector.
``honest_problem`` gives the objective of the honest workers, whose minimiser is the natural target
once some workers are adversarial.
"""
from __future__ import annotations

import math

import torch

ATTACKS = ("sign_flip", "scale", "random")


class ByzantineFaults:
    """``f`` Byzantine workers (given as ``count``, or as ``fraction`` of ``n``: ``floor(fraction * n)``)
    that send ``attack`` vectors with magnitude parameter ``scale``; the set is fixed by ``seed``."""

    def __init__(self, count: int | None = None, fraction: float | None = None, attack: str = "sign_flip",
                 scale: float = 1.0, seed: int = 0):
        if (count is None) == (fraction is None):
            raise ValueError("ByzantineFaults: give exactly one of count (number of Byzantine workers) "
                             "or fraction (share of the workers, in [0, 1])")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise ValueError(f"ByzantineFaults: count must be a non-negative integer, got {count!r}")
        if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"ByzantineFaults: fraction must lie in [0, 1], got {fraction}")
        if attack not in ATTACKS:
            raise ValueError(f"ByzantineFaults: unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        if not math.isfinite(scale):
            raise ValueError(f"ByzantineFaults: scale must be finite, got {scale}")
        self.count, self.fraction = count, None if fraction is None else float(fraction)
        self.attack, self.scale, self.seed = attack, float(scale), int(seed)

    # -- the Byzantine set ----------------------------------------------------------------------
    def num_byzantine(self, n: int) -> int:
        f = self.count if self.count is not None else int(math.floor(self.fraction * n + 1e-12))
        if f > n:
            raise ValueError(f"ByzantineFaults: {f} Byzantine workers requested but there are only n={n} workers")
        return f

    def byzantine_set(self, n: int) -> torch.Tensor:
        """Sorted ids of the Byzantine workers among ``n`` (a function of ``seed`` and ``n`` only)."""
        f = self.num_byzantine(n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return perm[:f].sort().values

    def mask(self, n: int) -> torch.Tensor:
        """Boolean ``[n]``: True for the Byzantine workers."""
        m = torch.zeros(n, dtype=torch.bool)
        m[self.byzantine_set(n)] = True
        return m

    def honest_set(self, n: int) -> torch.Tensor:
        return torch.nonzero(~self.mask(n)).flatten()

    # -- the attack -------------------------------------------------------------------------------
    def apply(self, G: torch.Tensor, generator: torch.Generator | None = None, idx: torch.Tensor | None = None,
              n: int | None = None) -> torch.Tensor:
        """``G`` (``[rows, d]``, out of place) with the Byzantine rows replaced by the attack.

        Rows are workers ``0..n-1``, or the workers ``idx`` when given (then pass the total ``n``).
        ``"random"`` draws from ``generator`` (a fresh unseeded draw when it is ``None``).
        """
        if G.dim() != 2:
            raise ValueError(f"ByzantineFaults.apply: expected stacked rows [rows, d], got shape {list(G.shape)}")
        if idx is None:
            bad = self.mask(G.shape[0])
        else:
            if n is None:
                raise ValueError("ByzantineFaults.apply: pass the total number of workers n together with idx")
            bad = self.mask(n)[idx]
        if not bool(bad.any()):
            return G
        if self.attack == "sign_flip":
            attacked = -self.scale * G
        elif self.attack == "scale":
            attacked = self.scale * G
        else:
            attacked = self.scale * torch.randn(G.shape, dtype=G.dtype, device=G.device, generator=generator)
        return torch.where(bad.to(G.device).unsqueeze(1), attacked, G)

    def __repr__(self):
        who = f"count={self.count}" if self.count is not None else f"fraction={self.fraction}"
        return f"ByzantineFaults({who}, attack={self.attack!r}, scale={self.scale:g}, seed={self.seed})"


def honest_problem(problem, faults: ByzantineFaults | None):
    """The objective of the honest workers of a :class:`~hetlab.problems.QuadraticProblem` (rows of the
    honest workers, their weights renormalised): its ``x_star`` is what a robust method should reach."""
    from .problems import QuadraticProblem
    if faults is None:
        return problem
    if not isinstance(problem, QuadraticProblem):
        raise TypeError(f"honest_problem supports QuadraticProblem, got {type(problem).__name__}")
    h = faults.honest_set(problem.n)
    if len(h) == 0:
        raise ValueError("honest_problem: every worker is Byzantine, there is no honest objective")
    out = QuadraticProblem(problem.A[h], problem.c[h], problem.e[h], problem.weights[h], dtype=problem.dtype)
    if problem.b is not None:
        out.b = problem.b[h]
    return out
