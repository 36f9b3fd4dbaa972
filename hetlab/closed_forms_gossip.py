r"""Closed-form predictions for gossip topologies and decentralized methods (THEORY C1–C5).

Everything here is computed from formulas or from the problem's matrices alone (NumPy, float64),
independently of :mod:`hetlab.topology` and :mod:`hetlab.algorithms`, so that comparing the two
is a real check. Quadratic problems are :class:`~hetlab.problems.QuadraticProblem` built with
``from_minimizers`` (:math:`f_i=\frac12(x-b_i)^\top A_i(x-b_i)`, uniform weights).

**Spectra of mixing matrices** (C1). :math:`\rho(W)=\|W-J\|_2`; for a symmetric or, more
generally, normal :math:`W` it is the largest modulus of an eigenvalue other than the consensus
eigenvalue 1.

* ring, self weight ``a``: :math:`a+(1-a)\cos(2\pi k/n)`; :func:`ring_rho` (``a = 1/3``:
  :math:`\frac{1+2\cos(2\pi/n)}3`);
* torus ``m x m``, weights 1/5: :math:`\frac{1+2\cos(2\pi a/m)+2\cos(2\pi c/m)}5`;
  :math:`\rho=\frac{3+2\cos(2\pi/m)}5` for ``m >= 4``;
* hypercube, weights :math:`1/(\tau+1)`: :math:`\frac{1+\tau-2w}{\tau+1}`; :math:`\rho=1-\frac2{\tau+1}`;
* static exponential graph: :math:`\frac{1+\sum_k\omega^{j2^k}}{\tau+1}`; :math:`\rho=1-\frac2{\tau+1}`;
* star, Metropolis weights: :math:`1,\ 0,\ 1-\frac1n`; :math:`\rho=1-\frac1n`;
* chain, Metropolis weights (``n >= 3``): :math:`\frac{1+2\cos(\pi k/n)}3`; :math:`\rho=\frac{1+2\cos(\pi/n)}3`;
* complete graph (``J``): :math:`1,0,\dots,0`; :math:`\rho=0`;
* one-peer exponential step ``k``: :math:`\frac{1+\omega^{j2^k}}2`; :math:`\rho=\cos(\pi/n)` for ``k = 0`` and
  1 for ``k >= 1``; the product over one period is exactly ``J``.

**Decentralized methods on quadratics** (C2–C5): the D-SGD round is the affine map
:math:`z\mapsto Mz+c` of :func:`dsgd_affine_map`; its fixed point solves :math:`(I-M)z=c`
(:func:`dsgd_fixed_point`). DSGDm and QG-DSGDm have D-SGD's fixed point with the step
:math:`\eta/(1-\beta)` and :math:`\eta` respectively (C5). The exact second moments of D-SGD with
decreasing steps and gradient noise follow from the moment recursion
(:func:`dsgd_mean_square_decreasing`).

**RelaySum** (C4): tree distances by breadth-first search (:func:`tree_distances`), delays
:math:`\tau_{ik}=\max(d(i,k)-1,0)` (:func:`relay_delays`), and the delayed sums the relay must
deliver (:func:`relaysum_prediction`, :func:`relaysum_count_prediction`).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

# ------------------------------------------------------------------------------- helpers


def _log2(n: int) -> int:
    tau = int(round(math.log2(n))) if n >= 1 else -1
    if n < 2 or 2 ** tau != n:
        raise ValueError(f"n must be a power of two (n = 2^tau), got n={n}")
    return tau


def _rho_from_eigenvalues(lam) -> float:
    """Largest modulus among the eigenvalues other than one copy of the consensus eigenvalue 1."""
    lam = np.asarray(lam)
    k = int(np.argmin(np.abs(lam - 1.0)))
    rest = np.delete(lam, k)
    return float(np.max(np.abs(rest))) if rest.size else 0.0


def consensus_matrix(n: int) -> np.ndarray:
    """``J = 11^T / n``."""
    return np.full((n, n), 1.0 / n)


# ------------------------------------------------------------------------------- C1 spectra


def ring_eigenvalues(n: int, self_weight: float = 1.0 / 3.0) -> np.ndarray:
    r"""Eigenvalues :math:`a+(1-a)\cos(2\pi k/n)`, ``k = 0..n-1``, of the ring with weight ``a`` on
    self and :math:`(1-a)/2` on each neighbour (circulant, symmetric)."""
    k = np.arange(n)
    return self_weight + (1.0 - self_weight) * np.cos(2 * np.pi * k / n)


def ring_rho(n: int, self_weight: float = 1.0 / 3.0) -> float:
    r""":math:`\rho=\max(|a+(1-a)\cos(2\pi/n)|,\ |a+(1-a)\cos(2\pi\lfloor n/2\rfloor/n)|)`: the slowest
    mode is either the smoothest non-constant one (``k = 1``) or the most oscillating one
    (``k = n/2``, eigenvalue :math:`2a-1` for even ``n``). For ``a = 1/3``, :math:`\frac{1+2\cos(2\pi/n)}3`."""
    a = self_weight
    return float(max(abs(a + (1 - a) * math.cos(2 * math.pi / n)),
                     abs(a + (1 - a) * math.cos(2 * math.pi * (n // 2) / n))))


def ring_gap(n: int) -> float:
    r"""Exact :math:`\delta=1-\rho=\frac43\sin^2\frac\pi n` of the 1/3-ring (``n >= 4``)."""
    return 4.0 / 3.0 * math.sin(math.pi / n) ** 2


def ring_gap_asymptotic(n: int) -> float:
    r""":math:`\frac{4\pi^2}{3n^2}`, the small-gap asymptotics of :func:`ring_gap`."""
    return 4 * math.pi ** 2 / (3 * n ** 2)


def ring_one_minus_lambda2(n: int, self_weight: float = 1.0 / 3.0) -> float:
    r""":math:`1-\lambda_2=(1-a)(1-\cos(2\pi/n))`, which ignores the negative eigenvalue :math:`2a-1`."""
    return (1 - self_weight) * (1 - math.cos(2 * math.pi / n))


def torus_eigenvalues(m: int) -> np.ndarray:
    r""":math:`\frac{1+2\cos(2\pi a/m)+2\cos(2\pi c/m)}5` for ``a, c = 0..m-1`` (``m x m`` torus, weights 1/5)."""
    a = np.arange(m)
    ca = np.cos(2 * np.pi * a / m)
    return ((1 + 2 * ca[:, None] + 2 * ca[None, :]) / 5).ravel()


def torus_rho(m: int) -> float:
    r""":math:`\frac{3+2\cos(2\pi/m)}5` for ``m >= 4`` (for even ``m`` the most negative eigenvalue,
    :math:`-3/5`, is never larger in modulus)."""
    if m < 4:
        return _rho_from_eigenvalues(torus_eigenvalues(m))
    return (3 + 2 * math.cos(2 * math.pi / m)) / 5


def torus_gap_asymptotic(n: int) -> float:
    r""":math:`\frac{4\pi^2}{5n}` (``n = m^2``)."""
    return 4 * math.pi ** 2 / (5 * n)


def hypercube_eigenvalues(n: int) -> np.ndarray:
    r""":math:`\frac{1+\tau-2w}{\tau+1}` with multiplicity :math:`\binom\tau w`, ``w = 0..tau``
    (``n = 2^tau``, weights :math:`1/(\tau+1)`): the character :math:`(-1)^{\langle s,x\rangle}`
    with ``w = |s|`` bits set is an eigenvector."""
    tau = _log2(n)
    return np.concatenate([np.full(math.comb(tau, w), (1 + tau - 2 * w) / (tau + 1)) for w in range(tau + 1)])


def hypercube_rho(n: int) -> float:
    r""":math:`1-\frac2{\tau+1}`, attained by ``w = 1`` and, with a minus sign, by ``w = tau``."""
    tau = _log2(n)
    return 1 - 2 / (tau + 1)


def static_exponential_eigenvalues(n: int) -> np.ndarray:
    r"""Complex eigenvalues :math:`\frac1{\tau+1}(1+\sum_{k<\tau}\omega^{j2^k})`, :math:`\omega=e^{2\pi i/n}`,
    ``j = 0..n-1`` of the circulant :math:`W=\frac1{\tau+1}(I+\sum_kP^{2^k})`."""
    tau = _log2(n)
    j = np.arange(n)
    return (1 + sum(np.exp(2j * np.pi * j * 2 ** k / n) for k in range(tau))) / (tau + 1)


def static_exponential_rho(n: int) -> float:
    r""":math:`1-\frac2{\tau+1}` (attained at ``j = n/2``: :math:`(1-1+(\tau-1))/(\tau+1)`). ``W`` is circulant,
    hence normal, so this equals the largest singular value of :math:`W-J`."""
    tau = _log2(n)
    return 1 - 2 / (tau + 1)


def star_eigenvalues(n: int) -> np.ndarray:
    r"""Star with Metropolis weights (hub–leaf weight :math:`1/n`): eigenvalues :math:`1`, :math:`0`
    and :math:`1-1/n` (multiplicity ``n - 2``, the leaf differences)."""
    return np.concatenate([[1.0, 0.0], np.full(n - 2, 1 - 1 / n)])


def star_rho(n: int) -> float:
    r""":math:`1-\frac1n` (``n >= 3``)."""
    return 1 - 1 / n


def chain_eigenvalues(n: int) -> np.ndarray:
    r"""Chain (path) with Metropolis weights, ``n >= 3``: every edge weighs 1/3, so
    :math:`W=I-\mathcal L/3` with the path Laplacian's eigenvalues :math:`2-2\cos(\pi k/n)`:
    :math:`\frac{1+2\cos(\pi k/n)}3`, ``k = 0..n-1``."""
    if n < 3:
        raise ValueError(f"the chain closed form needs n >= 3, got {n}")
    k = np.arange(n)
    return (1 + 2 * np.cos(np.pi * k / n)) / 3


def chain_rho(n: int) -> float:
    r""":math:`\frac{1+2\cos(\pi/n)}3` (``n >= 3``)."""
    return (1 + 2 * math.cos(math.pi / n)) / 3


def complete_rho(n: int) -> float:
    return 0.0


def one_peer_step_rho(n: int, k: int) -> float:
    r""":math:`\|W^{(k)}-J\|_2` of the one-peer step :math:`\frac12(I+P^{2^k})`: eigenvalues
    :math:`\frac12(1+\omega^{j2^k})`, modulus :math:`|\cos(\pi j2^k/n)|`. For ``k >= 1`` the mode
    ``j = n/2^k`` has eigenvalue 1 (one step alone does not mix), for ``k = 0`` the largest modulus is
    :math:`\cos(\pi/n)`."""
    _log2(n)
    return math.cos(math.pi / n) if k == 0 else 1.0


def one_peer_period_product(n: int) -> np.ndarray:
    r"""The product of one period of one-peer steps: :math:`\prod_k\frac12(I+P^{2^k})=\frac1n\sum_{j<n}P^j=J`
    (every ``j < n`` has exactly one binary expansion), so the prediction is ``J``."""
    _log2(n)
    return consensus_matrix(n)


def p_koloskova(rho: float) -> float:
    r"""Koloskova et al.'s :math:`p=1-\rho^2`."""
    return 1.0 - rho ** 2


