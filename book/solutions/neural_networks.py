r"""Reference answers to the exercises of the chapter "From quadratics to neural networks".

Every function computes the answer of one exercise from first principles, in plain float64 NumPy or
plain PyTorch autograd, without calling :mod:`hetlab`. The chapter's solution cells call these
functions, and ``tests/test_exercises_neural_networks.py`` checks each answer against an independent
computation with hetlab (its :class:`~hetlab.problems.NNProblem` and memory estimate, its Dirichlet
partitioner sampled many times, its FedAvg round driven to its fixed point, its D-SGD and the exact
stationary moments of its affine map).

===================  ==========================================================================
exercise             functions
===================  ==========================================================================
``nn-ex-params``     :func:`mlp_param_count`, :func:`small_cnn_param_count`, :func:`stacked_state_bytes`
``nn-ex-loop``       :func:`per_client_grads`
``nn-ex-dirichlet``  :func:`same_client_probability`, :func:`effective_clients_per_class`,
                     :func:`empirical_same_client_probability`
``nn-ex-bias``       :func:`logistic_local_grad_hess`, :func:`logistic_optimum`,
                     :func:`local_eigh`, :func:`fedavg_offset_quadratic`,
                     :func:`fedavg_offset_first_order`, :func:`fedavg_jacobian_quadratic`
``nn-ex-consensus``  :func:`dsgd_consensus_quasi_static`
===================  ==========================================================================
"""
from __future__ import annotations

import copy

import numpy as np
import torch

__all__ = [
    "mlp_param_count", "small_cnn_param_count", "stacked_state_bytes", "per_client_grads",
    "same_client_probability", "effective_clients_per_class", "empirical_same_client_probability",
    "logistic_local_grad_hess", "logistic_optimum", "local_eigh", "fedavg_offset_quadratic",
    "fedavg_offset_first_order", "fedavg_jacobian_quadratic", "dsgd_consensus_quasi_static",
]

# ---------------------------------------------------------------------------------- nn-ex-params


def mlp_param_count(sizes) -> int:
    r"""Parameters of a fully connected network with widths ``sizes``: every layer
    :math:`\ell` has a weight matrix :math:`s_{\ell+1}\times s_\ell` and a bias :math:`s_{\ell+1}`,
    so :math:`P=\sum_\ell (s_\ell+1)\,s_{\ell+1}`."""
    sizes = [int(s) for s in sizes]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def small_cnn_param_count(in_channels: int = 1, classes: int = 10, side: int = 8, width: int = 16) -> int:
    r"""Parameters of ``conv3x3(w) - pool - conv3x3(2w) - pool - linear``: the two convolutions have
    :math:`9c_{\rm in}w+w` and :math:`9w\cdot2w+2w` parameters (a 3x3 kernel per input/output channel
    pair plus a bias per output channel); after two 2x2 poolings the feature map has
    :math:`2w(\text{side}/4)^2` entries, and the linear head has that many weights per class plus a bias."""
    conv1 = 9 * in_channels * width + width
    conv2 = 9 * width * 2 * width + 2 * width
    head = (2 * width * (side // 4) ** 2 + 1) * classes
    return conv1 + conv2 + head


def stacked_state_bytes(n: int, P: int, tensors: int = 3, bytes_per_number: int = 4) -> int:
    r"""Bytes of ``tensors`` stacked ``[n, P]`` tensors (models, gradients, control variates, ...)."""
    return int(tensors) * int(n) * int(P) * int(bytes_per_number)

# ------------------------------------------------------------------------------------ nn-ex-loop


def per_client_grads(model: torch.nn.Module, Z, y, counts, X, lam: float = 0.0) -> torch.Tensor:
    r"""Local gradients by the naive route: for every client, a private copy of the module, its row of
    ``X`` copied into the parameters, the mean cross-entropy over the client's ``counts[i]`` real
    samples (padding ignored) plus :math:`\frac\lambda2\|x\|^2`, and ``torch.autograd.grad``.

    ``Z [n, m_max, *input_shape]``, ``y [n, m_max]`` integer labels, ``X [n, P]`` (one parameter vector
    per client, in ``model.parameters()`` order). Returns ``[n, P]``. A Python loop over clients, which is
    what hetlab's stacked paths avoid.
    """
    X = torch.as_tensor(X)
    out = []
    for i in range(X.shape[0]):
        net = copy.deepcopy(model).to(X.dtype)
        torch.nn.utils.vector_to_parameters(X[i].detach().clone(), net.parameters())
        m = int(counts[i])
        logits = net(torch.as_tensor(Z[i, :m], dtype=X.dtype))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[i, :m]).long())
        if lam:
            loss = loss + 0.5 * lam * sum((p * p).sum() for p in net.parameters())
        grads = torch.autograd.grad(loss, list(net.parameters()))
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(out)

