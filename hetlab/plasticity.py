r"""Regularizers against loss of plasticity, and the exact quantities of deep linear networks (issue 8, G1).

**Regularizers** (Lewandowski et al., *Learning continually by spectral regularization*, ICLR 2025,
arXiv 2406.06811; Kumar et al. 2023 for L2-to-init). For a list of weight matrices
:math:`\theta_1, \dots, \theta_L` (for a layer with a bias, the matrix :math:`[W \mid b]` with the bias as
an extra column) and the matrices :math:`\theta^0_l` at initialisation:

* spectral:      :math:`R_{\mathrm{spec}}(\theta) = \sum_l \big(\sigma_1(\theta_l)^k - 1\big)^2`, only the
  *largest* singular value of each layer is pulled to one (the paper's regularizer; exponent ``k``);
* Wasserstein:   :math:`R_{W_2}(\theta) = \sum_l \sum_i \big(\theta_{l,(i)} - \theta^0_{l,(i)}\big)^2`, the squared
  2-Wasserstein distance between the empirical distributions of the entries of :math:`\theta_l` and of
  :math:`\theta^0_l` (both sorted, :math:`(i)` is the i-th smallest), times the number of entries;
* L2 to init:    :math:`R_{\mathrm{init}}(\theta) = \sum_l \lVert\theta_l - \theta^0_l\rVert_F^2`;
* weight decay:  :math:`R_{\mathrm{L2}}(\theta) = \sum_l \lVert\theta_l\rVert_F^2`.

The value functions take torch tensors and are differentiable by autograd; :func:`regularizer_grad`
gives the closed-form gradients (NumPy or torch), which the fast training loops use:

* :math:`\nabla R_{\mathrm{spec}} = 2k(\sigma_1^k - 1)\sigma_1^{k-1}\,u_1 v_1^\top` (top singular pair; the
  function is differentiable where :math:`\sigma_1` is simple);
* :math:`\nabla R_{W_2} = 2(\theta - \theta^0_{\mathrm{sorted}}[\operatorname{rank}\theta])` (each entry is
  pulled to the initial value of the same rank; differentiable where the entries are distinct);
* :math:`\nabla R_{\mathrm{init}} = 2(\theta - \theta^0)`, :math:`\nabla R_{\mathrm{L2}} = 2\theta`.

**Deep linear networks.** :math:`P = W_L \cdots W_1` with the whitened square loss
:math:`\ell(W) = \frac12\lVert P - M\rVert_F^2` (inputs with identity covariance, target map :math:`M`).
With :math:`A_j = W_L\cdots W_{j+1}` and :math:`B_j = W_{j-1}\cdots W_1` (empty products are identities),

* gradient: :math:`\nabla_{W_j}\ell = A_j^\top (P - M) B_j^\top`;
* the Jacobian :math:`J` of :math:`W \mapsto P` gives the *neural tangent kernel* on function space,
  :math:`\mathcal K(E) = J J^\top(E) = \sum_j A_j A_j^\top\, E\, B_j^\top B_j`, a matrix
  :math:`\sum_j (A_jA_j^\top) \otimes (B_j^\top B_j)` on row-major vectorised :math:`E`. It is the Gram
  matrix of the gradients of the outputs :math:`P_{ab}` (one per input direction and output coordinate),
  so its conditioning measures how diverse those gradients are. At a zero-residual point the non-zero
  eigenvalues of the loss Hessian :math:`J^\top J` are those of :math:`\mathcal K`, and gradient descent
  with step :math:`\eta` converges locally at the linear rate :math:`\max_\lambda |1 - \eta\lambda|`
  (:func:`gd_local_rate`);
* for a *balanced* factorisation of :math:`M = U S V^\top`
  (:math:`W_j^\top W_j = W_{j-1}W_{j-1}^\top`) the spectrum of :math:`\mathcal K` depends on the singular
  values of :math:`M` only: :math:`\{\sum_{j=1}^L s_p^{2(L-j)/L} s_q^{2(j-1)/L}\}_{p,q}`
  (:func:`balanced_ntk_eigenvalues`);
* gradient flow conserves the imbalances :math:`D_j = W_{j+1}^\top W_{j+1} - W_j W_j^\top`
  (:func:`imbalance`): moving along the valley :math:`P = M` (e.g. :math:`W_{j+1} \to W_{j+1}/c`,
  :math:`W_j \to cW_j`) changes no loss, and nothing in a loss of :math:`P` alone brings it back;
* bounds (square layers, derived in the chapter): :math:`\lambda_{\max}(\mathcal K) \le \sum_j \prod_{i\ne j}
  \sigma_{\max}(W_i)^2`, :math:`\lambda_{\min}(\mathcal K) \ge \sigma_{\min}(P)^2(\sigma_{\max}(W_1)^{-2} +
  \sigma_{\max}(W_L)^{-2})` and :math:`\sigma_{\min}(W_i) \ge \sigma_{\min}(P)/\prod_{j\ne i}\sigma_{\max}(W_j)`
  (:func:`plasticity_bounds`): if every layer keeps :math:`\sigma_{\max} \le \bar s`, no layer's smallest
  singular value can collapse at a solution and the kernel's condition number stays below
  :math:`L\bar s^{2L}/(2\sigma_{\min}(M)^2)`.

Everything in the deep-linear part is float64 NumPy; the MLP trainer :func:`continual_mlp` is torch.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "REGULARIZERS",
    "spectral_regularizer", "wasserstein_init_regularizer", "l2_init_regularizer", "weight_decay_regularizer",
    "regularizer_value", "regularizer_grad", "augment_bias",
    "end_to_end", "partial_products", "deep_linear_loss", "deep_linear_grads", "ntk_matrix", "ntk_eigenvalues",
    "layer_singular_values", "imbalance", "balanced_factorization", "balanced_ntk_eigenvalues",
    "plasticity_bounds", "gd_local_rate", "kappa_bound", "random_rotation", "even_permutations",
    "continual_deep_linear", "mlp_forward", "mlp_loss_grads", "continual_mlp",
]

REGULARIZERS = ("none", "spectral", "wasserstein", "l2_init", "l2", "spectral_product")


# ------------------------------------------------------------------------------------------------
# regularizers: values (torch, autograd) and closed-form gradients
# ------------------------------------------------------------------------------------------------
def _as_list(weights) -> list:
    if isinstance(weights, (torch.Tensor, np.ndarray)) and weights.ndim == 2:
        return [weights]
    return list(weights)


def _check_pairs(weights, weights0):
    w, w0 = _as_list(weights), _as_list(weights0)
    if len(w) != len(w0):
        raise ValueError(f"got {len(w)} weight matrices but {len(w0)} initial ones; pass one initial matrix per layer")
    for a, b in zip(w, w0):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"a weight of shape {tuple(a.shape)} was paired with an initial weight of shape "
                             f"{tuple(b.shape)}; the layers must match")
    return w, w0


def _check_k(k):
    if not (isinstance(k, (int, float)) and k > 0 and math.isfinite(k)):
        raise ValueError(f"the exponent k must be a positive number, got {k!r}")


def augment_bias(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The matrix ``[W | b]`` (bias as an extra column) on which the paper's regularizer acts."""
    if bias is None:
        return weight
    if bias.shape != weight.shape[:-1]:
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match a weight of shape {tuple(weight.shape)}")
    return torch.cat([weight, bias.unsqueeze(-1)], dim=-1)


