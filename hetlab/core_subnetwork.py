r"""Training a core subnetwork that can be split off: the alternating scheme and its exact analysis.

Mohtashami, Jaggi and Stich (arXiv 2106.08895, AISTATS 2022) train a network so that a predefined
*core* subnetwork can be split off from it, by switching between steps that optimise only the core
(the rest of the network masked out) and steps that optimise the full network. This module holds
hetlab's analytic reading of that scheme (the schedule with ``p`` core steps and ``q`` full steps
per cycle is our parametrisation) and a small-network illustration.

**Analytic setting.** A quadratic :math:`f(x)=\tfrac12x^\top Hx-b^\top x` on :math:`\mathbb R^d`,
:math:`H\succ0`, and a *core subspace* :math:`\mathcal C=\operatorname{range}(E)`, where
:math:`E\in\mathbb R^{d\times k}` has orthonormal columns and :math:`P=EE^\top` is the orthogonal
projection onto it. The core model with coordinates :math:`u\in\mathbb R^k` is :math:`Eu`, i.e. the
full model with the rest set to zero, and its loss is

.. math::  f_{\rm core}(u)=f(Eu)=\tfrac12u^\top(E^\top HE)u-(E^\top b)^\top u .

* block core (:func:`block_core`): :math:`E` = the first ``k`` coordinates, so
  :math:`x=(x_{\rm core},x_{\rm rest})` and :math:`f_{\rm core}(x_{\rm core})=f(x_{\rm core},0)`;
* low-rank core of a linear model (:func:`low_rank_core`, :func:`linear_model_problem`): the
  weight matrices :math:`W=U_0CV_0^\top` with fixed orthonormal :math:`U_0,V_0` of rank ``r``;
  in column-major ``vec`` coordinates :math:`E=V_0\otimes U_0`.

**The alternating scheme** (:class:`AlternatingCoreTraining`). A *core step* evaluates the
gradient of the masked (core) model and moves the core only,
:math:`x\leftarrow x-\eta_cP\nabla f(Px)`, which leaves :math:`(I-P)x` unchanged; a *full step* is
plain GD, :math:`x\leftarrow x-\eta\nabla f(x)`. One cycle is ``p`` core steps followed by ``q``
full steps. Both steps are affine,

.. math::  C(x)=(I-\eta_cPHP)x+\eta_cPb,\qquad F(x)=(I-\eta H)x+\eta b,

so one cycle is the affine map :math:`T=F^q\circ C^p` with linear part
:math:`M=(I-\eta H)^q(I-\eta_cPHP)^p` (:func:`cycle_affine_map`, built from the matrices, independent
of the gradient implementation). Its spectral radius is the exact per-cycle rate and
:math:`\bar z=(I-M)^{-1}c` the limit of the cycle-boundary iterates.

**Facts used by check G2** (derived for hetlab, verified numerically):

1. for :math:`\eta,\eta_c\le1/L` both factors are symmetric positive semi-definite, so the
   eigenvalues of :math:`M` are real and in :math:`[0,1)`, and :math:`\rho(M)\le\rho(I-\eta H)^q`;
2. as :math:`\eta,\eta_c\to0` with a fixed ratio, :math:`\bar z` tends (at rate :math:`O(\eta)`)
   to the minimiser of the *joint objective*
   :math:`J_\lambda(x)=(1-\lambda)f(Px)+\lambda f(x)`, :math:`\lambda=q\eta/(p\eta_c+q\eta)`
   (:meth:`CoreQuadratic.joint_minimizer`), and
   :math:`\rho(M)=1-\lambda_{\min}(p\eta_cPHP+q\eta H)+O(\eta^2)` (:func:`first_order_rate`);
3. along :math:`\lambda\in(0,1]` the core loss of the joint minimiser increases from
   :math:`f_{\rm core}^\star` and the full loss decreases to :math:`f^\star` (a scalarisation
   trade-off): at convergence the split-off core is *never* better than the core trained alone in
   this convex setting, and better than the core part of the full model trained alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CoreQuadratic", "block_core", "low_rank_core", "vec", "unvec", "random_core_quadratic",
           "linear_model_problem", "AlternatingCoreTraining", "cycle_affine_map", "cycle_rate",
           "cycle_fixed_point", "first_order_rate", "joint_lambda",
           "LowRankCoreMLP", "schedule_masks", "train_lowrank_core_mlp"]


# ----------------------------------------------------------------------------------- the core

def block_core(d: int, k: int) -> np.ndarray:
    """``E = [I_k; 0]`` (``d x k``): the core is the first ``k`` coordinates, the rest is set to zero."""
    d, k = int(d), int(k)
    if not 1 <= k < d:
        raise ValueError(f"a block core needs 1 <= k < d (a proper, non-empty core), got k = {k}, d = {d}")
    return np.eye(d)[:, :k].copy()


def vec(W) -> np.ndarray:
    """Column-major vectorisation of a matrix (``vec(A X B) = (B^T kron A) vec(X)``)."""
    return np.asarray(W, dtype=np.float64).reshape(-1, order="F")


def unvec(w, shape) -> np.ndarray:
    """Inverse of :func:`vec`."""
    return np.asarray(w, dtype=np.float64).reshape(shape, order="F")


def _orthonormal_columns(A, name: str) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] < 1 or A.shape[1] > A.shape[0]:
        raise ValueError(f"{name} must be a tall matrix [m, r] with 1 <= r <= m, got shape {A.shape}")
    err = np.abs(A.T @ A - np.eye(A.shape[1])).max()
    if err > 1e-10:
        raise ValueError(f"{name} must have orthonormal columns (max |{name}^T {name} - I| = {err:.3g}); "
                         "orthonormalise it with numpy.linalg.qr")
    return A


def low_rank_core(U0, V0) -> np.ndarray:
    r"""Basis of the low-rank core :math:`\{W=U_0CV_0^\top\}` of ``[m, n]`` weight matrices in
    column-major ``vec`` coordinates: :math:`E=V_0\otimes U_0` (``mn x r_U r_V``, orthonormal columns).
    ``U0 [m, r]`` and ``V0 [n, r']`` must have orthonormal columns."""
    U0 = _orthonormal_columns(U0, "U0")
    V0 = _orthonormal_columns(V0, "V0")
    return np.kron(V0, U0)


@dataclass
class CoreQuadratic:
    r"""The quadratic :math:`f(x)=\frac12x^\top Hx-b^\top x` with core subspace ``range(E)``.

    ``H [d, d]`` symmetric positive definite, ``b [d]``, ``E [d, k]`` with orthonormal columns
    (:func:`block_core`, :func:`low_rank_core`). The core model of coordinates ``u`` is ``E u``.
    """

    H: np.ndarray
    b: np.ndarray
    E: np.ndarray

    def __post_init__(self):
        H = np.asarray(self.H, dtype=np.float64)
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be square [d, d], got shape {H.shape}")
        asym = np.abs(H - H.T).max()
        if asym > 1e-10 * max(1.0, np.abs(H).max()):
            raise ValueError(f"H must be symmetric (max |H - H^T| = {asym:.3g})")
        H = 0.5 * (H + H.T)
        ev = np.linalg.eigvalsh(H)
        if ev[0] <= 0:
            raise ValueError(f"H must be positive definite (smallest eigenvalue {ev[0]:.3g}): the full model "
                             "needs a unique minimiser; add a ridge term")
        d = H.shape[0]
        b = np.asarray(self.b, dtype=np.float64)
        if b.shape != (d,):
            raise ValueError(f"b must have shape [{d}], got {b.shape}")
        E = _orthonormal_columns(self.E, "E")
        if E.shape[0] != d or E.shape[1] >= d:
            raise ValueError(f"E must be [d, k] with k < d = {d} (a proper core), got shape {E.shape}")
        self.H, self.b, self.E = H, b, E
        self._ev = ev

    # sizes and projections
    @property
    def d(self) -> int:
        return self.H.shape[0]

    @property
    def k(self) -> int:
        return self.E.shape[1]

    @property
    def P(self) -> np.ndarray:
        """Orthogonal projection ``E E^T`` onto the core."""
        return self.E @ self.E.T

    @property
    def L(self) -> float:
        """Smoothness of ``f``: ``lambda_max(H)`` (also bounds the core Hessian)."""
        return float(self._ev[-1])

    @property
    def mu(self) -> float:
        return float(self._ev[0])

    @property
    def H_core(self) -> np.ndarray:
        """Hessian ``E^T H E`` of the core loss."""
        return self.E.T @ self.H @ self.E

    @property
    def b_core(self) -> np.ndarray:
        return self.E.T @ self.b

    # losses and gradients (implementation side: these are what the scheme calls)
    def f(self, x) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(0.5 * x @ self.H @ x - self.b @ x)

    def grad(self, x) -> np.ndarray:
        return self.H @ np.asarray(x, dtype=np.float64) - self.b

    def split(self, x) -> np.ndarray:
        """Core coordinates ``u = E^T x`` of a full model (the part that is split off)."""
        return self.E.T @ np.asarray(x, dtype=np.float64)

    def embed(self, u) -> np.ndarray:
        """The full model ``E u`` whose rest is zero."""
        return self.E @ np.asarray(u, dtype=np.float64)

    def f_core(self, u) -> float:
        """Core loss ``f(E u)``."""
        return self.f(self.embed(u))

    def f_split(self, x) -> float:
        """Loss of the core split off from the full model ``x``: ``f(P x)``."""
        return self.f_core(self.split(x))

    # closed forms
    @property
    def x_star(self) -> np.ndarray:
        return np.linalg.solve(self.H, self.b)

    @property
    def f_star(self) -> float:
        return self.f(self.x_star)

    @property
    def u_core_star(self) -> np.ndarray:
        """Minimiser ``(E^T H E)^{-1} E^T b`` of the core loss (the core trained alone)."""
        return np.linalg.solve(self.H_core, self.b_core)

    @property
    def f_core_star(self) -> float:
        return self.f_core(self.u_core_star)

    def joint_minimizer(self, lam: float) -> np.ndarray:
        r"""Minimiser of :math:`J_\lambda(x)=(1-\lambda)f(Px)+\lambda f(x)`, :math:`0<\lambda\le1`:
        the solution of :math:`((1-\lambda)PHP+\lambda H)x=((1-\lambda)P+\lambda I)b`."""
        lam = float(lam)
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"lam must lie in (0, 1] (lam = 0 leaves the rest undetermined), got {lam}")
        P = self.P
        A = (1 - lam) * P @ self.H @ P + lam * self.H
        return np.linalg.solve(A, (1 - lam) * P @ self.b + lam * self.b)