# ------------------------------------------------------------------------------- nn-ex-dirichlet


def same_client_probability(alpha: float, n: int) -> float:
    r"""Probability that two samples of one class land on the same client when the class is split by
    :math:`p\sim\mathrm{Dir}(\alpha\mathbf 1_n)`: :math:`\mathbb E\sum_kp_k^2=n\,\mathbb E p_1^2` with
    :math:`\mathbb Ep_1=\frac1n` and :math:`\mathrm{Var}\,p_1=\frac{n-1}{n^2(n\alpha+1)}`, i.e.
    :math:`\frac{1+\alpha}{1+n\alpha}` (from :math:`\frac1n` at :math:`\alpha=\infty` to :math:`1` at
    :math:`\alpha\to0`)."""
    return (1.0 + alpha) / (1.0 + n * alpha)


def effective_clients_per_class(alpha: float, n: int) -> float:
    r"""The number of clients a class is effectively spread over, :math:`1/\mathbb E\sum_kp_k^2=
    \frac{1+n\alpha}{1+\alpha}` (the inverse collision probability)."""
    return 1.0 / same_client_probability(alpha, n)


def empirical_same_client_probability(hist) -> np.ndarray:
    r"""Per class, :math:`\sum_k(H_{kc}/N_c)^2` from a label histogram ``H [n_clients, n_classes]``: the
    probability that two samples of the class drawn independently (with replacement) sit on one client.
    It equals :math:`\sum_kp_{c,k}^2` up to the rounding of :math:`N_cp_{c,k}` (at most
    :math:`2/N_c+n/N_c^2`)."""
    H = np.asarray(hist, dtype=np.float64)
    return ((H / H.sum(0)) ** 2).sum(0)

# ------------------------------------------------------------------------------------ nn-ex-bias


def _theta_to_flat(d: int, C: int) -> np.ndarray:
    """Flat index (``[W (C x d) row-major, b (C)]``, the order of ``Linear.weight, Linear.bias``) of the
    entry (c, k) of the augmented matrix ``[W | b]`` stored row-major as ``c * (d + 1) + k``."""
    idx = np.empty(C * (d + 1), dtype=np.int64)
    for c in range(C):
        idx[c * (d + 1): c * (d + 1) + d] = c * d + np.arange(d)
        idx[c * (d + 1) + d] = C * d + c
    return idx


def logistic_local_grad_hess(Zc, yc, x, lam: float, classes: int):
    r"""Loss, gradient and Hessian of :math:`f_i(x)=\frac1m\sum_j\mathrm{CE}(Wz_j+b,y_j)+\frac\lambda2\|x\|^2`
    (multinomial logistic regression, ``x = [vec(W), b]``), in closed form: with the softmax
    :math:`s_j` and :math:`\tilde z_j=(z_j,1)`,

    .. math:: \nabla_{[W|b]}f_i=\frac1m\sum_j(s_j-e_{y_j})\tilde z_j^\top+\lambda x,\qquad
              \nabla^2f_i=\frac1m\sum_j(\mathrm{diag}\,s_j-s_js_j^\top)\otimes\tilde z_j\tilde z_j^\top+\lambda I.
    """
    Zc = np.asarray(Zc, dtype=np.float64).reshape(len(yc), -1)
    yc = np.asarray(yc, dtype=np.int64)
    m, d = Zc.shape
    C = int(classes)
    x = np.asarray(x, dtype=np.float64)
    W, b = x[:C * d].reshape(C, d), x[C * d:]
    logits = Zc @ W.T + b
    logits -= logits.max(1, keepdims=True)
    S = np.exp(logits)
    S /= S.sum(1, keepdims=True)
    loss = float(-np.log(S[np.arange(m), yc]).mean() + 0.5 * lam * x @ x)
    R = S.copy()
    R[np.arange(m), yc] -= 1.0
    Zt = np.concatenate([Zc, np.ones((m, 1))], axis=1)
    gt = (R.T @ Zt) / m                                             # [C, d+1]
    idx = _theta_to_flat(d, C)
    g = np.empty(C * (d + 1))
    g[idx] = gt.reshape(-1)
    g += lam * x
    F = (S[:, :, None] * Zt[:, None, :]).reshape(m, C * (d + 1))     # rows s_j (x) z~_j
    Ht = -(F.T @ F) / m                                              # sum_j (s_j s_j^T) (x) z~_j z~_j^T
    for c in range(C):                                               # + sum_j diag(s_j) (x) z~_j z~_j^T
        blk = slice(c * (d + 1), (c + 1) * (d + 1))
        Ht[blk, blk] += (Zt * S[:, c:c + 1]).T @ Zt / m
    H = np.empty_like(Ht)
    H[np.ix_(idx, idx)] = Ht
    H += lam * np.eye(len(x))
    return loss, g, H


