r"""Exact mean-square rates of minibatch and delayed SGD on interpolating least squares (THEORY E2).

Setting: rows :math:`a_1,\dots,a_N\in\mathbb R^d`, labels :math:`y=Ax^\star` (interpolation), per-sample
Hessians :math:`H_i=a_ia_i^\top`, :math:`H=\frac1N\sum_iH_i`, :math:`L=\lambda_{\max}(H)`,
:math:`L_{\max}=\max_i\|a_i\|^2`. With the error :math:`e=x-x^\star` and its second moment
:math:`P=\mathbb E[ee^\top]`, one step of minibatch SGD (batch of ``B`` rows drawn without replacement,
step :math:`\eta`) is the linear map

.. math::
    \mathcal T_{B,\eta}(P)=P-\eta(HP+PH)+\eta^2\,\mathbb E[\hat H_BP\hat H_B],\qquad
    \mathbb E[\hat H_BP\hat H_B]=\frac{1}{BN}\sum_iH_iPH_i
    +\frac{B-1}{BN(N-1)}\Big[\Big(\sum_iH_i\Big)P\Big(\sum_iH_i\Big)-\sum_iH_iPH_i\Big],

a :math:`d^2\times d^2` matrix through :math:`\mathrm{vec}(H_iPH_i)=(H_i\otimes H_i)\mathrm{vec}(P)`.
The exact mean-square linear rate at the best step is :math:`r(B)=\min_\eta\rho(\mathcal T_{B,\eta})`, and
the speedup of batch ``B`` over batch 1 (iterations to reach a target) is
:math:`S(B)=\log r(B)/\log r(1)`.

The derived stand-in for Stich, Mohtashami & Jaggi's critical parameter is the expected smoothness
(Gower et al. 2019) :math:`\mathcal L(B)=\frac{N(B-1)}{B(N-1)}L+\frac{N-B}{B(N-1)}L_{\max}`, which
predicts :math:`S(B)\approx L_{\max}/\mathcal L(B)` and a critical batch :math:`B_{\rm crit}\approx L_{\max}/L`.

Asynchronous analogue: SGD with a fixed delay :math:`\tau`, :math:`x_{t+1}=x_t-\eta g_{i_t}(x_{t-\tau})`,
is a random linear system in the stacked state :math:`z_t=(e_t,\dots,e_{t-\tau})`,
:math:`z_{t+1}=M_{i_t}z_t`; its second moment :math:`Z=\mathbb E[zz^\top]` follows
:math:`Z\mapsto\frac1N\sum_iM_iZM_i^\top`, whose spectral radius is the exact mean-square rate.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.sparse.linalg import eigs

__all__ = ["row_constants", "expected_smoothness", "critical_batch_size", "derived_speedup",
           "minibatch_hessian_second_moment", "enumerate_hessian_second_moment", "minibatch_ms_operator",
           "ms_rate", "optimal_ms_rate", "speedups", "gd_optimal_rate", "delayed_sgd_matrices",
           "delayed_ms_rate", "optimal_delayed_rate", "tolerable_delay"]


def _rows(A) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2:
        raise ValueError(f"the data must be an [N, d] array of rows with N >= 2, got shape {A.shape}")
    if not np.isfinite(A).all():
        raise ValueError("the data rows contain NaN or inf")
    return A


def _check_batch(B, N):
    if isinstance(B, bool) or int(B) != B or not 1 <= B <= N:
        raise ValueError(f"batch size must be an integer in [1, N={N}], got {B}")
    return int(B)


def row_constants(A) -> tuple[float, float, float]:
    r"""``(L, L_max, mu)`` of the rows: :math:`\lambda_{\max}`, :math:`\max_i\|a_i\|^2`, :math:`\lambda_{\min}` of :math:`H`."""
    A = _rows(A)
    ev = np.linalg.eigvalsh(A.T @ A / A.shape[0])
    return float(ev[-1]), float((A * A).sum(1).max()), float(ev[0])


def expected_smoothness(B: int, N: int, L: float, L_max: float) -> float:
    r""":math:`\mathcal L(B)=\frac{N(B-1)}{B(N-1)}L+\frac{N-B}{B(N-1)}L_{\max}` (sampling without replacement)."""
    B = _check_batch(B, N)
    return N * (B - 1) / (B * (N - 1)) * L + (N - B) / (B * (N - 1)) * L_max


def critical_batch_size(L: float, L_max: float) -> float:
    r""":math:`B_{\rm crit}=L_{\max}/L`: below it the speedup is nearly linear, beyond it it saturates."""
    if not (L > 0 and L_max > 0):
        raise ValueError(f"L and L_max must be positive, got {L}, {L_max}")
    return L_max / L


def derived_speedup(B: int, N: int, L: float, L_max: float) -> float:
    r"""The expected-smoothness prediction :math:`S(B)\approx L_{\max}/\mathcal L(B)`."""
    return L_max / expected_smoothness(B, N, L, L_max)


def minibatch_hessian_second_moment(A, P, B: int) -> np.ndarray:
    r"""Closed form of :math:`\mathbb E[\hat H_BP\hat H_B]` for a batch of ``B`` rows without replacement."""
    A = _rows(A)
    N = A.shape[0]
    B = _check_batch(B, N)
    P = np.asarray(P, dtype=np.float64)
    Hs = np.einsum("ni,nj->nij", A, A)
    S = Hs.sum(0)
    diag = np.einsum("nij,jk,nkl->il", Hs, P, Hs)
    return diag / (B * N) + (B - 1) / (B * N * (N - 1)) * (S @ P @ S - diag)


def enumerate_hessian_second_moment(A, P, B: int, pair_factor=None) -> np.ndarray:
    r""":math:`\mathbb E[\hat H_BP\hat H_B]` by brute force over all :math:`\binom NB` batches (small ``N``).
    ``pair_factor`` is for negative controls only (ignored when ``None``)."""
    import itertools
    A = _rows(A)
    N = A.shape[0]
    B = _check_batch(B, N)
    if math.comb(N, B) > 200_000:
        raise ValueError(f"C({N}, {B}) = {math.comb(N, B)} batches is too many to enumerate")
    Hs = np.einsum("ni,nj->nij", A, A)
    P = np.asarray(P, dtype=np.float64)
    acc, count = np.zeros_like(P), 0
    for sub in itertools.combinations(range(N), B):
        Hb = Hs[list(sub)].mean(0)
        acc += Hb @ P @ Hb
        count += 1
    return acc / count


def minibatch_ms_operator(A, B: int, eta: float) -> np.ndarray:
    r"""The :math:`d^2\times d^2` matrix of :math:`\mathcal T_{B,\eta}` (column-major ``vec``)."""
    A = _rows(A)
    N, d = A.shape
    B = _check_batch(B, N)
    Hs = np.einsum("ni,nj->nij", A, A)
    S = Hs.sum(0)
    H = S / N
    I = np.eye(d)
    KK = np.einsum("nij,nkl->ikjl", Hs, Hs).reshape(d * d, d * d)  # sum_i H_i (x) H_i
    SS = np.kron(S, S)
    second = KK / (B * N) + (B - 1) / (B * N * (N - 1)) * (SS - KK)
    return np.eye(d * d) - eta * (np.kron(I, H) + np.kron(H, I)) + eta ** 2 * second


def ms_rate(A, B: int, eta: float) -> float:
    r""":math:`\rho(\mathcal T_{B,\eta})`: the factor by which :math:`\mathbb E\|e\|^2` shrinks per step, asymptotically."""
    return float(np.abs(np.linalg.eigvals(minibatch_ms_operator(A, B, eta))).max())


def _minimise_log_eta(f, lo: float, hi: float, grid: int, xatol: float = 1e-13):
    """Minimise ``f(eta)`` over a log grid on ``[lo, hi]``, then refine between the best point's neighbours."""
    etas = np.geomspace(lo, hi, grid)
    vals = np.array([f(e) for e in etas])
    j = int(np.argmin(vals))
    if j in (0, grid - 1):  # the optimum sits on the edge of the grid: nothing to refine
        return float(vals[j]), float(etas[j])
    # golden section (robust at the kink of a max of smooth branches, where Brent's parabolas stall)
    res = minimize_scalar(f, bracket=(etas[j - 1], etas[j], etas[j + 1]), method="golden",
                          options={"xtol": xatol})
    if res.fun <= vals[j]:
        return float(res.fun), float(res.x)
    return float(vals[j]), float(etas[j])