def spectral_regularizer(weights, k: float = 2.0, target: float = 1.0) -> torch.Tensor:
    r""":math:`\sum_l (\sigma_1(\theta_l)^k - c^k)^2` over the matrices in ``weights`` (torch, autograd);
    the paper's regularizer has :math:`c = 1` (``target``)."""
    _check_k(k)
    return sum((torch.linalg.matrix_norm(w, ord=2) ** k - target ** k) ** 2 for w in _as_list(weights))


def wasserstein_init_regularizer(weights, weights0) -> torch.Tensor:
    r""":math:`\sum_l \sum_i (\mathrm{sort}(\theta_l)_i - \mathrm{sort}(\theta^0_l)_i)^2` (torch, autograd)."""
    w, w0 = _check_pairs(weights, weights0)
    return sum(((torch.sort(a.reshape(-1)).values - torch.sort(b.reshape(-1)).values) ** 2).sum()
               for a, b in zip(w, w0))


def l2_init_regularizer(weights, weights0) -> torch.Tensor:
    r""":math:`\sum_l \lVert\theta_l - \theta^0_l\rVert_F^2` (torch, autograd)."""
    w, w0 = _check_pairs(weights, weights0)
    return sum(((a - b) ** 2).sum() for a, b in zip(w, w0))


def weight_decay_regularizer(weights) -> torch.Tensor:
    r""":math:`\sum_l \lVert\theta_l\rVert_F^2` (torch, autograd)."""
    return sum((a ** 2).sum() for a in _as_list(weights))


def regularizer_value(kind: str, weights, weights0=None, k: float = 2.0):
    """Value of the regularizer ``kind`` (one of ``REGULARIZERS`` but ``spectral_product``) on torch tensors."""
    if kind == "none":
        return torch.zeros(())
    if kind == "spectral":
        return spectral_regularizer(weights, k)
    if kind == "l2":
        return weight_decay_regularizer(weights)
    if weights0 is None:
        raise ValueError(f"the {kind!r} regularizer needs the initial weights (weights0)")
    if kind == "wasserstein":
        return wasserstein_init_regularizer(weights, weights0)
    if kind == "l2_init":
        return l2_init_regularizer(weights, weights0)
    raise ValueError(f"unknown regularizer {kind!r}; choose one of {REGULARIZERS[:-1]}")