def logistic_optimum(Z, Y, counts, q, lam: float, classes: int, tol: float = 1e-12, max_iter: int = 50):
    r"""Minimiser of :math:`f=\sum_iq_if_i` by damped Newton steps (backtracking on :math:`f`), with the
    local gradients and Hessians at the minimiser. Returns ``(x_star, G [n, P], H [n, P, P])``."""
    n = len(counts)
    Zf = np.asarray(Z, dtype=np.float64)
    Zf = Zf.reshape(n, Zf.shape[1], -1)
    Y = np.asarray(Y)
    q = np.asarray(q, dtype=np.float64)
    x = np.zeros(classes * (Zf.shape[2] + 1))

    def local(x):
        out = [logistic_local_grad_hess(Zf[i, :counts[i]], Y[i, :counts[i]], x, lam, classes)
               for i in range(n)]
        return (np.array([o[0] for o in out]), np.array([o[1] for o in out]), np.array([o[2] for o in out]))

    def loss(x):
        C, d = classes, Zf.shape[2]
        W, b = x[:C * d].reshape(C, d), x[C * d:]
        total = 0.0
        for i in range(n):
            lg = Zf[i, :counts[i]] @ W.T + b
            mx = lg.max(1, keepdims=True)
            lse = (mx[:, 0] + np.log(np.exp(lg - mx).sum(1)))
            total += q[i] * (lse - lg[np.arange(counts[i]), Y[i, :counts[i]]]).mean()
        return total + 0.5 * lam * x @ x

    for _ in range(max_iter):
        ls, G, H = local(x)
        f, g, h = q @ ls, q @ G, np.einsum("i,ijk->jk", q, H)
        if np.linalg.norm(g) <= tol:
            break
        step = np.linalg.solve(h, g)
        t = 1.0
        while loss(x - t * step) > f - 0.25 * t * g @ step and t > 1e-8:
            t *= 0.5
        x = x - t * step
    else:
        _, G, H = local(x)
    return x, G, H


def local_eigh(H) -> list:
    """Eigendecompositions ``(a, V)`` of the local Hessians (computed once, reused for every ``lr, K``)."""
    return [np.linalg.eigh(0.5 * (A + A.T)) for A in np.asarray(H, dtype=np.float64)]


def _step_polys(eig, lr: float, K: int):
    r"""``(S, Q)`` with :math:`S=\sum_{k<K}(I-\eta A)^k` and :math:`Q=I-(I-\eta A)^K=\eta AS`, from the
    eigendecomposition ``eig = (a, V)`` of the symmetric ``A``."""
    ev, V = eig
    m = 1.0 - lr * ev
    s = sum(m ** k for k in range(int(K)))                         # no division: exact also for tiny lr * a
    return (V * s) @ V.T, (V * (1.0 - m ** K)) @ V.T


def fedavg_jacobian_quadratic(H, q, lr: float, K: int, eig=None) -> np.ndarray:
    r""":math:`\bar Q=\sum_iq_i\big(I-(I-\eta A_i)^K\big)`: the Jacobian of FedAvg's pseudo-gradient
    :math:`\Delta(x)=x-\sum_iq_iy_i^K(x)` on the local quadratic models (used as a preconditioner)."""
    eig = local_eigh(H) if eig is None else eig
    return sum(qi * _step_polys(e, lr, K)[1] for qi, e in zip(q, eig))