def random_core_quadratic(d: int, k: int, *, seed: int, spectrum=(0.2, 2.0)) -> CoreQuadratic:
    """A random block quadratic: ``H = Q diag(geomspace(spectrum)) Q^T`` with a Haar-random ``Q`` (so the
    core and the rest are coupled), ``b ~ N(0, I)``, block core of the first ``k`` coordinates."""
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    Q = Q * np.sign(np.diag(R))
    H = Q @ np.diag(np.geomspace(spectrum[0], spectrum[1], d)) @ Q.T
    return CoreQuadratic(H, rng.standard_normal(d), block_core(d, k))


def linear_model_problem(X, Y, U0, V0, reg: float = 0.0) -> CoreQuadratic:
    r"""Least squares of a linear model ``Y ~ X W`` (``X [N, m]``, ``Y [N, n]``, ``W [m, n]``),
    :math:`f(W)=\frac1{2N}\|XW-Y\|_F^2+\frac{reg}2\|W\|_F^2`, with the low-rank core
    :math:`W=U_0CV_0^\top`. In ``vec`` coordinates :math:`H=I_n\otimes X^\top X/N+reg\,I`,
    :math:`b=\mathrm{vec}(X^\top Y/N)`."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X [N, m] and Y [N, n] must share N, got {X.shape} and {Y.shape}")
    N, m = X.shape
    n = Y.shape[1]
    H = np.kron(np.eye(n), X.T @ X / N) + reg * np.eye(m * n)
    return CoreQuadratic(H, vec(X.T @ Y / N), low_rank_core(U0, V0))


# ----------------------------------------------------------------------------------- the scheme

def _check_lr(lr, name):
    lr = float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{name} must be a positive finite step size, got {lr}")
    return lr


def _check_steps(p, q):
    p, q = int(p), int(q)
    if p < 0 or q < 0 or p + q == 0:
        raise ValueError(f"core_steps and full_steps must be non-negative and not both zero, got {p}, {q}")
    return p, q


def joint_lambda(lr: float, core_steps: int, full_steps: int, lr_core: float | None = None) -> float:
    r""":math:`\lambda=q\eta/(p\eta_c+q\eta)`: the weight of the full loss in the small-step limit."""
    lr_core = lr if lr_core is None else lr_core
    return full_steps * lr / (core_steps * lr_core + full_steps * lr)


class AlternatingCoreTraining:
    r"""``core_steps`` (p) core steps :math:`x\leftarrow x-\eta_cP\nabla f(Px)` followed by
    ``full_steps`` (q) full steps :math:`x\leftarrow x-\eta\nabla f(x)`, repeated.

    Works on any problem with ``grad(x)``, ``P`` (e.g. :class:`CoreQuadratic`); ``p = 0`` is plain
    GD on the full model, ``q = 0`` trains the core alone inside the full model.
    """

    def __init__(self, lr: float, core_steps: int = 1, full_steps: int = 1, lr_core: float | None = None):
        self.lr = _check_lr(lr, "lr")
        self.lr_core = self.lr if lr_core is None else _check_lr(lr_core, "lr_core")
        self.p, self.q = _check_steps(core_steps, full_steps)

    @property
    def lam(self) -> float:
        return joint_lambda(self.lr, self.p, self.q, self.lr_core)

    def core_step(self, problem, x) -> np.ndarray:
        """Gradient of the masked (core) model, applied to the core only."""
        E = problem.E
        u = E.T @ x
        return x - self.lr_core * (E @ (E.T @ problem.grad(E @ u)))

    def full_step(self, problem, x) -> np.ndarray:
        return x - self.lr * problem.grad(x)

    def cycle(self, problem, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        for _ in range(self.p):
            x = self.core_step(problem, x)
        for _ in range(self.q):
            x = self.full_step(problem, x)
        return x

    def run(self, problem, x0, cycles: int) -> np.ndarray:
        """Cycle-boundary iterates ``[cycles + 1, d]`` (row 0 is ``x0``)."""
        out = [np.asarray(x0, dtype=np.float64).copy()]
        for t in range(int(cycles)):
            out.append(self.cycle(problem, out[-1]))
            if not np.all(np.abs(out[-1]) < 1e150):
                raise FloatingPointError(f"the alternating scheme diverged in cycle {t + 1}: use step sizes "
                                         "below 2/L")
        return np.array(out)


def cycle_affine_map(problem: CoreQuadratic, lr: float, core_steps: int, full_steps: int,
                     lr_core: float | None = None, order: str = "core_first"):
    r"""``(M, c)`` of one cycle from the matrices alone: :math:`T=F^q\circ C^p` (``order="core_first"``,
    the scheme) or :math:`C^p\circ F^q` (``"full_first"``). Same spectrum, different fixed points."""
    lr = _check_lr(lr, "lr")
    lr_core = lr if lr_core is None else _check_lr(lr_core, "lr_core")
    p, q = _check_steps(core_steps, full_steps)
    if order not in ("core_first", "full_first"):
        raise ValueError(f"order must be 'core_first' or 'full_first', got {order!r}")
    d, P, H, b = problem.d, problem.P, problem.H, problem.b
    MC, cC = np.eye(d) - lr_core * P @ H @ P, lr_core * P @ b
    MF, cF = np.eye(d) - lr * H, lr * b
    phases = [(MC, cC, p), (MF, cF, q)]
    if order == "full_first":
        phases = phases[::-1]
    M, c = np.eye(d), np.zeros(d)
    for A, a, reps in phases:
        for _ in range(reps):
            M, c = A @ M, A @ c + a
    return M, c


def cycle_rate(problem: CoreQuadratic, lr, core_steps, full_steps, lr_core=None) -> float:
    """Exact per-cycle contraction ``rho(M)`` of the alternating scheme."""
    from .exact import spectral_radius
    return spectral_radius(cycle_affine_map(problem, lr, core_steps, full_steps, lr_core)[0])


def cycle_fixed_point(problem: CoreQuadratic, lr, core_steps, full_steps, lr_core=None,
                      order: str = "core_first") -> np.ndarray:
    """Limit of the cycle-boundary iterates (``(I - M)^{-1} c``); raises if the cycle does not contract."""
    from .exact import affine_fixed_point, spectral_radius
    M, c = cycle_affine_map(problem, lr, core_steps, full_steps, lr_core, order)
    rho = spectral_radius(M)
    if rho >= 1:
        raise ValueError(f"the cycle map does not contract (spectral radius {rho:.6g} >= 1): "
                         "reduce the step sizes or use full_steps >= 1")
    return affine_fixed_point(M, c)


def first_order_rate(problem: CoreQuadratic, lr, core_steps, full_steps, lr_core=None) -> float:
    r"""First-order prediction :math:`1-\lambda_{\min}(p\eta_cPHP+q\eta H)` of the per-cycle rate."""
    lr_core = lr if lr_core is None else lr_core
    P, H = problem.P, problem.H
    A = core_steps * lr_core * P @ H @ P + full_steps * lr * H
    return float(1.0 - np.linalg.eigvalsh(0.5 * (A + A.T))[0])


# ------------------------------------------------------------------- a network with a low-rank core

class LowRankCoreMLP:
    r"""Stacked one-hidden-layer ReLU networks (``runs`` independent copies, one per row) whose first
    layer is :math:`W_1=UV^\top+mS`: the *core* network uses the rank-``rank`` weight :math:`UV^\top`
    (:math:`m=0`, the full-rank part :math:`S` masked out); the *full* network adds :math:`S` (:math:`m=1`).
    Core parameters: ``U, V, b1, W2, b2``; the rest: ``S``.

    Initialisation per run from its own seed: ``U ~ N(0, 1/d_in)``, ``V ~ N(0, 1/rank)`` (so that
    :math:`UV^\top` has entries of variance :math:`1/d_{in}`), ``S ~ N(0, 1/d_in)``,
    ``W2 ~ N(0, 1/width)``, zero biases.
    """

    names = ("U", "V", "S", "b1", "W2", "b2")

    def __init__(self, seeds, d_in: int, width: int, classes: int, rank: int, dtype=torch.float64):
        if not 1 <= rank < min(d_in, width):
            raise ValueError(f"rank must satisfy 1 <= rank < min(d_in, width) = {min(d_in, width)}, got {rank}")
        self.d_in, self.width, self.classes, self.rank, self.dtype = d_in, width, classes, rank, dtype
        shapes = {"U": (d_in, rank), "V": (width, rank), "S": (d_in, width), "b1": (width,),
                  "W2": (width, classes), "b2": (classes,)}
        scales = {"U": d_in ** -0.5, "V": rank ** -0.5, "S": d_in ** -0.5, "b1": 0.0,
                  "W2": width ** -0.5, "b2": 0.0}
        params = {k: [] for k in self.names}
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            for k in self.names:
                params[k].append(scales[k] * torch.randn(shapes[k], generator=g, dtype=dtype))
        self.params = {k: torch.stack(v) for k, v in params.items()}

    @property
    def runs(self) -> int:
        return self.params["U"].shape[0]

    def logits(self, X, mask, params=None) -> torch.Tensor:
        """Logits ``[runs, N, classes]``; ``mask [runs]`` is 1 for the full network, 0 for the core."""
        return self._forward(X, mask, self.params if params is None else params)[2]

    def _forward(self, X, mask, p):
        W1 = torch.baddbmm(mask.to(self.dtype)[:, None, None] * p["S"], p["U"], p["V"].transpose(1, 2))
        A = torch.matmul(X, W1) + p["b1"][:, None, :]
        h = torch.relu(A)
        return A, h, torch.baddbmm(p["b2"][:, None, :], h, p["W2"])

    def losses(self, X, y, mask, params=None) -> torch.Tensor:
        """Mean cross-entropy per run ``[runs]``."""
        z = self.logits(X, mask, params)
        return (torch.logsumexp(z, -1) - z.gather(-1, y.expand(z.shape[0], -1)[..., None])[..., 0]).mean(1)

    def accuracy(self, X, y, mask) -> torch.Tensor:
        with torch.no_grad():
            return (self.logits(X, mask).argmax(-1) == y).to(self.dtype).mean(1)

    def grads(self, X, y, mask) -> dict:
        r"""Gradients of :meth:`losses` by explicit back-propagation (checked against autograd in the tests):
        :math:`G=(\mathrm{softmax}(Z)-Y)/N`, :math:`\nabla W_2=h^\top G`, :math:`\delta=(GW_2^\top)\odot[A>0]`,
        :math:`\nabla W_1=X^\top\delta`, :math:`\nabla U=\nabla W_1V`, :math:`\nabla V=\nabla W_1^\top U`,
        :math:`\nabla S=m\,\nabla W_1`. In the core network (:math:`m=0`) ``S`` does not enter the loss and its
        gradient is exactly zero: a core step moves the core only."""
        p = self.params
        mask = mask.to(self.dtype)
        with torch.no_grad():
            A, h, z = self._forward(X, mask, p)
            onehot = torch.nn.functional.one_hot(y, z.shape[-1]).to(self.dtype)
            G = (torch.softmax(z, -1) - onehot) / len(y)
            delta = (G @ p["W2"].transpose(1, 2)) * (A > 0)
            dW1 = torch.matmul(X.T, delta)
            return {"U": dW1 @ p["V"], "V": dW1.transpose(1, 2) @ p["U"], "S": mask[:, None, None] * dW1,
                    "b1": delta.sum(1), "W2": h.transpose(1, 2) @ G, "b2": G.sum(1)}

    def step(self, X, y, mask, lr: float) -> None:
        """One GD step of every run on its own loss (the core loss where ``mask == 0``)."""
        g = self.grads(X, y, mask)
        self.params = {k: self.params[k] - lr * g[k] for k in self.names}


def schedule_masks(schedule, steps: int) -> np.ndarray:
    """Mask per step (1 full, 0 core) of a schedule: ``"core"`` (core alone), ``"full"`` (full model alone)
    or a pair ``(p, q)``: ``p`` core steps, then ``q`` full steps, repeated."""
    if schedule == "core":
        return np.zeros(steps)
    if schedule == "full":
        return np.ones(steps)
    p, q = _check_steps(*schedule)
    return (np.arange(steps) % (p + q) >= p).astype(float)


def train_lowrank_core_mlp(X, y, X_test, y_test, schedules, seeds, steps: int, lr: float, *, width: int = 32,
                           rank: int = 4, eval_every: int = 50, dtype=torch.float64) -> dict:
    """Full-batch GD of :class:`LowRankCoreMLP` under several schedules, all runs stacked.

    Run ``(schedule, seed)`` starts from the initialisation of ``seed`` (the same for every schedule).
    Returns ``{"steps": [E], schedule_name: {metric: array [len(seeds), E]}}`` with the metrics
    ``core_loss``, ``core_acc``, ``full_loss``, ``full_acc`` (train loss, test accuracy) evaluated every
    ``eval_every`` steps (and at step 0).
    """
    X, X_test = (torch.as_tensor(a, dtype=dtype) for a in (X, X_test))
    y, y_test = (torch.as_tensor(a, dtype=torch.long) for a in (y, y_test))
    seeds = list(seeds)
    S = len(seeds)
    names = [s if isinstance(s, str) else f"alternate {s[0]}:{s[1]}" for s in schedules]
    net = LowRankCoreMLP(seeds * len(schedules), X.shape[1], width, int(y.max()) + 1, rank, dtype)
    masks = torch.as_tensor(np.repeat(np.stack([schedule_masks(s, steps) for s in schedules]), S, axis=0))
    zero, one = torch.zeros(net.runs), torch.ones(net.runs)
    recs = {n: {m: [] for m in ("core_loss", "core_acc", "full_loss", "full_acc")} for n in names}
    evals = []

    def record(t):
        evals.append(t)
        with torch.no_grad():
            vals = {"core_loss": net.losses(X, y, zero), "full_loss": net.losses(X, y, one),
                    "core_acc": net.accuracy(X_test, y_test, zero), "full_acc": net.accuracy(X_test, y_test, one)}
        for j, n in enumerate(names):
            for m, v in vals.items():
                recs[n][m].append(v[j * S:(j + 1) * S].numpy().copy())

    record(0)
    for t in range(steps):
        net.step(X, y, masks[:, t], lr)
        if (t + 1) % eval_every == 0:
            record(t + 1)
    out = {"steps": np.array(evals)}
    for n in names:
        out[n] = {m: np.stack(v, axis=1) for m, v in recs[n].items()}
    return out