def optimal_ms_rate(A, B: int, grid: int = 300) -> tuple[float, float]:
    r"""``(r(B), eta*)``: the best mean-square rate over step sizes (log grid on
    :math:`[10^{-3}/\mathcal L(B),\,4/\mathcal L(B)]`, refined by bounded Brent). Step sizes must be
    re-tuned per batch size (THEORY E2 pitfall); a fixed step hides the linear-speedup regime."""
    A = _rows(A)
    L, Lmax, _ = row_constants(A)
    Lb = expected_smoothness(B, A.shape[0], L, Lmax)
    return _minimise_log_eta(lambda e: ms_rate(A, B, e), 1e-3 / Lb, 4.0 / Lb, grid)


def speedups(A, batch_sizes, grid: int = 300, fixed_eta: float | None = None) -> np.ndarray:
    r""":math:`S(B)=\log r(B)/\log r(1)` for each batch size (step re-tuned per ``B``), or, with
    ``fixed_eta``, at one common step (the pitfall, kept for negative controls and plots)."""
    A = _rows(A)
    if fixed_eta is not None:
        r1 = ms_rate(A, 1, fixed_eta)
        return np.array([math.log(ms_rate(A, B, fixed_eta)) / math.log(r1) for B in batch_sizes])
    r1 = optimal_ms_rate(A, 1, grid)[0]
    return np.array([math.log(optimal_ms_rate(A, B, grid)[0]) / math.log(r1) for B in batch_sizes])