def fedavg_offset_quadratic(H, G, q, lr: float, K: int, eig=None) -> np.ndarray:
    r"""FedAvg's fixed point minus :math:`x^\star` when every :math:`f_i` is replaced by its second-order
    model at :math:`x^\star` (Hessian :math:`A_i`, gradient :math:`g_i=\nabla f_i(x^\star)`, i.e. minimiser
    :math:`b_i=x^\star-A_i^{-1}g_i`). The chapter's fixed-point theorem gives
    :math:`\bar Q(x_{\rm FA}-x^\star)=-\sum_iq_iQ_i(x^\star-b_i)=-\sum_iq_i\eta S_ig_i`, using
    :math:`Q_iA_i^{-1}=\eta S_i` (no inverse of :math:`A_i` needed)."""
    eig = local_eigh(H) if eig is None else eig
    Qbar, rhs = 0.0, 0.0
    for qi, e, gi in zip(q, eig, G):
        S, Q = _step_polys(e, lr, K)
        Qbar = Qbar + qi * Q
        rhs = rhs + qi * lr * (S @ gi)
    return -np.linalg.solve(Qbar, rhs)


def fedavg_offset_first_order(H, G, q, lr: float, K: int) -> np.ndarray:
    r"""The first-order bias :math:`\frac{(K-1)\eta}2\bar A^{-1}\sum_iq_iA_ig_i` (the chapter
    "Heterogeneity and local methods", with :math:`A_i^2(x^\star-b_i)=A_ig_i`)."""
    Abar = np.einsum("i,ijk->jk", np.asarray(q), np.asarray(H))
    v = np.einsum("i,ijk,ik->j", np.asarray(q), np.asarray(H), np.asarray(G))
    return 0.5 * (K - 1) * lr * np.linalg.solve(Abar, v)

# ------------------------------------------------------------------------------- nn-ex-consensus


def dsgd_consensus_quasi_static(W, G, H, lr: float, noise_factors=None) -> dict:
    r"""Stationary consensus distance of ATC D-SGD, :math:`X^+=W(X-\eta(G+(X-\mathbf 1\bar x^\top)H+\Xi))`,
    i.e. local gradients :math:`g_i+H(x_i-\bar x)+\xi_i` with a frozen heterogeneity ``G [n, P]``, one
    shared Hessian ``H [P, P]`` and independent noise of covariance :math:`D_i^\top D_i`
    (``noise_factors[i]`` = :math:`D_i`, any number of rows; ``None``: no noise).

    In the eigenbases :math:`W=\sum_j\lambda_ju_ju_j^\top`, :math:`H=\sum_ka_kv_kv_k^\top` every
    disagreement mode :math:`j\ge2` and direction :math:`k` is a scalar AR(1) process
    :math:`z^+=\lambda_j(1-\eta a_k)z-\eta\lambda_j(\hat g_{jk}+\hat\xi_{jk})`, so

    .. math:: \mathbb E\,\Xi^2=\frac1n\sum_{j\ge2}\sum_k\Big[\Big(\frac{\eta\lambda_j}{1-\lambda_j(1-\eta a_k)}\Big)^2
              \hat g_{jk}^2+\frac{\eta^2\lambda_j^2\,\sigma_{jk}^2}{1-\lambda_j^2(1-\eta a_k)^2}\Big],

    :math:`\hat g_{jk}=u_j^\top Gv_k`, :math:`\sigma_{jk}^2=\sum_iu_{ij}^2\,v_k^\top D_i^\top D_iv_k`.
    Returns ``{"total", "heterogeneity", "noise"}``.
    """
    W = np.asarray(W, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    n, P = G.shape
    lamW, U = np.linalg.eigh(0.5 * (W + W.T))
    ev, V = np.linalg.eigh(0.5 * (np.asarray(H, dtype=np.float64) + np.asarray(H, dtype=np.float64).T))
    keep = np.ones(n, dtype=bool)
    keep[np.argmax(np.abs(U.T @ np.ones(n)))] = False             # the consensus mode u = 1/sqrt(n)
    lj = lamW[keep][:, None]                                       # [n-1, 1]
    phi = lj * (1.0 - lr * ev[None, :])                            # [n-1, P]
    if np.abs(phi).max() >= 1.0:
        raise ValueError("|lambda_j (1 - lr a_k)| >= 1 for some mode: no stationary distribution")
    Ghat = (U[:, keep].T @ G) @ V                                  # [n-1, P]
    het = float(((lr * lj / (1.0 - phi)) ** 2 * Ghat ** 2).sum() / n)
    noise = 0.0
    if noise_factors is not None:
        s2 = np.stack([((np.asarray(D, dtype=np.float64).reshape(-1, P) @ V) ** 2).sum(0) for D in noise_factors])
        sig = (U[:, keep] ** 2).T @ s2                             # [n-1, P]
        noise = float((lr ** 2 * lj ** 2 * sig / (1.0 - phi ** 2)).sum() / n)
    return {"total": het + noise, "heterogeneity": het, "noise": noise}
