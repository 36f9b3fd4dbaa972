"""Reference answers to the exercises of the chapter "Training a core subnetwork".

Plain NumPy closed forms; ``tests/test_exercises_core_subnetwork.py`` checks each against an independent
computation with hetlab (the alternating scheme iterated, its probed cycle map, the core trained alone by
the library's core steps).
"""
from __future__ import annotations

import math

import numpy as np


# ---------------------------------------------------------------- cs-ex-joint: the 2 x 2 trade-off

def joint_minimizer_2x2(a, c, e, b1, b2, lam):
    """Minimiser ``(u, v)`` of (1 - lam) f(u, 0) + lam f(u, v) for f = 1/2 [u v] [[a, c], [c, e]] [u v]^T - b1 u - b2 v.

    Setting the derivative in v to zero gives v = (b2 - c u)/e; the derivative in u,
    a u - b1 + lam c v = 0, then gives u = (b1 - lam c b2 / e) / (a - lam c^2 / e).
    """
    u = (b1 - lam * c * b2 / e) / (a - lam * c * c / e)
    return u, (b2 - c * u) / e


def core_excess_2x2(a, c, e, b1, b2, lam) -> float:
    """f(u(lam), 0) - min_u f(u, 0) = lam^2 c^2 (c b1 - a b2)^2 / (2 a (a e - lam c^2)^2)."""
    return lam ** 2 * c ** 2 * (c * b1 - a * b2) ** 2 / (2 * a * (a * e - lam * c * c) ** 2)


def full_excess_2x2(a, c, e, b1, b2, lam) -> float:
    """f(u(lam), v(lam)) - f*: v is optimal given u, so the excess is (det H / e) (u - u*)^2 / 2."""
    u, _ = joint_minimizer_2x2(a, c, e, b1, b2, lam)
    det = a * e - c * c
    u_star = (e * b1 - c * b2) / det
    return 0.5 * det / e * (u - u_star) ** 2


# --------------------------------------------------------------- cs-ex-rate: the 2 x 2 cycle rate

def cycle_rate_2x2(a, c, e, eta) -> float:
    """rho((I - eta H)(I - eta P H P)) for p = q = 1, core = first coordinate, from trace and determinant:
    tau = (1 - eta a)^2 + 1 - eta e, delta = (1 - eta a) det(I - eta H); the eigenvalues are real for eta <= 1/L."""
    s = 1 - eta * a
    tau = s * s + 1 - eta * e
    delta = s * (s * (1 - eta * e) - eta * eta * c * c)
    disc = tau * tau - 4 * delta
    if disc < 0:
        raise ValueError("complex eigenvalues: use eta <= 1/L")
    return 0.5 * (abs(tau) + math.sqrt(disc))


def gd_rate_2x2(a, c, e, eta) -> float:
    """rho(I - eta H) of one full gradient step."""
    ev = np.linalg.eigvalsh(np.array([[a, c], [c, e]], dtype=float))
    return float(np.max(np.abs(1 - eta * ev)))


# ------------------------------------------------------------------ cs-ex-split: when to split off

def split_excesses(H, b, k, eta, p, q):
    """Core excesses f(P x) - f_core* of the exact cycle limit read at the end of the full phase (z) and at
    the end of the core phase (C^p z), for a block core of the first k coordinates.

    Built from the matrices: core step x -> x - eta P (H P x - b), full step x -> x - eta (H x - b)."""
    H, b = np.asarray(H, float), np.asarray(b, float)
    d = len(b)
    P = np.diag((np.arange(d) < k).astype(float))
    MC, MF = np.eye(d) - eta * P @ H @ P, np.eye(d) - eta * H
    Mp, Mq = np.linalg.matrix_power(MC, p), np.linalg.matrix_power(MF, q)
    cp = sum(np.linalg.matrix_power(MC, j) for j in range(p)) @ (eta * P @ b)
    cq = sum(np.linalg.matrix_power(MF, j) for j in range(q)) @ (eta * b)
    z = np.linalg.solve(np.eye(d) - Mq @ Mp, Mq @ cp + cq)
    z_core_phase = Mp @ z + cp

    def f_core(x):
        u = x[:k]
        return 0.5 * u @ H[:k, :k] @ u - b[:k] @ u

    f_core_star = -0.5 * b[:k] @ np.linalg.solve(H[:k, :k], b[:k])
    return f_core(z) - f_core_star, f_core(z_core_phase) - f_core_star


# ----------------------------------------------------------- cs-ex-lowrank: low-rank core, alone

def low_rank_core_alone(X, Y, U0, V0, reg: float = 0.0) -> np.ndarray:
    """Core C* of the linear model W = U0 C V0^T trained alone on 1/(2N)||X W - Y||^2 + reg/2 ||W||^2:
    (U0^T S U0 + reg I) C = U0^T (X^T Y / N) V0 with S = X^T X / N (orthonormal U0, V0)."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    N = X.shape[0]
    S = X.T @ X / N
    A = U0.T @ S @ U0 + reg * np.eye(U0.shape[1])
    return np.linalg.solve(A, U0.T @ (X.T @ Y / N) @ V0)


def split_full_model(X, Y, U0, V0, reg: float = 0.0) -> np.ndarray:
    """Core part U0^T W* V0 of the full least-squares solution W* (the full model trained alone, then split)."""
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    N = X.shape[0]
    W = np.linalg.solve(X.T @ X / N + reg * np.eye(X.shape[1]), X.T @ Y / N)
    return U0.T @ W @ V0