def _top_pair_np(W):
    """Top singular triple of every matrix in a stack ``[..., m, n]`` (NumPy)."""
    u, s, vt = np.linalg.svd(W)
    return u[..., :, 0], s[..., 0], vt[..., 0, :], s


def regularizer_grad(kind: str, W, W0=None, k: float = 2.0, target: float = 1.0):
    """Closed-form gradient of one layer's term of the regularizer ``kind`` with respect to ``W``.

    ``W`` is a NumPy array or torch tensor of shape ``[..., m, n]`` (a stack of matrices is handled
    matrix by matrix); ``W0`` the initial matrices of the same shape (for ``wasserstein`` / ``l2_init``).
    The spectral gradient uses an exact SVD; it is the gradient wherever the top singular value is simple
    (``target`` is its :math:`c`, see :func:`spectral_regularizer`).
    """
    if kind not in REGULARIZERS or kind == "spectral_product":
        raise ValueError(f"unknown regularizer {kind!r}; choose one of {REGULARIZERS[:-1]}")
    is_torch = isinstance(W, torch.Tensor)
    if kind == "none":
        return W * 0
    if kind == "l2":
        return 2 * W
    if kind == "spectral":
        _check_k(k)
        if is_torch:
            u, s, vh = torch.linalg.svd(W)
            u1, s1, v1 = u[..., :, 0], s[..., 0], vh[..., 0, :]
        else:
            u1, s1, v1, _ = _top_pair_np(np.asarray(W, dtype=np.float64))
        c = 2 * k * (s1 ** k - target ** k) * s1 ** (k - 1)
        return c[..., None, None] * u1[..., :, None] * v1[..., None, :]
    if W0 is None:
        raise ValueError(f"the {kind!r} regularizer needs the initial weights W0")
    if tuple(W0.shape) != tuple(W.shape):
        raise ValueError(f"W0 has shape {tuple(W0.shape)} but W has shape {tuple(W.shape)}")
    if kind == "l2_init":
        return 2 * (W - W0)
    if kind == "wasserstein":
        lead = W.shape[:-2]
        flat = W.reshape(*lead, -1)
        if is_torch:
            s0 = torch.sort(W0.reshape(*lead, -1), dim=-1).values
            idx = torch.argsort(flat, dim=-1)
            target = torch.empty_like(flat).scatter_(-1, idx, s0)
        else:
            s0 = np.sort(np.asarray(W0).reshape(*lead, -1), axis=-1)
            idx = np.argsort(flat, axis=-1, kind="stable")
            target = np.empty_like(flat)
            np.put_along_axis(target, idx, s0, axis=-1)
        return 2 * (flat - target).reshape(W.shape)


# ------------------------------------------------------------------------------------------------
# deep linear networks (NumPy float64): W[0] = W_1 (first layer), P = W_L ... W_1
# ------------------------------------------------------------------------------------------------
def _layers(Ws) -> list[np.ndarray]:
    Ws = [np.asarray(W, dtype=np.float64) for W in Ws]
    if not Ws:
        raise ValueError("a deep linear network needs at least one layer")
    for j in range(1, len(Ws)):
        if Ws[j].shape[-1] != Ws[j - 1].shape[-2]:
            raise ValueError(f"layer {j + 1} has shape {Ws[j].shape} but layer {j} outputs {Ws[j - 1].shape[-2]} "
                             f"features; W_(j+1) must have as many columns as W_j has rows")
    return Ws


def partial_products(Ws):
    """``(A, B, P)`` with ``A[j] = W_L ... W_(j+2)`` and ``B[j] = W_j ... W_1`` (0-based layer ``j``; empty
    products are identities) and ``P = W_L ... W_1``. Works on stacks ``[..., m, n]`` as well."""
    Ws = _layers(Ws)
    L = len(Ws)
    lead = Ws[0].shape[:-2]
    B = [np.broadcast_to(np.eye(Ws[0].shape[-1]), lead + (Ws[0].shape[-1],) * 2)]
    for j in range(L - 1):
        B.append(Ws[j] @ B[-1])
    P = Ws[-1] @ B[-1]
    A = [None] * L
    A[L - 1] = np.broadcast_to(np.eye(Ws[-1].shape[-2]), lead + (Ws[-1].shape[-2],) * 2)
    for j in range(L - 2, -1, -1):
        A[j] = A[j + 1] @ Ws[j + 1]
    return A, B, P


def end_to_end(Ws) -> np.ndarray:
    """The end-to-end map ``P = W_L ... W_1``."""
    return partial_products(Ws)[2]


def deep_linear_loss(Ws, M) -> float:
    r""":math:`\frac12\lVert W_L\cdots W_1 - M\rVert_F^2`."""
    E = end_to_end(Ws) - np.asarray(M, dtype=np.float64)
    return 0.5 * float(np.sum(E * E))