def gossip_rounds_to_eps(rho: float, eps: float) -> int:
    r"""Smallest ``r`` with :math:`\rho^r\le\varepsilon` (rounds of gossip that shrink every disagreement by
    ``eps``; exact for normal ``W``, where :math:`\|W^r-J\|_2=\rho^r`)."""
    if rho <= 0:
        return 1
    if rho >= 1:
        return math.inf
    r = math.ceil(math.log(eps) / math.log(rho) - 1e-12)
    while rho ** r > eps:  # guard the ceiling against round-off
        r += 1
    while r > 1 and rho ** (r - 1) <= eps:
        r -= 1
    return r

# ------------------------------------------------------------------------ C2–C5 quadratics


def _Ab(problem):
    if getattr(problem, "b", None) is None:
        raise TypeError("gossip closed forms need a quadratic built with QuadraticProblem.from_minimizers")
    w = problem.weights.numpy()
    if np.abs(w - 1.0 / problem.n).max() > 1e-12:
        raise ValueError("gossip closed forms assume uniform client weights")
    return problem.A.numpy(), problem.b.numpy()


def _block_diag(A: np.ndarray) -> np.ndarray:
    n, d, _ = A.shape
    out = np.zeros((n * d, n * d))
    for i in range(n):
        out[i * d:(i + 1) * d, i * d:(i + 1) * d] = A[i]
    return out


