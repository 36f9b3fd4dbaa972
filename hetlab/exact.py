r"""Generic verification machinery (THEORY.md §0.1, M1–M6).

* **M1** :func:`affine_map`, :func:`affine_fixed_point`, :func:`affine_fixed_points`,
  :func:`spectral_radius`, :func:`restricted_spectral_radius`, :func:`method_affine_map`,
  :func:`slowest_mode_rate` – the exact affine map :math:`z^+=Mz+c` of any deterministic step on a
  quadratic, built by probing: :math:`c=\text{step}(0)`, :math:`Me_k=\text{step}(e_k)-c`.
* **M2** :func:`stationary_moments` – mean and covariance of :math:`z^+=Mz+c+N\xi` via the discrete
  Lyapunov equation :math:`C=MCM^\top+N\Sigma N^\top`.
* **M3** :func:`quadratic_flow`, :func:`flow_residuals`, :func:`modified_flow_residual_slope` –
  backward-error checks against the exact gradient flow of a quadratic modified loss.
* **M4** :func:`fit_slope`, :func:`asymptotic_window`, :func:`empirical_rate` – log–log slopes on
  at least 4 points over at least one decade, rates only inside the asymptotic window.
* **M5** :func:`mc_interval`, :func:`mc_agrees` – Monte Carlo mean ± 3 standard errors.
* **M6** :func:`must_differ` – the biased method A against the fix B.

Everything here runs in float64 NumPy/SciPy (the iterates may come from torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import torch

# ---------------------------------------------------------------------------------------- M1


def affine_map(step: Callable[[np.ndarray], np.ndarray], dim: int, *, check: bool = True,
               atol: float = 1e-9):
    r"""Return ``(M, c)`` with ``step(z) = M z + c`` for an affine ``step`` on :math:`\mathbb R^{dim}`.

    Probes ``step`` at ``0`` and at the unit vectors (``dim + 1`` calls). With ``check`` it also
    verifies affinity at a random point and raises ``ValueError`` if ``step`` is not affine (e.g.
    a stochastic oracle or partial participation was left on).
    """
    z0 = np.zeros(dim)
    c = np.asarray(step(z0), dtype=np.float64).copy()
    if c.shape != (dim,):
        raise ValueError(f"step must map R^{dim} to R^{dim}, got output shape {c.shape}")
    M = np.empty((dim, dim))
    for k in range(dim):
        e = np.zeros(dim)
        e[k] = 1.0
        M[:, k] = np.asarray(step(e), dtype=np.float64) - c
    if check:
        z = np.random.default_rng(12345).standard_normal(dim)
        err = np.abs(np.asarray(step(z)) - (M @ z + c)).max()
        scale = 1.0 + np.abs(M @ z + c).max()
        if err > atol * scale:
            raise ValueError(f"step is not affine (deviation {err:.3g} at a random point): use exact "
                             "gradients, full participation and a quadratic problem")
    return M, c


def spectral_radius(M: np.ndarray) -> float:
    """Largest absolute eigenvalue of ``M``."""
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def affine_fixed_point(M: np.ndarray, c: np.ndarray) -> np.ndarray:
    r"""Fixed point :math:`z^\star=(I-M)^{-1}c` (a linear solve, never an inverse)."""
    return np.linalg.solve(np.eye(M.shape[0]) - M, c)


def affine_fixed_points(M: np.ndarray, c: np.ndarray, C: np.ndarray | None = None, tol: float = 1e-10):
    r"""*Every* fixed point of :math:`z\mapsto Mz+c`, optionally inside the subspace :math:`\{Cz=0\}`.

    Methods with a conserved quantity (SCAFFOLD keeps :math:`c-\sum_iq_ic_i`) have an eigenvalue 1,
    so :math:`I-M` is singular and the fixed points form an affine set. Returns ``(z, N)``: a
    particular fixed point and an orthonormal basis ``N`` of the directions along which fixed points
    may move (empty when the fixed point is unique). Raises ``ValueError`` when there is none.
    """
    A = np.eye(M.shape[0]) - M
    rhs = np.asarray(c, dtype=np.float64)
    if C is not None:
        A = np.vstack([A, C])
        rhs = np.concatenate([rhs, np.zeros(C.shape[0])])
    z, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    resid = float(np.linalg.norm(A @ z - rhs))
    if resid > tol * (1.0 + float(np.linalg.norm(rhs))):
        raise ValueError(f"the affine map has no fixed point (least-squares residual {resid:.3g})")
    return z, scipy.linalg.null_space(A, rcond=tol)


def restricted_spectral_radius(M: np.ndarray, C: np.ndarray, tol: float = 1e-10) -> float:
    r"""Spectral radius of :math:`M` on the invariant subspace :math:`\{Cz=0\}` (e.g. SCAFFOLD's
    invariant manifold, where the conserved eigenvalue 1 is excluded). Raises ``ValueError`` if the
    subspace is not invariant under ``M``."""
    B = scipy.linalg.null_space(C)
    MS = B.T @ M @ B
    dev = float(np.linalg.norm(M @ B - B @ MS))
    if dev > tol * (1.0 + float(np.linalg.norm(M))):
        raise ValueError(f"the subspace Cz = 0 is not invariant under M (deviation {dev:.3g})")
    return spectral_radius(MS)


def flatten_state(state: dict):
    """Flatten the floating tensors of a method state into one float64 vector.

    Returns ``(vector, unflatten)`` where ``unflatten(v)`` rebuilds a state dict (non-floating
    entries, e.g. counters, are carried over unchanged).
    """
    keys = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    shapes = [state[k].shape for k in keys]
    sizes = [int(np.prod(s)) for s in shapes]
    vec = np.concatenate([state[k].detach().reshape(-1).double().numpy() for k in keys]) if keys else np.zeros(0)

    def unflatten(v):
        out = dict(state)
        off = 0
        for k, s, m in zip(keys, shapes, sizes):
            out[k] = torch.as_tensor(v[off:off + m], dtype=state[k].dtype).reshape(s).clone()
            off += m
        return out

    return vec, unflatten


def method_affine_map(method, problem, comm=None, x0=None):
    """``(M, c, unflatten)`` of one round of ``method`` on ``problem`` with exact gradients.

    The state layout is taken from ``method.init(x0, problem)``; the map acts on the flattened
    state (see :func:`flatten_state`). Use ``unflatten(affine_fixed_point(M, c))`` to read the
    fixed point as a state dict.
    """
    from .comm import SimulatedComm
    from .problems.oracles import Oracle

    comm = comm or SimulatedComm(problem.n)
    x0 = torch.zeros(problem.d, dtype=problem.dtype) if x0 is None else x0
    template = method.init(x0, problem)
    vec, unflatten = flatten_state(template)
    oracle = Oracle(problem)

    def step(z):
        new = method.step(unflatten(z), oracle, comm, None)
        # flatten in the template's key order: a method may return its keys in another order
        return flatten_state({k: new[k] for k in template})[0]

    M, c = affine_map(step, vec.size)
    return M, c, unflatten

def slowest_mode_rate(method, problem, M: np.ndarray, z_star: np.ndarray, unflatten, C: np.ndarray | None = None,
                      rounds: int = 40, eps: float = 1e-2, lo: float = 1e-12) -> float:
    r"""Measure the implementation's per-round contraction along the slowest mode of ``M``.

    From :math:`x^0=0` the error may reach round-off before the slowest mode dominates when the
    leading eigenvalues cluster, so the ratio window of M4 would still be pre-asymptotic. Starting at
    :math:`z^\star+\varepsilon v` with :math:`v` the (real part of the) eigenvector of the largest
    eigenvalue in modulus (within :math:`\{Cz=0\}` if ``C`` is given), every round is asymptotic: the
    returned median error ratio equals :math:`\rho(M)` iff the implementation contracts that mode as predicted.
    """
    from .comm import SimulatedComm
    from .problems.oracles import Oracle

    if C is not None:
        B = scipy.linalg.null_space(C)
        ev, W = np.linalg.eig(B.T @ M @ B)
        v = np.real(B @ W[:, int(np.argmax(np.abs(ev)))])
    else:
        ev, W = np.linalg.eig(M)
        v = np.real(W[:, int(np.argmax(np.abs(ev)))])
    state = unflatten(z_star + eps * v / np.linalg.norm(v))
    comm, oracle = SimulatedComm(problem.n), Oracle(problem)
    errs = [eps]
    for _ in range(rounds):
        state = method.step(state, oracle, comm, None)
        errs.append(float(np.linalg.norm(flatten_state(state)[0] - z_star)))
    return empirical_rate(errs, lo, 10 * eps)


# ---------------------------------------------------------------------------------------- M2


def stationary_moments(M: np.ndarray, c: np.ndarray, N: np.ndarray | None = None,
                       Sigma: np.ndarray | None = None):
    r"""Stationary mean and covariance of :math:`z^+=Mz+c+N\xi`, :math:`\xi\sim(0,\Sigma)` i.i.d.

    Returns ``(m, C)`` with :math:`m=(I-M)^{-1}c` and :math:`C=MCM^\top+N\Sigma N^\top`
    (``scipy.linalg.solve_discrete_lyapunov``). Raises ``ValueError`` when :math:`\rho(M)\ge1`
    (no stationary distribution). ``N`` defaults to the identity.
    """
    rho = spectral_radius(M)
    if rho >= 1.0:
        raise ValueError(f"the iteration is not stable (spectral radius {rho:.6g} >= 1): no stationary moments")
    m = affine_fixed_point(M, c)
    if Sigma is None:
        return m, np.zeros_like(M)
    N = np.eye(M.shape[0]) if N is None else N
    Q = N @ Sigma @ N.T
    C = scipy.linalg.solve_discrete_lyapunov(M, 0.5 * (Q + Q.T))
    return m, 0.5 * (C + C.T)

# ---------------------------------------------------------------------------------------- M3


def quadratic_flow(H: np.ndarray, c: np.ndarray, x0: np.ndarray, T: float) -> np.ndarray:
    r"""Exact gradient flow of :math:`F(x)=\frac12x^\top Hx-c^\top x` at time ``T``:
    :math:`x(T)=x_F^\star+e^{-TH}(x_0-x_F^\star)`, :math:`x_F^\star=H^{-1}c`."""
    xs = np.linalg.solve(H, c)
    return xs + scipy.linalg.expm(-T * H) @ (np.asarray(x0) - xs)


def flow_residuals(round_map: Callable[[float, np.ndarray], np.ndarray],
                   modified: Callable[[float], tuple], x0: np.ndarray, etas: Sequence[float],
                   time: Callable[[float], float]) -> np.ndarray:
    r"""Residuals :math:`r(\eta)=\|\text{round}_\eta(x_0)-x_F(T(\eta))\|` for each ``eta``.

    ``round_map(eta, x0)`` is the algorithm's one-round map; ``modified(eta)`` returns ``(H, c)``
    of the quadratic modified loss; ``time(eta)`` the flow time of one round.
    """
    out = []
    for eta in etas:
        H, c = modified(eta)
        out.append(np.linalg.norm(round_map(eta, x0) - quadratic_flow(H, c, x0, time(eta))))
    return np.asarray(out)


def modified_flow_residual_slope(round_map, modified, x0, etas, time) -> tuple[float, np.ndarray]:
    """Slope of ``log r(eta)`` against ``log eta`` (see :func:`flow_residuals`): 2 for the plain flow,
    3 for the correct modified flow. Returns ``(slope, residuals)``."""
    r = flow_residuals(round_map, modified, x0, etas, time)
    return fit_slope(etas, r).slope, r

# ---------------------------------------------------------------------------------------- M4


@dataclass
class SlopeFit:
    slope: float
    intercept: float
    x: np.ndarray
    y: np.ndarray

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x) ** self.slope


def fit_slope(x, y, *, min_points: int = 4, min_decades: float = 1.0, loglog: bool = True) -> SlopeFit:
    """Least-squares slope of ``log y`` against ``log x`` (``loglog``) or of ``log y`` against ``x``.

    Enforces M4: at least ``min_points`` points spread over at least ``min_decades`` decades
    (for a log–log fit); non-positive or non-finite ``y`` is an error, not a silent drop.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    if len(x) < min_points:
        raise ValueError(f"a slope fit needs at least {min_points} points, got {len(x)}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("slope fit: y must be finite and positive (log scale)")
    if loglog:
        if np.any(x <= 0):
            raise ValueError("slope fit: x must be positive for a log-log fit")
        span = np.log10(x.max() / x.min())
        if span < min_decades - 1e-9:
            raise ValueError(f"slope fit: x spans {span:.2f} decades, need at least {min_decades}")
        lx = np.log(x)
    else:
        lx = x
    s, b = np.polyfit(lx, np.log(y), 1)
    return SlopeFit(float(s), float(b), x, y)


def asymptotic_window(errors, lo: float = 1e-10, hi: float = 1e-2) -> np.ndarray:
    """Indices ``r`` whose error lies in ``[lo, hi]`` (the asymptotic window of a linear rate fit,
    excluding the transient above ``hi`` and round-off below ``lo``)."""
    e = np.asarray(errors, dtype=np.float64)
    return np.nonzero((e >= lo) & (e <= hi))[0]


def empirical_rate(errors, lo: float = 1e-10, hi: float = 1e-2) -> float:
    r"""Median of successive ratios :math:`e_{r+1}/e_r` over rounds with both errors in ``[lo, hi]``."""
    e = np.asarray(errors, dtype=np.float64)
    idx = asymptotic_window(e, lo, hi)
    idx = idx[(idx + 1 < len(e))]
    idx = idx[(e[idx + 1] >= lo) & (e[idx + 1] <= hi)]
    if len(idx) < 3:
        raise ValueError(f"fewer than 3 rounds have errors inside [{lo:g}, {hi:g}]: cannot fit a rate "
                         "(run longer, or start farther from the fixed point)")
    return float(np.median(e[idx + 1] / e[idx]))

# ---------------------------------------------------------------------------------------- M5


def mc_interval(samples, k: float = 3.0) -> tuple[float, float, float]:
    """Monte Carlo mean and the interval mean ± ``k`` standard errors: ``(mean, lo, hi)``."""
    s = np.asarray(samples, dtype=np.float64)
    if s.size < 2:
        raise ValueError("need at least 2 Monte Carlo samples")
    m = float(s.mean())
    se = float(s.std(ddof=1) / math.sqrt(s.size))
    return m, m - k * se, m + k * se


def mc_agrees(samples, predicted: float, rel_tol: float = 0.05, k: float = 3.0) -> bool:
    """M5: the prediction lies in mean ± k SE **and** the relative error is below ``rel_tol``."""
    m, lo, hi = mc_interval(samples, k)
    return bool(lo <= predicted <= hi and abs(m - predicted) <= rel_tol * abs(predicted))

# ---------------------------------------------------------------------------------------- M6


def must_differ(err_biased: float, err_fix: float, *, tol_fix: float = 1e-10, factor: float = 100.0,
                closed_form_bias: float | None = None, rel: float = 1e-8) -> dict:
    """M6: the fix B reaches ``tol_fix`` while the biased A stays ``factor`` times above it
    (and, if given, A's error matches its closed-form bias to ``rel``). Returns the verdict parts."""
    out = {
        "fix_ok": bool(err_fix <= tol_fix),
        "biased_stays": bool(err_biased >= factor * tol_fix),
    }
    if closed_form_bias is not None:
        out["bias_matches"] = bool(abs(err_biased - closed_form_bias) <= rel * abs(closed_form_bias))
    out["passed"] = all(out.values())
    return out