def deep_linear_grads(Ws, M) -> list[np.ndarray]:
    r"""Exact gradients :math:`A_j^\top (P - M) B_j^\top` of :func:`deep_linear_loss` (stacks allowed)."""
    A, B, P = partial_products(Ws)
    M = np.asarray(M, dtype=np.float64)
    if M.shape[-2:] != P.shape[-2:]:
        raise ValueError(f"the target has shape {M.shape} but the network maps to shape {P.shape[-2:]}")
    E = P - M
    return [np.swapaxes(A[j], -1, -2) @ E @ np.swapaxes(B[j], -1, -2) for j in range(len(A))]


def ntk_matrix(Ws) -> np.ndarray:
    r""":math:`\mathcal K = \sum_j (A_jA_j^\top)\otimes(B_j^\top B_j)`, the kernel :math:`JJ^\top` on row-major
    vectorised output matrices (size ``(d_out d_in)^2``)."""
    A, B, _ = partial_products(Ws)
    if A[0].ndim != 2:
        raise ValueError("ntk_matrix takes one network (2-D layers), not a stack")
    return sum(np.kron(A[j] @ A[j].T, B[j].T @ B[j]) for j in range(len(A)))


def ntk_eigenvalues(Ws) -> np.ndarray:
    """Eigenvalues of :func:`ntk_matrix` in ascending order."""
    return np.linalg.eigvalsh(ntk_matrix(Ws))


def layer_singular_values(Ws) -> list[np.ndarray]:
    """Singular values of each layer (descending)."""
    return [np.linalg.svd(W, compute_uv=False) for W in _layers(Ws)]