def dsgd_affine_map(problem, W, lr: float, ordering: str = "atc"):
    r"""``(M, c)`` of one exact D-SGD step on the row-major flattened ``X`` (``[n*d]``):

    * ``atc``: :math:`M=(W\otimes I_d)(I-\eta A_{\rm blk})`, :math:`c=\eta(W\otimes I_d)A_{\rm blk}b`;
    * ``parallel``: :math:`M=W\otimes I_d-\eta A_{\rm blk}`, :math:`c=\eta A_{\rm blk}b`.
    """
    A, b = _Ab(problem)
    n, d = b.shape
    W = np.asarray(W, dtype=np.float64)
    WI = np.kron(W, np.eye(d))
    Ablk = _block_diag(A)
    Ab = Ablk @ b.reshape(-1)
    if ordering == "atc":
        return WI @ (np.eye(n * d) - lr * Ablk), lr * WI @ Ab
    if ordering == "parallel":
        return WI - lr * Ablk, lr * Ab
    raise ValueError(f"ordering must be 'atc' or 'parallel', got {ordering!r}")


def dsgd_fixed_point(problem, W, lr: float, ordering: str = "atc") -> np.ndarray:
    r"""D-SGD's fixed point ``X [n, d]``: the solution of :math:`(I-M)z=c` (a linear solve)."""
    M, c = dsgd_affine_map(problem, W, lr, ordering)
    z = np.linalg.solve(np.eye(M.shape[0]) - M, c)
    return z.reshape(problem.n, problem.d)


