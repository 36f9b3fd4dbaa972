r"""Closed-form predictions for the consensus distance of D-SGD (THEORY C2, C7).

Everything here is computed from the matrices alone (the mixing matrix :math:`W`, the Hessians
:math:`A_i`, the minimisers :math:`b_i`), in float64 NumPy/SciPy, independently of the algorithm
code in :mod:`hetlab.algorithms`, so that comparing the two is a real check.

Conventions (THEORY §C). Stacked iterates :math:`X\in\mathbb R^{n\times d}` (row :math:`i` is worker
:math:`i`); :math:`\operatorname{vec}(X)` is the **row-major** flattening used by
:func:`hetlab.exact.flatten_state`, so a gossip step :math:`X\mapsto WX` is :math:`W\otimes I_d`.
:math:`W` is symmetric and doubly stochastic, :math:`W=\sum_j\lambda_ju_ju_j^\top` with
:math:`\lambda_1=1`, :math:`u_1=\mathbf1/\sqrt n`. The two orderings of D-SGD:

* ``"atc"`` (gradient then gossip): :math:`X^{t+1}=W\big(X^t-\eta G(X^t)\big)`;
* ``"parallel"``: :math:`X^{t+1}=WX^t-\eta G(X^t)`.

Noise: worker :math:`i` sees :math:`g_i=\nabla f_i(x_i)+\xi_i` with :math:`\xi_i\sim\mathcal N(0,s^2I_d)`
i.i.d.; ``s2`` is the **per-coordinate** variance :math:`s^2` (so :math:`\mathbb E\|\xi_i\|^2=ds^2`,
which is the ``sigma**2`` of :class:`hetlab.problems.GaussianNoiseOracle`).

Functions
---------
* mode-by-mode (identical Hessians :math:`A_i=aI`): :func:`consensus_gains`,
  :func:`stationary_consensus_sq`, :func:`small_step_consensus_sq`, :func:`consensus_bound`,
  :func:`koloskova_bound`, :func:`noise_consensus_sq`;
* general Hessians, the linear system of (M1): :func:`dsgd_affine_map`, :func:`dsgd_noise_matrix`,
  :func:`dsgd_fixed_point`, :func:`mean_bias_from_consensus`;
* exact stationary moments (M2) and the critical consensus distance (C7): :func:`critical_consensus_sq`,
  :func:`stacked_stationary_summary`, :func:`dsgd_stationary`, :func:`csgd_stationary_excess`.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = [
    "ORDERINGS", "mixing_modes", "consensus_gains", "zeta_sq", "stationary_consensus_sq",
    "small_step_consensus_sq", "consensus_bound", "koloskova_bound", "noise_consensus_sq",
    "dsgd_affine_map", "dsgd_noise_matrix", "dsgd_fixed_point", "mean_bias_from_consensus",
    "critical_consensus_sq", "stacked_stationary_summary", "dsgd_stationary", "csgd_stationary_excess",
]

ORDERINGS = ("atc", "parallel")


def _ordering(ordering: str) -> str:
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be 'atc' (gradient then gossip) or 'parallel', got {ordering!r}")
    return ordering


def _mixing(W) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square matrix, got shape {W.shape}")
    n = W.shape[0]
    if np.abs(W.sum(0) - 1).max() > 1e-10 or np.abs(W.sum(1) - 1).max() > 1e-10:
        raise ValueError("W must be doubly stochastic")
    if np.abs(W - W.T).max() > 1e-12:
        raise ValueError("the mode-by-mode formulas need a symmetric W (use the linear-system functions "
                         "dsgd_affine_map / dsgd_fixed_point for a directed W)")
    if n < 2:
        raise ValueError("need at least two workers")
    return W


def mixing_modes(W):
    r"""Eigen-decomposition of a symmetric doubly stochastic ``W`` without the consensus mode.

    Returns ``(lam, U)``: the :math:`n-1` eigenvalues :math:`\lambda_2,\dots,\lambda_n` (all of
    modulus :math:`<1`) and the matching orthonormal eigenvectors as columns of ``U`` (``[n, n-1]``),
    every one orthogonal to :math:`\mathbf1`. Raises ``ValueError`` when ``W`` does not mix
    (eigenvalue 1 repeated, or eigenvalue -1).
    """
    W = _mixing(W)
    n = W.shape[0]
    # restrict W to the orthogonal complement of 1 (exact: W is symmetric and W1 = 1)
    Q = scipy.linalg.null_space(np.ones((1, n)))          # [n, n-1], orthonormal, Q^T 1 = 0
    lam, V = np.linalg.eigh(Q.T @ W @ Q)
    if np.abs(lam).max() >= 1 - 1e-12:
        raise ValueError(f"W does not mix: a non-consensus eigenvalue has modulus {np.abs(lam).max():.6g}")
    return lam[::-1].copy(), (Q @ V)[:, ::-1].copy()


def consensus_gains(lam, eta: float, ordering: str = "atc", curvature: float = 1.0) -> np.ndarray:
    r"""Fixed-point gain :math:`c_j` of each non-consensus mode for :math:`f_i=\frac a2\|x-b_i\|^2`:

    .. math:: c_j^{\rm ATC}=\frac{\eta a\lambda_j}{1-(1-\eta a)\lambda_j},\qquad
              c_j^{\rm par}=\frac{\eta a}{1-\lambda_j+\eta a},

    so that the fixed point's mode :math:`j` is :math:`u_j^\top X_\star=c_j\,u_j^\top B`.
    """
    lam = np.asarray(lam, dtype=np.float64)
    h = float(eta) * float(curvature)
    if _ordering(ordering) == "atc":
        return h * lam / (1.0 - (1.0 - h) * lam)
    return h / (1.0 - lam + h)


def zeta_sq(B, curvature: float = 1.0) -> float:
    r""":math:`\zeta_\star^2=\frac1n\sum_i\|a(\bar b-b_i)\|^2` for identical Hessians :math:`aI`
    (THEORY C2(i): :math:`\frac1n\|B-\mathbf1\bar b^\top\|_F^2` for :math:`a=1`)."""
    B = np.asarray(B, dtype=np.float64)
    D = B - B.mean(0)
    return float(curvature) ** 2 * float((D * D).sum()) / B.shape[0]


def _mode_weights(W, B):
    """``(lam, w)`` with ``w_j = ||u_j^T B||^2`` over the non-consensus modes."""
    lam, U = mixing_modes(W)
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != U.shape[0]:
        raise ValueError(f"B must have shape [n, d] with n = {U.shape[0]}, got {B.shape}")
    Bh = U.T @ B                                        # rows: \hat B_j, j >= 2
    return lam, (Bh * Bh).sum(1)


def stationary_consensus_sq(W, B, eta: float, ordering: str = "atc", curvature: float = 1.0) -> float:
    r"""Exact :math:`\Xi_\star^2=\frac1n\sum_{j\ge2}c_j^2\|\hat B_j\|^2` of deterministic D-SGD on
    :math:`f_i=\frac a2\|x-b_i\|^2` (THEORY C2(i); :math:`\hat B_j=u_j^\top B`)."""
    lam, w = _mode_weights(W, B)
    c = consensus_gains(lam, eta, ordering, curvature)
    return float((c * c * w).sum() / (len(w) + 1))


def small_step_consensus_sq(W, B, eta: float, ordering: str = "atc", curvature: float = 1.0) -> float:
    r"""Leading term for :math:`\eta a\ll1-\rho`: :math:`\eta^2a^2\frac1n\sum_{j\ge2}\big(\frac{\lambda_j}{1-\lambda_j}\big)^2\|\hat B_j\|^2`
    (ATC) or with :math:`\frac1{1-\lambda_j}` (parallel)."""
    lam, w = _mode_weights(W, B)
    g = lam / (1.0 - lam) if _ordering(ordering) == "atc" else 1.0 / (1.0 - lam)
    h = float(eta) * float(curvature)
    return float(h * h * (g * g * w).sum() / (len(w) + 1))


def consensus_bound(W, eta: float, zeta_sq_value: float, ordering: str = "atc", curvature: float = 1.0) -> float:
    r"""The bound :math:`\Xi_\star^2\le\big(\frac{\eta\rho}{1-(1-\eta a)\rho}\big)^2\zeta_\star^2` (ATC) or
    :math:`\big(\frac{\eta}{1-\rho+\eta a}\big)^2\zeta_\star^2` (parallel), :math:`\rho=\|W-J\|_2`, valid for
    :math:`0<\eta a\le1`."""
    lam, _ = mixing_modes(W)
    rho = float(np.abs(lam).max())
    h = float(eta) * float(curvature)
    if not 0 < h <= 1:
        raise ValueError(f"the bound needs 0 < eta * curvature <= 1, got {h}")
    g = eta * rho / (1.0 - (1.0 - h) * rho) if _ordering(ordering) == "atc" else eta / (1.0 - rho + h)
    return float(g * g * zeta_sq_value)


def koloskova_bound(W, eta: float, zeta_sq_value: float) -> float:
    r"""The looser form :math:`4\eta^2\rho^2\zeta^2/p^2`, :math:`p=1-\rho^2` (ATC, :math:`a=1`)."""
    lam, _ = mixing_modes(W)
    rho = float(np.abs(lam).max())
    p = 1.0 - rho * rho
    return float(4.0 * eta * eta * rho * rho * zeta_sq_value / (p * p))


def noise_consensus_sq(W, eta: float, d: int, s2: float = 1.0, curvature: float = 1.0,
                       ordering: str = "atc") -> float:
    r"""Noise-driven stationary :math:`\mathbb E\,\Xi^2` for identical :math:`f_i=\frac a2\|x\|^2` and noise
    :math:`\mathcal N(0,s^2I_d)` (THEORY C2(iii)). Mode :math:`j` of one coordinate evolves as
    :math:`z^+=\lambda_j((1-\eta a)z-\eta\xi)` (ATC) or :math:`z^+=(\lambda_j-\eta a)z-\eta\xi` (parallel), so

    .. math:: \mathbb E\,\Xi^2_\infty=\frac dn\sum_{j\ge2}\frac{\eta^2s^2\lambda_j^2}{1-\lambda_j^2(1-\eta a)^2}
              \quad\text{(ATC)},\qquad
              \frac dn\sum_{j\ge2}\frac{\eta^2s^2}{1-(\lambda_j-\eta a)^2}\quad\text{(parallel)}.
    """
    lam, _ = mixing_modes(W)
    n = len(lam) + 1
    h = float(eta) * float(curvature)
    if _ordering(ordering) == "atc":
        factor, gain = lam * (1.0 - h), lam
    else:
        factor, gain = lam - h, np.ones_like(lam)
    if np.abs(factor).max() >= 1:
        raise ValueError("unstable: a consensus mode has |factor| >= 1")
    return float(d * (eta * eta * s2 * gain * gain / (1.0 - factor * factor)).sum() / n)


# --------------------------------------------------------------------- general Hessians (M1)


def _Ab(A, B):
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or B.shape != A.shape[:2]:
        raise ValueError(f"A must be [n, d, d] and B [n, d]; got {A.shape} and {B.shape}")
    return A, B


def dsgd_affine_map(W, A, B, eta: float, ordering: str = "atc"):
    r"""``(M, c)`` of deterministic D-SGD on :math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)` acting on
    :math:`\operatorname{vec}(X)` (row-major):

    * ATC: :math:`M=(W\otimes I_d)(I-\eta A_{\rm blk})`, :math:`c=\eta(W\otimes I_d)A_{\rm blk}b`;
    * parallel: :math:`M=W\otimes I_d-\eta A_{\rm blk}`, :math:`c=\eta A_{\rm blk}b`.

    ``W`` may be any (also directed) doubly stochastic matrix here.
    """
    A, B = _Ab(A, B)
    n, d = B.shape
    W = np.asarray(W, dtype=np.float64)
    K = np.kron(W, np.eye(d))
    Ablk = scipy.linalg.block_diag(*A)
    Ab = Ablk @ B.reshape(-1)
    if _ordering(ordering) == "atc":
        return K @ (np.eye(n * d) - eta * Ablk), eta * (K @ Ab)
    return K - eta * Ablk, eta * Ab


def dsgd_noise_matrix(W, d: int, eta: float, ordering: str = "atc") -> np.ndarray:
    r"""How the stacked gradient noise :math:`\operatorname{vec}(\Xi)` enters one step: :math:`N=-\eta(W\otimes I_d)`
    (ATC: the noise is gossiped) or :math:`N=-\eta I` (parallel)."""
    W = np.asarray(W, dtype=np.float64)
    if _ordering(ordering) == "atc":
        return -eta * np.kron(W, np.eye(d))
    return -eta * np.eye(W.shape[0] * d)


def dsgd_fixed_point(W, A, B, eta: float, ordering: str = "atc") -> np.ndarray:
    r"""The fixed point :math:`X_\star` (``[n, d]``) of deterministic D-SGD, by one linear solve."""
    M, c = dsgd_affine_map(W, A, B, eta, ordering)
    n, d = np.asarray(B).shape
    return np.linalg.solve(np.eye(n * d) - M, c).reshape(n, d)


def mean_bias_from_consensus(A, X) -> np.ndarray:
    r"""The first-order mean bias :math:`\bar x_\star-x^\star=-(\sum_iA_i)^{-1}\sum_iA_i(x_{i}-\bar x)`
    implied by :math:`\sum_i\nabla f_i(x_{i,\star})=0` (exact at any fixed point of either ordering)."""
    A = np.asarray(A, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    D = X - X.mean(0)
    return -np.linalg.solve(A.sum(0), np.einsum("nij,nj->i", A, D))


# --------------------------------------------------------------------- stationary moments (M2), C7


def critical_consensus_sq(eta: float, sigma_sq: float, L: float, n: int) -> float:
    r"""Kong et al.'s critical consensus distance in the form derived in THEORY C7,
    :math:`\Gamma^2=\eta\sigma^2/(Ln)`. What :math:`\sigma^2` means (per coordinate or
    :math:`\mathbb E\|\xi_i\|^2`) changes :math:`\Gamma^2` by a factor :math:`d`; the caller says."""
    return float(eta) * float(sigma_sq) / (float(L) * int(n))


def stacked_stationary_summary(m, C, A, B):
    r"""From the stationary mean ``m`` and covariance ``C`` of :math:`\operatorname{vec}(X)`, return
    ``(excess, consensus_sq, mean_model)``:

    * :math:`\mathbb E f(\bar x)-f^\star=\frac12(\bar m-x^\star)^\top\bar A(\bar m-x^\star)+\frac12\operatorname{tr}(\bar A\bar C)`
      with :math:`\bar x=(\frac1n\mathbf1^\top\otimes I_d)\operatorname{vec}X`;
    * :math:`\mathbb E\,\Xi^2=\frac1n\big(\operatorname{tr}(PC)+m^\top Pm\big)`, :math:`P=(I-J)\otimes I_d`.
    """
    A, B = _Ab(A, B)
    n, d = B.shape
    Abar = A.mean(0)
    xs = np.linalg.solve(A.sum(0), np.einsum("nij,nj->i", A, B))
    Pa = np.kron(np.full((1, n), 1.0 / n), np.eye(d))
    P = np.kron(np.eye(n) - 1.0 / n, np.eye(d))
    mbar, Cbar = Pa @ m, Pa @ C @ Pa.T
    e = mbar - xs
    excess = 0.5 * e @ Abar @ e + 0.5 * np.trace(Abar @ Cbar)
    consensus = (np.trace(P @ C) + m @ P @ m) / n
    return float(excess), float(consensus), mbar


def dsgd_stationary(W, A, B, eta: float, s2: float, ordering: str = "atc") -> dict:
    r"""Exact stationary excess :math:`\mathbb Ef(\bar x)-f^\star` and :math:`\mathbb E\Xi^2` of D-SGD with
    gradient noise :math:`\mathcal N(0,s^2I_d)`, by the Lyapunov equation of (M2) on the matrices of
    :func:`dsgd_affine_map` and :func:`dsgd_noise_matrix`."""
    from .exact import stationary_moments
    A, B = _Ab(A, B)
    n, d = B.shape
    M, c = dsgd_affine_map(W, A, B, eta, ordering)
    N = dsgd_noise_matrix(W, d, eta, ordering)
    m, C = stationary_moments(M, c, N, s2 * np.eye(n * d))
    excess, consensus, mbar = stacked_stationary_summary(m, C, A, B)
    return {"excess": excess, "consensus_sq": consensus, "mean_model": mbar, "m": m, "C": C}


def csgd_stationary_excess(A, B, eta: float, s2: float) -> float:
    r"""Stationary excess of centralised (minibatch) SGD on :math:`f=\frac1n\sum_if_i` with the same
    per-worker noise: :math:`x^+=x-\eta(\bar A(x-x^\star)+\bar\xi)`, :math:`\bar\xi\sim\mathcal N(0,\frac{s^2}nI)`.
    The covariance solves :math:`C=(I-\eta\bar A)C(I-\eta\bar A)^\top+\eta^2\frac{s^2}nI` and the
    excess is :math:`\frac12\operatorname{tr}(\bar AC)` (the mean is :math:`x^\star`)."""
    A, B = _Ab(A, B)
    n, d = B.shape
    Abar = A.mean(0)
    T = np.eye(d) - eta * Abar
    if np.abs(np.linalg.eigvals(T)).max() >= 1:
        raise ValueError("C-SGD is unstable at this step size")
    C = scipy.linalg.solve_discrete_lyapunov(T, eta * eta * s2 / n * np.eye(d))
    return float(0.5 * np.trace(Abar @ (0.5 * (C + C.T))))