def imbalance(Ws) -> list[np.ndarray]:
    r""":math:`D_j = W_{j+1}^\top W_{j+1} - W_j W_j^\top`, conserved by gradient flow on any loss of ``P``."""
    Ws = _layers(Ws)
    return [np.swapaxes(Ws[j + 1], -1, -2) @ Ws[j + 1] - Ws[j] @ np.swapaxes(Ws[j], -1, -2)
            for j in range(len(Ws) - 1)]


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal ``d x d`` matrix with determinant +1."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    Q = Q * np.sign(np.diag(R))
    if np.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def balanced_factorization(M, L: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    r"""A balanced factorisation of a square ``M = U S V^T`` into ``L`` layers:
    :math:`W_1 = R_1 S^{1/L} V^\top`, :math:`W_j = R_j S^{1/L} R_{j-1}^\top`, :math:`W_L = U S^{1/L} R_{L-1}^\top`
    with rotations :math:`R_j` (random if ``rng`` is given, identities otherwise)."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"balanced_factorization takes a square matrix, got shape {M.shape}")
    if L < 1:
        raise ValueError(f"L must be at least 1, got {L}")
    d = M.shape[0]
    U, s, Vt = np.linalg.svd(M)
    R = [np.eye(d) if rng is None else random_rotation(d, rng) for _ in range(L - 1)]
    S = np.diag(s ** (1.0 / L))
    left = R + [U]
    right = [Vt] + [r.T for r in R]
    return [left[j] @ S @ right[j] for j in range(L)]


def balanced_ntk_eigenvalues(svals, L: int) -> np.ndarray:
    r"""Closed-form spectrum of :math:`\mathcal K` at a balanced factorisation of a square matrix with singular
    values ``svals``: :math:`\sum_{j=1}^L s_p^{2(L-j)/L}s_q^{2(j-1)/L}` for all ``p, q`` (sorted ascending)."""
    s = np.asarray(svals, dtype=np.float64)
    if s.ndim != 1 or np.any(s < 0):
        raise ValueError("svals must be a 1-D array of non-negative singular values")
    lam = sum(np.outer(s ** (2.0 * (L - j) / L), s ** (2.0 * (j - 1) / L)) for j in range(1, L + 1))
    return np.sort(lam.ravel())


def plasticity_bounds(Ws) -> dict:
    r"""The derived bounds for square layers at the point ``Ws`` (see the module docstring):
    ``lam_max_upper``, ``lam_min_lower`` for the kernel :math:`\mathcal K` and ``sigma_min_floor[i]`` for each
    layer, all from the layers' extreme singular values and :math:`\sigma_{\min}(P)`."""
    Ws = _layers(Ws)
    if any(W.ndim != 2 or W.shape[0] != W.shape[1] for W in Ws):
        raise ValueError("plasticity_bounds is derived for square layers (d x d)")
    sv = layer_singular_values(Ws)
    smax = np.array([s[0] for s in sv])
    smin_P = float(np.linalg.svd(end_to_end(Ws), compute_uv=False)[-1])
    L = len(Ws)
    others = np.array([np.prod(np.delete(smax, i)) for i in range(L)])
    return {
        "lam_max_upper": float(np.sum(others ** 2)),
        "lam_min_lower": smin_P ** 2 * (smax[0] ** -2 + (smax[-1] ** -2 if L > 1 else 0.0)),
        "sigma_min_floor": smin_P / others,
        "sigma_max": smax, "sigma_min": np.array([s[-1] for s in sv]), "sigma_min_P": smin_P,
    }


def kappa_bound(L: int, s_bar: float, sigma_min_target: float) -> float:
    r"""Upper bound :math:`L\bar s^{2L}/(2\sigma_{\min}(M)^2)` on the condition number of :math:`\mathcal K` at a
    solution ``P = M`` whose layers all have :math:`\sigma_{\max} \le \bar s` (``L >= 2``)."""
    if L < 2:
        raise ValueError("the bound uses a first and a last layer: L must be at least 2")
    return L * s_bar ** (2 * L) / (2 * sigma_min_target ** 2)


def gd_local_rate(eigenvalues, lr: float, rel_zero: float = 1e-9) -> float:
    r"""Local linear rate :math:`\max|1 - \eta\lambda|` of gradient descent over the eigenvalues larger than
    ``rel_zero * max`` (the zero eigenvalues belong to directions along the set of minimisers)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lr <= 0:
        raise ValueError(f"the step size must be positive, got {lr}")
    lam = lam[lam > rel_zero * lam.max()]
    return float(np.max(np.abs(1.0 - lr * lam)))


def even_permutations(d: int, count: int, rng: np.random.Generator, first_identity: bool = True) -> list[np.ndarray]:
    """``count`` distinct random permutations of ``range(d)`` with sign +1 (the first the identity if asked).

    Even permutations keep ``det(M Pi) = det(M)``: a square deep linear network cannot change the sign of
    ``det P = prod_j det W_j`` without passing through a singular layer, a topological obstacle that has nothing
    to do with plasticity."""
    if d < 1 or count < 1:
        raise ValueError(f"need d >= 1 and count >= 1, got d={d}, count={count}")
    available = math.factorial(d) // 2 if d > 1 else 1
    if count > available:
        raise ValueError(f"there are only {available} even permutations of {d} elements, asked for {count}")
    out = [np.arange(d)] if first_identity else []
    seen = {tuple(p) for p in out}
    while len(out) < count:
        p = rng.permutation(d)
        if tuple(p) not in seen and np.linalg.det(np.eye(d)[:, p]) > 0:
            out.append(p)
            seen.add(tuple(p))
    return out


# ------------------------------------------------------------------------------------------------
# continual learning of a sequence of deep-linear regression tasks
# ------------------------------------------------------------------------------------------------
def continual_deep_linear(targets: Sequence[np.ndarray], W_init, regularizers=("none", "spectral"),
                          strength: float = 0.05, lr: float = 0.05, noise: float = 0.0, drift_steps: int = 0,
                          tol: float = 1e-8, max_iter: int = 20000, k: float = 2.0, seed: int = 0,
                          trace_tasks: Sequence[int] = ()) -> dict:
    r"""Learn the tasks :math:`\ell_t = \frac12\lVert W_L\cdots W_1 - M_t\rVert_F^2` one after the other, once per
    regularizer, from the same initial layers ``W_init`` (list of ``L`` square matrices).

    On each task: (1) *learning*: gradient descent with step ``lr`` on :math:`\ell_t + \beta R` until the
    residual :math:`\lVert P - M_t\rVert_F \le` ``tol`` (its iteration count is the task's learning time;
    ``max_iter`` caps it); (2) *drift*: ``drift_steps`` further steps with isotropic Gaussian noise of standard
    deviation ``noise`` added to every weight (the same draws for every regularizer; a stand-in for the noise of
    stochastic training), after which the next task starts.

    ``strength`` is :math:`\beta`, one number for all runs or a dict ``{regularizer: beta}``.
    ``regularizers`` names one run each (``REGULARIZERS``; ``"spectral_product"`` puts the spectral term on
    the end-to-end map ``P`` instead of on each layer, with the target :math:`c = \sigma_1(M_t)` so that it
    vanishes at every solution of the task and does not bias the fit). Returns a dict with per-run, per-task arrays:
    ``iters`` (``max_iter`` if not reached, ``-1`` if diverged), ``residual``, ``sigma_max``/``sigma_min``
    (``[run, task, layer]``, at the end of the learning phase), ``ntk_min``/``ntk_max``, ``local_rate``
    (:func:`gd_local_rate` of the kernel at that point: the exact local rate of the unregularized loss),
    ``weights`` / ``weights_start`` (the layers at the end / start of each learning phase,
    ``[run, task, L, d, d]``) and, for the tasks in
    ``trace_tasks``, ``traces[(run, task)]``: the residual norms of the learning phase.
    """
    W_init = _layers(W_init)
    L, d = len(W_init), W_init[0].shape[0]
    if any(W.shape != (d, d) for W in W_init):
        raise ValueError("continual_deep_linear uses square layers d x d")
    regularizers = tuple(regularizers)
    if len(set(regularizers)) != len(regularizers):
        raise ValueError(f"each regularizer may appear once, got {regularizers}")
    for r in regularizers:
        if r not in REGULARIZERS:
            raise ValueError(f"unknown regularizer {r!r}; choose from {REGULARIZERS}")
    betas = {r: float(strength[r] if isinstance(strength, dict) else strength) for r in regularizers if r != "none"}
    if lr <= 0 or any(not b >= 0 for b in betas.values()) or noise < 0 or drift_steps < 0 or tol <= 0 or max_iter < 1:
        raise ValueError("need lr > 0, strengths >= 0, noise >= 0, drift_steps >= 0, tol > 0 and max_iter >= 1")
    R, T = len(regularizers), len(targets)
    targets = [np.asarray(M, dtype=np.float64) for M in targets]
    for M in targets:
        if M.shape != (d, d):
            raise ValueError(f"every target must be {d} x {d}, got {M.shape}")
    W0 = np.stack(W_init)
    W = np.broadcast_to(W0, (R,) + W0.shape).copy()
    rng = np.random.default_rng(seed)
    out = {k_: np.zeros((R, T)) for k_ in ("residual", "ntk_min", "ntk_max", "local_rate")}
    out["iters"] = np.zeros((R, T), dtype=np.int64)
    out["sigma_max"], out["sigma_min"] = np.zeros((R, T, L)), np.zeros((R, T, L))
    out["weights"] = np.zeros((R, T, L, d, d))
    out["weights_start"] = np.zeros((R, T, L, d, d))
    out["traces"] = {}
    alive = np.ones(R, dtype=bool)
    rows = {kind: np.array([i for i, r in enumerate(regularizers) if r == kind], dtype=np.int64)
            for kind in set(regularizers) - {"none"}}
    eye = np.broadcast_to(np.eye(d), (R, d, d))

    def total_grad(W, M, c_prod):
        # a run whose weights blew up is marked dead and zeroed (its records become NaN / -1)
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(W).max(axis=(1, 2, 3)) < 1e4)
        alive[bad] = False
        W[~alive] = 0.0
        # partial products of all runs at once: B[j] = W_j..W_1, A[j] = W_L..W_(j+2) (0-based j)
        B = [eye]
        for j in range(L - 1):
            B.append(W[:, j] @ B[-1])
        P = W[:, L - 1] @ B[-1]
        A = [eye] * L
        for j in range(L - 2, -1, -1):
            A[j] = A[j + 1] @ W[:, j + 1]
        E = P - M
        At = [np.swapaxes(a, -1, -2) for a in A]
        Bt = [np.swapaxes(b, -1, -2) for b in B]
        G = np.stack([At[j] @ E @ Bt[j] for j in range(L)], axis=1)
        for kind, idx in rows.items():
            idx = idx[alive[idx]]
            if idx.size == 0 or betas[kind] == 0:
                continue
            if kind == "spectral_product":  # the spectral term on the end-to-end map, target sigma_1(M_t)
                Gp = regularizer_grad("spectral", P[idx], k=k, target=c_prod)
                G[idx] += betas[kind] * np.stack([At[j][idx] @ Gp @ Bt[j][idx] for j in range(L)], axis=1)
            else:
                W0_ = None if kind in ("spectral", "l2") else np.broadcast_to(W0, W[idx].shape)
                G[idx] += betas[kind] * regularizer_grad(kind, W[idx], W0_, k)
        return G, np.sqrt(np.sum(E * E, axis=(1, 2)))

    for t, M in enumerate(targets):
        c_prod = float(np.linalg.svd(M, compute_uv=False)[0])
        done = np.where(alive, -1, -2)
        out["weights_start"][:, t] = W
        traces = {i: [] for i in range(R) if t in trace_tasks}
        for it in range(max_iter + 1):
            G, res = total_grad(W, M, c_prod)
            for i in traces:
                traces[i].append(res[i])
            done[~alive] = -2
            done[(done == -1) & (res <= tol)] = it
            if np.all(done != -1) or it == max_iter:
                break
            W = np.where((done == -1)[:, None, None, None], W - lr * G, W)
        done[done == -1] = max_iter
        out["iters"][:, t] = np.where(done == -2, -1, done)
        out["residual"][:, t] = res
        out["weights"][:, t] = W
        for i in range(R):
            if not alive[i]:
                out["sigma_max"][i, t] = out["sigma_min"][i, t] = np.nan
                out["ntk_min"][i, t] = out["ntk_max"][i, t] = out["local_rate"][i, t] = np.nan
                continue
            sv = np.linalg.svd(W[i], compute_uv=False)
            out["sigma_max"][i, t], out["sigma_min"][i, t] = sv[:, 0], sv[:, -1]
            lam = ntk_eigenvalues(list(W[i]))
            out["ntk_min"][i, t], out["ntk_max"][i, t] = lam[0], lam[-1]
            out["local_rate"][i, t] = gd_local_rate(lam, lr)
        for i in traces:
            out["traces"][(regularizers[i], t)] = np.array(traces[i])
        for _ in range(drift_steps):
            G, _ = total_grad(W, M, c_prod)
            W = W - lr * G + noise * rng.standard_normal((L, d, d))
        total_grad(W, M, c_prod)  # marks runs that blew up during the drift
    out["regularizers"] = regularizers
    return out


# ------------------------------------------------------------------------------------------------
# a small MLP on a sequence of permuted-input tasks (torch, batched over seeds)
# ------------------------------------------------------------------------------------------------
def mlp_forward(Ws, Xb):
    """Batched ReLU MLP: ``Ws[j]`` of shape ``[R, out, in + 1]`` (bias as the last column), ``Xb`` ``[R, in, B]``.
    Returns the logits ``[R, out, B]`` and each layer's input with a row of ones appended."""
    acts, a = [], Xb
    for j, W in enumerate(Ws):
        a = torch.cat([a, torch.ones(a.shape[0], 1, a.shape[2], dtype=a.dtype)], dim=1)
        acts.append(a)
        a = W @ a
        if j < len(Ws) - 1:
            a = torch.relu(a)
    return a, acts


def mlp_loss_grads(Ws, Xb, yb, classes: int):
    """Mean cross-entropy of each network on its minibatch (``yb`` ``[R, B]``) and its gradients with respect to
    every ``Ws[j]``, by hand-written backpropagation (no autograd). Returns ``(loss [R], grads)``."""
    logits, acts = mlp_forward(Ws, Xb)
    logp = torch.log_softmax(logits, dim=1)
    loss = -logp.gather(1, yb[:, None, :]).squeeze(1).mean(1)
    delta = (logp.exp() - torch.nn.functional.one_hot(yb, classes).transpose(1, 2).to(logp.dtype)) / yb.shape[1]
    grads = [None] * len(Ws)
    for j in range(len(Ws) - 1, -1, -1):
        grads[j] = delta @ acts[j].transpose(1, 2)
        if j > 0:
            delta = (Ws[j][:, :, :-1].transpose(1, 2) @ delta) * (acts[j][:, :-1] > 0)
    return loss, grads


def continual_mlp(X, y, perms, regularizers=None, *, hidden=(64, 64), lr: float = 0.05,
                  steps_per_task: int = 300, batch: int = 32, seeds=(0, 1, 2), k: float = 2.0,
                  power_iterations: int = 1, window: int = 50, dtype=torch.float32) -> dict:
    r"""Train ReLU MLPs on the tasks "classify ``X[:, perm]``" for ``perm`` in ``perms``, in order, with
    minibatch SGD on cross-entropy :math:`+\ \beta R`, one network per (regularizer, seed).

    ``regularizers`` maps a name from ``REGULARIZERS`` (but ``spectral_product``) to its strength
    :math:`\beta` (default ``{"none": 0}``). The regularizers act on the matrices ``[W | b]`` (the bias as an
    extra column, as in the paper). All networks are trained together as one batch (weights
    ``[R, out, in + 1]``); He initialisation. The seed fixes the initialisation and the minibatches, so the
    networks of one seed start from the same weights and see the same minibatches whatever their regularizer.
    The spectral term uses ``power_iterations`` steps of the power method per update with persistent singular
    vectors (as in the paper); its gradient is :math:`2k(\sigma^k - 1)\sigma^{k-1}uv^\top`. The other
    gradients are those of :func:`regularizer_grad`.

    Returns ``{name: {metric: array}}`` with, per seed and task (``[S, T]``): ``final_loss`` (mean minibatch
    loss over the last ``window`` steps of the task), ``early_loss`` (over its first ``window`` steps),
    ``train_acc`` (accuracy on all of ``X`` after the task); ``sigma_max`` / ``sigma_min``
    (``[S, T, layers]``, exact singular values of ``[W | b]`` after the task) and ``dead`` (``[S, T]``,
    fraction of hidden ReLU units that are zero on every input after the task).
    """
    regularizers = {"none": 0.0} if regularizers is None else dict(regularizers)
    for name, beta in regularizers.items():
        if name not in REGULARIZERS or name == "spectral_product":
            raise ValueError(f"unknown regularizer {name!r} for the MLP; choose from {REGULARIZERS[:-1]}")
        if not beta >= 0:
            raise ValueError(f"the strength of {name!r} must be >= 0, got {beta}")
    if lr <= 0 or steps_per_task < 1 or batch < 1 or power_iterations < 1 or len(seeds) < 1:
        raise ValueError("need lr > 0, steps_per_task >= 1, batch >= 1, power_iterations >= 1 and a seed")
    _check_k(k)
    if not 1 <= window <= steps_per_task:
        raise ValueError(f"window ({window}) must be between 1 and steps_per_task ({steps_per_task})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batched matrices: one thread is fastest and avoids oversubscription
    try:
        return _continual_mlp(X, y, perms, regularizers, hidden, lr, steps_per_task, batch, tuple(seeds), k,
                              power_iterations, window, dtype)
    finally:
        torch.set_num_threads(threads)


def _continual_mlp(X, y, perms, regularizers, hidden, lr, steps_per_task, batch, seeds, k, power_iterations,
                   window, dtype):
    X = torch.as_tensor(np.asarray(X), dtype=dtype)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be [N, features] and y [N]; got {tuple(X.shape)} and {tuple(y.shape)}")
    N, F = X.shape
    C = int(y.max()) + 1
    names = list(regularizers)
    S, T, K = len(seeds), len(perms), len(names)
    R = K * S                                   # row r = (regularizer r // S, seed r % S)
    sizes = [F, *hidden, C]
    nl = len(sizes) - 1
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    Ws = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        w = torch.stack([torch.randn(b, a, generator=g, dtype=dtype) * math.sqrt(2.0 / a) for g in gens])
        Ws.append(torch.cat([w, torch.zeros(S, b, 1, dtype=dtype)], dim=2).repeat(K, 1, 1))
    W0 = [w.clone() for w in Ws]
    us = [torch.stack([torch.randn(w.shape[1], generator=g, dtype=dtype) for g in gens]).repeat(K, 1) for w in Ws]
    us = [u / u.norm(dim=1, keepdim=True) for u in us]
    rows = {name: slice(i * S, (i + 1) * S) for i, name in enumerate(names)}
    W0_sorted = {name: [torch.sort(w[rows[name]].reshape(S, -1), dim=1).values for w in W0] for name in names}
    metrics = ("final_loss", "early_loss", "train_acc", "dead")
    res = {key: np.zeros((R, T)) for key in metrics}
    res["sigma_max"], res["sigma_min"] = np.zeros((R, T, nl)), np.zeros((R, T, nl))

    for t, perm in enumerate(perms):
        perm = torch.as_tensor(np.asarray(perm), dtype=torch.int64)
        if perm.shape != (F,) or not torch.equal(torch.sort(perm).values, torch.arange(F)):
            raise ValueError(f"each task needs a permutation of the {F} input features")
        Xt = X[:, perm]
        losses = []
        for _ in range(steps_per_task):
            idx = torch.stack([torch.randint(0, N, (batch,), generator=g) for g in gens]).repeat(K, 1)
            loss, grads = mlp_loss_grads(Ws, Xt[idx].transpose(1, 2), y[idx], C)
            losses.append(loss)
            for name in names:
                beta, sl = regularizers[name], rows[name]
                if name == "none" or beta == 0:
                    continue
                for j in range(nl):
                    Wj = Ws[j][sl]
                    if name == "spectral":
                        u = us[j][sl]
                        for _ in range(power_iterations):
                            v = (Wj.transpose(1, 2) @ u[:, :, None]).squeeze(2)
                            v = v / v.norm(dim=1, keepdim=True)
                            u = (Wj @ v[:, :, None]).squeeze(2)
                            u = u / u.norm(dim=1, keepdim=True)
                        us[j][sl] = u
                        sig = (u[:, :, None] * (Wj @ v[:, :, None])).sum((1, 2))
                        c = 2 * k * (sig ** k - 1) * sig ** (k - 1)
                        g = c[:, None, None] * u[:, :, None] * v[:, None, :]
                    elif name == "wasserstein":  # each entry is pulled to the initial value of the same rank
                        flat = Wj.reshape(S, -1)
                        order = torch.from_numpy(np.argsort(flat.numpy(), axis=1))  # NumPy sorts faster here
                        target = torch.empty_like(flat).scatter_(1, order, W0_sorted[name][j])
                        g = 2 * (flat - target).reshape(Wj.shape)
                    else:
                        g = regularizer_grad(name, Wj, W0[j][sl], k)
                    grads[j][sl] += beta * g
            Ws = [W - lr * g for W, g in zip(Ws, grads)]
        L_ = torch.stack(losses).numpy()
        if not np.all(np.isfinite(L_)):
            bad = sorted({names[r // S] for r in np.where(~np.isfinite(L_).all(0))[0]})
            raise FloatingPointError(f"training diverged on task {t} for {bad} (lr {lr}); lower the step size")
        res["early_loss"][:, t] = L_[:window].mean(0)
        res["final_loss"][:, t] = L_[-window:].mean(0)
        with torch.no_grad():
            logits, acts = mlp_forward(Ws, Xt.T.unsqueeze(0).expand(R, F, N))
            res["train_acc"][:, t] = (logits.argmax(1) == y[None]).to(torch.float64).mean(1).numpy()
            alive = [(a[:, :-1] > 0).any(2) for a in acts[1:]]           # hidden units active on some input
            res["dead"][:, t] = 1.0 - torch.cat(alive, 1).to(torch.float64).mean(1).numpy()
            for j, W in enumerate(Ws):
                sv = torch.linalg.svdvals(W.to(torch.float64))
                res["sigma_max"][:, t, j], res["sigma_min"][:, t, j] = sv[:, 0].numpy(), sv[:, -1].numpy()
    return {name: {key: val[rows[name]] for key, val in res.items()} for name in names}