def gd_optimal_rate(A) -> float:
    r"""Full-batch GD's best mean-square rate :math:`\big(\frac{\kappa-1}{\kappa+1}\big)^2`, :math:`\kappa=L/\mu`
    (at :math:`\eta=2/(L+\mu)`), from the spectrum alone."""
    L, _, mu = row_constants(A)
    return ((L - mu) / (L + mu)) ** 2


# -- asynchronous SGD with a fixed delay --------------------------------------------------------------

def delayed_sgd_matrices(A, tau: int, eta: float) -> np.ndarray:
    r"""The ``N`` matrices :math:`M_i` (``[N, m, m]``, :math:`m=d(\tau+1)`) of
    :math:`z_{t+1}=M_{i_t}z_t`, :math:`z_t=(e_t,\dots,e_{t-\tau})`, for :math:`e_{t+1}=e_t-\eta H_ie_{t-\tau}`."""
    A = _rows(A)
    if isinstance(tau, bool) or int(tau) != tau or tau < 0:
        raise ValueError(f"the delay tau must be a non-negative integer, got {tau}")
    N, d = A.shape
    tau = int(tau)
    m = d * (tau + 1)
    if m > 80:
        raise ValueError(f"d (tau + 1) = {m} is too large for the exact second-moment operator ({m * m} x {m * m}); "
                         "use a smaller dimension or delay")
    M0 = np.zeros((m, m))
    M0[:d, :d] = np.eye(d)
    for k in range(tau):  # shift register: block k+1 <- block k
        M0[(k + 1) * d:(k + 2) * d, k * d:(k + 1) * d] = np.eye(d)
    Ms = np.repeat(M0[None], N, axis=0)
    Ms[:, :d, tau * d:(tau + 1) * d] -= eta * np.einsum("ni,nj->nij", A, A)
    return Ms


def _delayed_parts(A, tau: int):
    r"""``(K0, K1, K2)`` with :math:`\frac1N\sum_iM_i\otimes M_i=K_0-\eta K_1+\eta^2K_2` (:math:`M_i=M_0-\eta E_i`)."""
    M0 = delayed_sgd_matrices(A, tau, 0.0)[0]
    Es = M0[None] - delayed_sgd_matrices(A, tau, 1.0)  # E_i: H_i in block (0, tau)
    N, m, _ = Es.shape
    Ebar = Es.mean(0)
    K0 = np.kron(M0, M0)
    K1 = np.kron(M0, Ebar) + np.kron(Ebar, M0)
    K2 = np.einsum("nab,ncd->acbd", Es, Es).reshape(m * m, m * m) / N
    return K0, K1, K2


def _spectral_radius(K) -> float:
    """Spectral radius: dense for small operators; ARPACK otherwise, asking for several eigenvalues of
    largest magnitude with a generous Krylov space (a single requested eigenvalue was seen to converge to
    a non-dominant one when the top of the spectrum is a cluster of complex pairs)."""
    n = K.shape[0]
    if n <= 400:
        return float(np.abs(np.linalg.eigvals(K)).max())
    v0 = np.eye(int(round(math.sqrt(n)))).ravel()  # the identity: inside the PSD cone
    k = 6
    val = eigs(K, k=k, which="LM", v0=v0, ncv=min(n - 1, 60), tol=1e-13, maxiter=50_000,
               return_eigenvectors=False)
    return float(np.abs(val).max())


def delayed_ms_rate(A, tau: int, eta: float, _parts=None) -> float:
    r"""Exact mean-square rate :math:`\rho(Z\mapsto\frac1N\sum_iM_iZM_i^\top)` of SGD with delay ``tau``
    (dense for tiny states, ARPACK started inside the PSD cone otherwise)."""
    K0, K1, K2 = _delayed_parts(A, tau) if _parts is None else _parts
    return _spectral_radius(K0 - eta * K1 + eta ** 2 * K2)


def optimal_delayed_rate(A, tau: int, grid: int = 30) -> tuple[float, float]:
    r"""``(r, eta*)``: the best mean-square rate of SGD with delay ``tau`` over step sizes in
    :math:`[10^{-3}/L_{\max},\,2/L_{\max}]`."""
    A = _rows(A)
    _, Lmax, _ = row_constants(A)
    parts = _delayed_parts(A, tau)
    return _minimise_log_eta(lambda e: delayed_ms_rate(A, tau, e, parts), 1e-3 / Lmax, 2.0 / Lmax, grid, xatol=1e-8)


def tolerable_delay(A, taus, factor: float = 2.0, grid: int = 30) -> tuple[int | None, np.ndarray]:
    r"""The smallest delay in ``taus`` whose best rate needs ``factor`` times more iterations than
    :math:`\tau=0` (:math:`\log r(0)/\log r(\tau)\ge` ``factor``), and the slowdowns for every ``tau``
    (``None`` when no delay in ``taus`` reaches the factor)."""
    r0 = optimal_delayed_rate(A, 0, grid)[0]
    slow = np.array([math.log(r0) / math.log(optimal_delayed_rate(A, t, grid)[0]) for t in taus])
    hit = [t for t, s in zip(taus, slow) if s >= factor]
    return (int(hit[0]) if hit else None), slow