def dsgdm_fixed_point(problem, W, lr: float, beta: float) -> np.ndarray:
    r"""DSGDm (local heavy ball) fixed point: at stationarity :math:`m_i=\nabla f_i(x_i)/(1-\beta)`, so it is
    D-SGD's (ATC) fixed point with step :math:`\eta/(1-\beta)`."""
    return dsgd_fixed_point(problem, W, lr / (1 - beta))


def qg_dsgdm_fixed_point(problem, W, lr: float, beta: float) -> np.ndarray:
    r"""QG-DSGDm fixed point: :math:`x^{t+1}=x^t` forces :math:`\hat m=0`, so it is D-SGD's (ATC) fixed point with
    step :math:`\eta` (``beta`` does not enter)."""
    return dsgd_fixed_point(problem, W, lr)


def qg_one_plus_beta_fixed_point(problem, W, lr: float, beta: float) -> np.ndarray:
    r"""Fixed point of the QG variant that divides the step by :math:`1+\beta` (one simulation script of the
    RelaySGD repository): :math:`\hat m=0` again, so D-SGD's fixed point with step :math:`\eta/(1+\beta)`."""
    return dsgd_fixed_point(problem, W, lr / (1 + beta))


def error_sq(X, x_star) -> float:
    r""":math:`\frac1n\sum_i\|x_i-x^\star\|^2`."""
    X = np.asarray(X, dtype=np.float64)
    return float(((X - np.asarray(x_star)[None, :]) ** 2).sum(1).mean())


def consensus_distance_sq(X) -> float:
    r""":math:`\Xi^2=\frac1n\sum_i\|x_i-\bar x\|^2`."""
    X = np.asarray(X, dtype=np.float64)
    return float(((X - X.mean(0)) ** 2).sum(1).mean())


def scale_heterogeneity(b: np.ndarray, c: float) -> np.ndarray:
    r""":math:`B\mapsto\bar b+c(B-\bar b)` (C3)."""
    b = np.asarray(b, dtype=np.float64)
    bb = b.mean(0, keepdims=True)
    return bb + c * (b - bb)


def gt_zero_init_limit(problem, X0) -> np.ndarray:
    r"""Where gradient tracking with the bug :math:`Y^0=0` goes.

    It conserves :math:`\mathbf1^\top Y^t=\mathbf1^\top G(X^t)-\mathbf1^\top G(X^0)`, so a fixed point
    (consensual, :math:`Y=0`) has :math:`\nabla f(x)=\frac1n\sum_i\nabla f_i(x_i^0)`:
    :math:`x=\bar A^{-1}\big(\bar c+\frac1n\sum_i\nabla f_i(x_i^0)\big)`. From a consensual start this is the
    start itself."""
    A, b = _Ab(problem)
    X0 = np.asarray(X0, dtype=np.float64)
    g0 = np.einsum("nij,nj->ni", A, X0 - b).mean(0)
    Abar = A.mean(0)
    cbar = np.einsum("nij,nj->ni", A, b).mean(0)
    return np.linalg.solve(Abar, cbar + g0)


