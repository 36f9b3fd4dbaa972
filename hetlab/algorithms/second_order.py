r"""Second-order local methods: local (damped) Newton with a global line search (THEORY A6).

Bischoff, Günnemann, Jaggi, Stich (arXiv 2109.02388): every client runs ``K`` damped Newton steps
:math:`y\leftarrow y-\alpha(\nabla^2f_i(y)+\lambda I)^{-1}\nabla f_i(y)` from the server model, the server
takes the average model change :math:`d=\frac1n\sum_i(y_i^K-x)` (weighted by the problem's client weights)
as a direction and steps :math:`x\leftarrow x+\gamma d` with

* ``line_search="exact"``: :math:`\gamma=\max(0,-\nabla f(x)^\top d/(d^\top\bar Ad))` (quadratics only);
* ``line_search="armijo"``: backtracking from :math:`\gamma=1` until
  :math:`f(x+\gamma d)\le f(x)+c\,\gamma\nabla f(x)^\top d`;
* ``line_search="auto"`` (default): exact on quadratics, Armijo otherwise;
* ``line_search=None``: :math:`\gamma=1` (plain averaging of the local Newton iterates).

On quadratics with :math:`\lambda=0` one local step gives :math:`y_i=x-\alpha(x-b_i)`, so
:math:`d=(1-(1-\alpha)^K)(\bar b-x)` ignores the Hessians: without line search (:math:`\alpha=1`)
the fixed point is :math:`\bar b`; with exact line search the iterates stop at the minimiser of f on
the line through :math:`x^0` and :math:`\bar b` (monotone but biased).
"""
from __future__ import annotations

import torch

from .base import Method, check_x0


def local_hessians(problem, Y: torch.Tensor, idx=None) -> torch.Tensor:
    """Local Hessians ``[rows, d, d]`` at the stacked points ``Y`` (constant ones for quadratics)."""
    from ..problems.quadratic import QuadraticProblem
    if isinstance(problem, QuadraticProblem) and not hasattr(problem, "per_sample_grads"):
        return problem.hessians(idx)
    try:
        return problem.hessians(Y, idx)
    except TypeError:
        return problem.hessians(idx)


def _is_quadratic(problem) -> bool:
    from ..problems.quadratic import QuadraticProblem
    return isinstance(problem, QuadraticProblem)


class LocalNewton(Method):
    r"""Local damped Newton (``local_steps`` steps, step ``alpha``, damping ``lam``) plus a global line search."""

    name = "local_newton"

    def __init__(self, local_steps: int = 1, alpha: float = 1.0, lam: float = 0.0, line_search="auto",
                 armijo_c: float = 1e-4, armijo_shrink: float = 0.5, armijo_max: int = 60):
        if local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {local_steps}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if line_search not in (None, "auto", "exact", "armijo"):
            raise ValueError(f"line_search must be None, 'auto', 'exact' or 'armijo', got {line_search!r}")
        if not (0 < armijo_c < 1 and 0 < armijo_shrink < 1):
            raise ValueError("armijo_c and armijo_shrink must lie in (0, 1)")
        self.local_steps, self.alpha, self.lam = int(local_steps), float(alpha), float(lam)
        self.line_search = line_search
        self.armijo_c, self.armijo_shrink, self.armijo_max = float(armijo_c), float(armijo_shrink), int(armijo_max)

    def init(self, x0, problem):
        if self.line_search == "exact" and not _is_quadratic(problem):
            raise ValueError("line_search='exact' needs a quadratic problem (use 'armijo')")
        return {"x": check_x0(x0, problem), "round": 0, "gamma": torch.tensor(1.0, dtype=problem.dtype)}

    def local_newton(self, X: torch.Tensor, oracle) -> torch.Tensor:
        """``K`` damped Newton steps of every client at once (stacked ``[n, d]``)."""
        problem = oracle.problem
        eye = torch.eye(problem.d, dtype=X.dtype)
        Y = X
        for _ in range(self.local_steps):
            G = oracle.grad(Y, None, None)
            H = local_hessians(problem, Y) + self.lam * eye
            Y = Y - self.alpha * torch.linalg.solve(H, G.unsqueeze(-1)).squeeze(-1)
        return Y

    def step_size(self, problem, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        ls = self.line_search
        if ls is None:
            return torch.tensor(1.0, dtype=x.dtype)
        g = problem.global_grad(x)
        slope = g @ d
        if ls == "exact" or (ls == "auto" and _is_quadratic(problem)):
            curv = d @ (problem.A_bar @ d)
            if curv <= 0:
                return torch.tensor(0.0, dtype=x.dtype)
            return torch.clamp(-slope / curv, min=0.0)
        # Armijo backtracking
        if slope >= 0:
            return torch.tensor(0.0, dtype=x.dtype)
        f0 = problem.global_loss(x)
        gamma = 1.0
        for _ in range(self.armijo_max):
            if problem.global_loss(x + gamma * d) <= f0 + self.armijo_c * gamma * slope:
                return torch.tensor(gamma, dtype=x.dtype)
            gamma *= self.armijo_shrink
        return torch.tensor(0.0, dtype=x.dtype)

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        X = comm.broadcast(state["x"], problem.n)
        Y = self.local_newton(X, oracle)
        d = comm.mean(Y - X, problem.weights)
        gamma = self.step_size(problem, state["x"], d)
        new = dict(state)
        new["x"] = state["x"] + gamma * d
        new["gamma"] = gamma
        new["round"] = state["round"] + 1
        return new
