r"""Finite-sum problems with per-sample access: least squares and logistic regression.

Client ``i`` holds ``m_i`` samples :math:`(z_{ij},y_{ij})` and

.. math:: f_i(x)=\frac1{m_i}\sum_{j=1}^{m_i}\phi(z_{ij}^\top x,y_{ij})+\frac\lambda2\|x\|^2 .

Samples are stored padded as ``Z [n, m_max, d]``, ``y [n, m_max]`` with a validity mask, so clients
may hold different numbers of samples (quantity skew) while every evaluation stays one batched
tensor operation. Client weights default to ``q_i = m_i / sum_j m_j`` (every sample counts once).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from .._validation import as_tensor, check_shape
from .base import Problem
from .quadratic import QuadraticProblem


def _pad_data(Z, y, counts, dtype):
    Z = as_tensor(Z, dtype=dtype, name="Z")
    y = as_tensor(y, dtype=dtype, name="y")
    if Z.dim() != 3:
        raise ValueError(f"Z must have shape [n, m, d] (samples of each client, padded), got {list(Z.shape)}")
    n, m, _ = Z.shape
    check_shape(y, (n, m), "y")
    if counts is None:
        counts = torch.full((n,), m, dtype=torch.long)
    else:
        counts = torch.as_tensor(counts, dtype=torch.long)
        check_shape(counts, (n,), "counts")
        if (counts < 1).any() or (counts > m).any():
            raise ValueError(f"counts must lie in [1, {m}] (every client needs at least one sample), got {counts.tolist()}")
    mask = torch.arange(m)[None, :] < counts[:, None]
    Z = Z * mask[..., None]
    y = y * mask
    return Z, y, counts, mask


class FiniteSumMixin:
    """Per-sample access shared by the finite-sum problems.

    Subclasses define ``_dphi(pred, y)``: the derivative of the per-sample loss in the prediction
    ``pred = z^T x``, so that the per-sample gradient is ``_dphi * z + lam * x``.
    """

    Z: torch.Tensor
    y: torch.Tensor
    counts: torch.Tensor
    mask: torch.Tensor
    lam: float

    def _dphi(self, pred, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def per_sample_grads(self, X, idx=None) -> torch.Tensor:
        """Per-sample gradients ``[n_sel, m_max, d]`` at the stacked points (zero on padding rows)."""
        self._check_stacked(X, idx)
        Z, y, mask = self._rows(self.Z, idx), self._rows(self.y, idx), self._rows(self.mask, idx)
        pred = torch.einsum("nmd,nd->nm", Z, X)
        s = self._dphi(pred, y) * mask
        return s[..., None] * Z + self.lam * X[:, None, :] * mask[..., None]

    def minibatch_grad(self, X, samples, idx=None) -> torch.Tensor:
        """Mean gradient over the samples ``samples [n_sel, b]`` (indices into each client's data)."""
        self._check_stacked(X, idx)
        Z, y = self._rows(self.Z, idx), self._rows(self.y, idx)
        Zs = torch.gather(Z, 1, samples[..., None].expand(-1, -1, self.d))
        ys = torch.gather(y, 1, samples)
        s = self._dphi(torch.einsum("nbd,nd->nb", Zs, X), ys)
        return torch.einsum("nb,nbd->nd", s, Zs) / samples.shape[1] + self.lam * X

    def minibatch_variance(self, x, batch_size: int, replace: bool = False) -> torch.Tensor:
        r"""Exact variance :math:`\sigma_i^2(x)=\mathbb E\|g_i-\nabla f_i(x)\|^2` of a size-``b`` minibatch
        gradient of every client at the common point ``x`` (``[n]``).

        With replacement it is :math:`s_i^2/b`; without replacement :math:`\frac{s_i^2}{b}\frac{m_i-b}{m_i-1}`,
        where :math:`s_i^2=\frac1{m_i}\sum_j\|\nabla\ell_{ij}(x)-\nabla f_i(x)\|^2`.
        """
        G = self.per_sample_grads(self.stack(x))
        m = self.counts.to(self.dtype)
        gbar = G.sum(1) / m[:, None]
        dev = (G - gbar[:, None, :]) * self.mask[..., None]
        s2 = (dev * dev).sum((1, 2)) / m
        b = float(batch_size)
        if replace:
            return s2 / b
        corr = torch.where(m > 1, (m - b) / (m - 1).clamp(min=1), torch.zeros_like(m))
        return s2 / b * corr


class LeastSquaresProblem(FiniteSumMixin, QuadraticProblem):
    r"""Least squares :math:`f_i(x)=\frac1{2m_i}\sum_j(z_{ij}^\top x-y_{ij})^2+\frac\lambda2\|x\|^2`.

    It is a quadratic with :math:`A_i=\frac1{m_i}Z_i^\top Z_i+\lambda I` and
    :math:`c_i=\frac1{m_i}Z_i^\top y_i`, so every constant is exact; the per-sample interface gives
    minibatch oracles whose variance is known exactly (:meth:`minibatch_variance`).
    """

    name = "least_squares"

    def __init__(self, Z, y, counts=None, lam: float = 0.0, weights="samples", *, dtype=torch.float64):
        Z, y, counts, mask = _pad_data(Z, y, counts, dtype)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        m = counts.to(dtype)
        A = torch.einsum("nmi,nmj->nij", Z, Z) / m[:, None, None] + lam * torch.eye(Z.shape[2], dtype=dtype)
        c = torch.einsum("nmi,nm->ni", Z, y) / m[:, None]
        e = 0.5 * (y * y).sum(1) / m
        w = counts.to(dtype) if isinstance(weights, str) and weights == "samples" else weights
        super().__init__(A, c, e, w, dtype=dtype)
        self.Z, self.y, self.counts, self.mask, self.lam = Z, y, counts, mask, float(lam)

    def _dphi(self, pred, y):
        return pred - y

    @cached_property
    def L_sample(self) -> float:
        """Largest per-sample smoothness ``max_ij ||z_ij||^2 + lam`` (relevant for single-sample SGD)."""
        return float((self.Z * self.Z).sum(-1).amax()) + self.lam


def random_least_squares(n: int, m: int, d: int, *, noise: float = 0.1, heterogeneity: float = 1.0,
                         counts=None, lam: float = 0.0, seed: int = 0) -> LeastSquaresProblem:
    r"""Seeded least squares: client ``i`` draws :math:`z_{ij}\sim\mathcal N(\mu_i,I)` with
    :math:`\mu_i=h\,\xi_i` (covariate shift), targets :math:`y_{ij}=z_{ij}^\top w_i+\epsilon_{ij}` with
    :math:`w_i=w_0+h\,\omega_i` (concept shift), :math:`\epsilon\sim\mathcal N(0,\text{noise}^2)`. ``h = 0`` gives i.i.d. clients."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(d)
    shift = heterogeneity * rng.standard_normal((n, d))
    W = w0[None] + heterogeneity * rng.standard_normal((n, d))
    Z = rng.standard_normal((n, m, d)) + shift[:, None, :]
    y = np.einsum("nmd,nd->nm", Z, W) + noise * rng.standard_normal((n, m))
    return LeastSquaresProblem(Z, y, counts=counts, lam=lam)


class LogisticRegressionProblem(FiniteSumMixin, Problem):
    r"""Binary logistic regression, labels :math:`y\in\{-1,+1\}`:
    :math:`f_i(x)=\frac1{m_i}\sum_j\log(1+e^{-y_{ij}z_{ij}^\top x})+\frac\lambda2\|x\|^2`.

    Convex; strongly convex with :math:`\mu=\lambda` when ``lam > 0``. ``L`` is exact: the Hessian's
    logistic weights :math:`\sigma(t)(1-\sigma(t))\le\frac14` are all maximal at :math:`x=0`, so
    :math:`L=\max_i\lambda_{\max}(Z_i^\top Z_i/(4m_i))+\lambda`. ``mu`` is the infimum over :math:`x`
    of :math:`\lambda_{\min}(\nabla^2f(x))`, i.e. ``lam``; the local curvature at the optimum is
    ``mu_local``. ``x_star`` is computed by Newton's method to a gradient norm below 1e-12.
    """

    name = "logistic"

    def __init__(self, Z, y, counts=None, lam: float = 1e-2, weights="samples", *, dtype=torch.float64):
        Z, y, counts, mask = _pad_data(Z, y, counts, dtype)
        valid = y[mask]
        if not torch.all((valid == 1) | (valid == -1)):
            raise ValueError("logistic regression labels must be -1 or +1")
        if lam <= 0:
            raise ValueError(f"lam must be > 0 (without a ridge term x_star may not exist), got {lam}")
        from .._validation import normalize_weights
        self.n, self.d, self.dtype = Z.shape[0], Z.shape[2], dtype
        w = counts.to(dtype) if isinstance(weights, str) and weights == "samples" else weights
        self.weights = normalize_weights(w, self.n, dtype=dtype)
        self.Z, self.y, self.counts, self.mask, self.lam = Z, y, counts, mask, float(lam)

    def _dphi(self, pred, y):
        return -y * torch.sigmoid(-y * pred)

    def loss(self, X, idx=None):
        self._check_stacked(X, idx)
        Z, y, mask = self._rows(self.Z, idx), self._rows(self.y, idx), self._rows(self.mask, idx)
        pred = torch.einsum("nmd,nd->nm", Z, X)
        m = self._rows(self.counts, idx).to(self.dtype)
        return (torch.nn.functional.softplus(-y * pred) * mask).sum(1) / m + 0.5 * self.lam * (X * X).sum(1)

    def grad(self, X, idx=None):
        self._check_stacked(X, idx)
        Z, y, mask = self._rows(self.Z, idx), self._rows(self.y, idx), self._rows(self.mask, idx)
        m = self._rows(self.counts, idx).to(self.dtype)
        s = self._dphi(torch.einsum("nmd,nd->nm", Z, X), y) * mask
        return torch.einsum("nm,nmd->nd", s, Z) / m[:, None] + self.lam * X

    def hessians(self, X, idx=None) -> torch.Tensor:
        """Local Hessians ``[n_sel, d, d]`` at the stacked points."""
        self._check_stacked(X, idx)
        Z, mask = self._rows(self.Z, idx), self._rows(self.mask, idx)
        p = torch.sigmoid(torch.einsum("nmd,nd->nm", Z, X))
        w = p * (1 - p) * mask / self._rows(self.counts, idx).to(self.dtype)[:, None]
        return torch.einsum("nm,nmi,nmj->nij", w, Z, Z) + self.lam * torch.eye(self.d, dtype=self.dtype)

    def global_hessian(self, x) -> torch.Tensor:
        return torch.einsum("i,ijk->jk", self.weights, self.hessians(self.stack(x)))

    @cached_property
    def x_star(self) -> torch.Tensor:
        x = torch.zeros(self.d, dtype=self.dtype)
        for _ in range(100):
            g = self.global_grad(x)
            if g.norm() < 1e-13:
                break
            step = torch.linalg.solve(self.global_hessian(x), g)
            t = 1.0  # backtracking keeps Newton globally convergent
            f0 = self.global_loss(x)
            while self.global_loss(x - t * step) > f0 - 0.25 * t * (g @ step) and t > 1e-10:
                t *= 0.5
            x = x - t * step
        gn = self.global_grad(x).norm().item()
        if gn > 1e-12:
            raise RuntimeError(f"logistic regression: Newton's method stopped at gradient norm {gn:.3g} > 1e-12")
        return x

    @cached_property
    def L(self) -> float:
        Hmax = torch.einsum("nmi,nmj->nij", self.Z, self.Z) / (4 * self.counts.to(self.dtype))[:, None, None]
        return torch.linalg.eigvalsh(Hmax)[:, -1].max().item() + self.lam

    @property
    def mu(self) -> float:
        return self.lam

    @cached_property
    def mu_local(self) -> float:
        """Smallest eigenvalue of the global Hessian at ``x_star``."""
        return torch.linalg.eigvalsh(self.global_hessian(self.x_star))[0].item()


def random_logistic(n: int, m: int, d: int, *, heterogeneity: float = 1.0, lam: float = 1e-2,
                    counts=None, seed: int = 0) -> LogisticRegressionProblem:
    r"""Seeded logistic regression: client ``i`` has features :math:`z\sim\mathcal N(h\xi_i,I)` and labels
    drawn from a logistic model with its own weight vector :math:`w_0+h\omega_i`."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(d)
    shift = heterogeneity * rng.standard_normal((n, d))
    W = w0[None] + heterogeneity * rng.standard_normal((n, d))
    Z = rng.standard_normal((n, m, d)) + shift[:, None, :]
    p = 1 / (1 + np.exp(-np.einsum("nmd,nd->nm", Z, W)))
    y = np.where(rng.uniform(size=(n, m)) < p, 1.0, -1.0)
    return LogisticRegressionProblem(Z, y, counts=counts, lam=lam)