def dsgd_mean_square_decreasing(problem, W, lrs, T_eval, noise_cov=None, X0=None) -> dict:
    r"""Exact :math:`\mathbb E\|\bar x_T-x^\star\|^2` of D-SGD (ATC) with steps ``lrs[t]`` and gradient noise.

    Each step is :math:`z^{+}=M_tz+c_t-\eta_t(W\otimes I)\xi_t` with i.i.d. :math:`\xi_t` (per worker covariance
    ``noise_cov`` ``[d, d]``, identity by default). The mean and covariance propagate exactly:
    :math:`m^+=M_tm+c_t`, :math:`C^+=M_tCM_t^\top+\eta_t^2(W\otimes I)(I_n\otimes\Sigma)(W\otimes I)^\top`
    (M2 with a time-varying map). Returns ``{T: value}`` for every ``T`` in ``T_eval`` (``T`` steps done).
    """
    A, b = _Ab(problem)
    n, d = b.shape
    W = np.asarray(W, dtype=np.float64)
    WI = np.kron(W, np.eye(d))
    Ablk = _block_diag(A)
    Ab = Ablk @ b.reshape(-1)
    Sigma = np.eye(d) if noise_cov is None else np.asarray(noise_cov, dtype=np.float64)
    Q = WI @ np.kron(np.eye(n), Sigma) @ WI.T
    avg = np.kron(np.full((1, n), 1.0 / n), np.eye(d))
    xs = np.linalg.solve(A.mean(0), (Ab.reshape(n, d)).mean(0))
    m = np.zeros(n * d) if X0 is None else np.asarray(X0, dtype=np.float64).reshape(-1).copy()
    C = np.zeros((n * d, n * d))
    want = set(int(T) for T in T_eval)
    out = {}
    eye = np.eye(n * d)
    for t in range(max(want)):
        eta = float(lrs[t])
        M = WI @ (eye - eta * Ablk)
        m = M @ m + eta * WI @ Ab
        C = M @ C @ M.T + eta ** 2 * Q
        if t + 1 in want:
            e = avg @ m - xs
            out[t + 1] = float(e @ e + np.trace(avg @ C @ avg.T))
    return out

# ------------------------------------------------------------------------------- C4 RelaySum


def tree_distances(edges, n: int) -> np.ndarray:
    """Hop distances ``[n, n]`` of an undirected graph given by ``edges`` (breadth-first search from every node;
    ``-1`` for unreachable pairs)."""
    adj = [[] for _ in range(n)]
    for i, j in edges:
        adj[int(i)].append(int(j))
        adj[int(j)].append(int(i))
    D = np.full((n, n), -1, dtype=int)
    for s in range(n):
        D[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if D[s, v] < 0:
                    D[s, v] = D[s, u] + 1
                    queue.append(v)
    return D


def relay_delays(edges, n: int) -> np.ndarray:
    r"""RelaySum delays :math:`\tau_{ik}=\max(d(i,k)-1,0)`: worker ``k``'s value reaches ``i`` after
    :math:`d(i,k)` hops, one of which happens within the step."""
    D = tree_distances(edges, n)
    if (D < 0).any():
        raise ValueError("the graph is disconnected")
    return np.maximum(D - 1, 0)


def relaysum_prediction(Y_hist, delays) -> np.ndarray:
    r"""The RelaySum identity's right-hand side :math:`s_i^t=\sum_{k:\tau_{ik}\le t}y_k^{t-\tau_{ik}}` for every
    step ``t`` of ``Y_hist`` (``[T, n, ...]``). Returns an array of the same shape."""
    Y = np.asarray(Y_hist, dtype=np.float64)
    T, n = Y.shape[:2]
    S = np.zeros_like(Y)
    for t in range(T):
        for i in range(n):
            for k in range(n):
                tau = int(delays[i, k])
                if tau <= t:
                    S[t, i] += Y[t - tau, k]
    return S


def relaysum_count_prediction(delays, T: int) -> np.ndarray:
    r"""``[T, n]``: :math:`1+C_i^t=\#\{k:\tau_{ik}\le t\}` (the count a worker has received, itself included)."""
    delays = np.asarray(delays)
    return np.stack([(delays <= t).sum(1) for t in range(T)]).astype(np.float64)


def chain_mean_delay(n: int) -> float:
    r"""Mean RelaySum delay on a chain, :math:`\frac1{n^2}\sum_{i,k}\max(|i-k|-1,0)=\frac{(n-1)(n-2)}{3n}`."""
    return (n - 1) * (n - 2) / (3 * n)


__all__ = [
    "consensus_matrix", "ring_eigenvalues", "ring_rho", "ring_gap", "ring_gap_asymptotic",
    "ring_one_minus_lambda2", "torus_eigenvalues", "torus_rho", "torus_gap_asymptotic",
    "hypercube_eigenvalues", "hypercube_rho", "static_exponential_eigenvalues", "static_exponential_rho",
    "star_eigenvalues", "star_rho", "chain_eigenvalues", "chain_rho", "complete_rho", "one_peer_step_rho",
    "one_peer_period_product", "p_koloskova", "gossip_rounds_to_eps",
    "dsgd_affine_map", "dsgd_fixed_point", "dsgdm_fixed_point", "qg_dsgdm_fixed_point",
    "qg_one_plus_beta_fixed_point", "error_sq", "consensus_distance_sq", "scale_heterogeneity",
    "gt_zero_init_limit", "dsgd_mean_square_decreasing",
    "tree_distances", "relay_delays", "relaysum_prediction", "relaysum_count_prediction", "chain_mean_delay",
]
