r"""Exactly invertible encoder-decoders (normalizing flows) and on-manifold latent perturbations.

This module supports the chapter *On-manifold augmentation with an invertible flow* and check G3. The
idea (Yüksel, Stich, Jaggi, Chavdarova 2021) is to perturb a data point *in the latent space* of an
exactly invertible flow and decode the perturbed code: the augmented point then follows the data
distribution learned by the flow instead of leaving it, as an input-space perturbation does.

Flows (all with ``encode(x) -> z``, ``decode(z) -> x``, ``log_prob(x)`` and ``perturb(x, delta)``):

* :class:`AffineFlow` -- :math:`x = \mu + Lz`, :math:`L\in\mathbb R^{D\times k}` of full column rank.
  For :math:`k = D` it is the Gaussian :math:`\mathcal N(\mu, LL^\top)` written as a flow; its
  maximum-likelihood fit is closed form (:meth:`AffineFlow.from_data`: sample mean, Cholesky factor
  of the sample covariance). For data on a :math:`k`-dimensional affine subspace (a degenerate
  Gaussian) the fit keeps the :math:`k` non-zero eigen-directions: the *data manifold* is the affine
  span :math:`\mu + \operatorname{range} L`, the encoder :math:`z = L^+(x - \mu)` is exact on it and
  ``decode`` never leaves it.
* :class:`CouplingFlow` -- a RealNVP-style stack of affine coupling layers (Dinh et al. 2017) in torch
  (float64 by default), trained by maximum likelihood (:meth:`CouplingFlow.fit`); ``decode`` is the
  exact algebraic inverse of ``encode`` (round trip to rounding error), and the log-determinant is
  the sum of the log-scales.
* :class:`ClassAffineFlows` -- one closed-form affine flow per class (and per replica), fitted to the few
  labelled points of the class: with :math:`n_c` points the manifold is (part of) their affine span;
* :class:`IdentityFlow` -- :math:`x = z`: latent perturbations with this flow *are* input-space
  perturbations, so one attack routine serves both.

Latent perturbations :math:`z \mapsto z + \delta`, :math:`\|\delta\|_2 \le \varepsilon`, decoded:

* :func:`latent_adversarial_linear` -- the closed form for a linear score :math:`s(x) = w^\top x + b`
  and labels :math:`y\in\{\pm1\}` with a loss decreasing in the margin :math:`y\,s(x)`: since
  :math:`s(\mu + L(z + \delta)) = s(x) + (L^\top w)^\top\delta`, the worst latent perturbation is
  :math:`\delta^\star = -\varepsilon\,y\,L^\top w / \|L^\top w\|` and it lowers the margin by
  exactly :math:`\varepsilon\|L^\top w\| = \varepsilon\sqrt{w^\top\Sigma w}`, :math:`\Sigma = LL^\top`
  (derived here; the decoded perturbation :math:`L\delta^\star = -\varepsilon y\Sigma w/\sqrt{w^\top
  \Sigma w}` does not depend on which square root :math:`L` of :math:`\Sigma` the flow uses);
* :func:`latent_pgd` -- projected (normalised-)gradient ascent in latent space for any classifier
  and any flow (for :class:`IdentityFlow` this is the usual L2 PGD attack of Madry et al.);
* :func:`random_latent_perturbation` -- a uniformly random direction of norm :math:`\varepsilon`;
* :func:`calibrate_eps` -- the latent radius whose random perturbations have a given mean Euclidean size
  in data space (to compare encoders at the same budget).

Training helpers for many independent replicas at once (one per seed, stacked on a leading axis):
:func:`init_mlp`, :func:`mlp_logits`, :func:`cross_entropy`, :func:`train_classifier`,
:func:`accuracy` and the augmenters :func:`latent_adversarial_augmenter`,
:func:`latent_random_augmenter`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._validation import DEFAULT_DTYPE, as_tensor

__all__ = ["AffineFlow", "ClassAffineFlows", "CouplingFlow", "IdentityFlow", "latent_adversarial_linear",
           "linear_margin_drop", "logistic_loss", "latent_pgd", "random_latent_perturbation", "calibrate_eps",
           "distance_to_subspace", "init_mlp", "mlp_logits", "cross_entropy", "accuracy", "train_classifier",
           "latent_adversarial_augmenter", "latent_random_augmenter", "gaussian_mixture_2d"]

_LOG2PI = math.log(2 * math.pi)


def _std_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * _LOG2PI


def distance_to_subspace(x, mu, basis) -> torch.Tensor:
    r"""Euclidean distance of the rows of ``x`` (``[..., D]``) to the affine subspace
    :math:`\mu + \operatorname{range}(\text{basis})` (``basis`` ``[D, k]``, any full-column-rank spanning set)."""
    x, mu, basis = as_tensor(x), as_tensor(mu), as_tensor(basis)
    Q, _ = torch.linalg.qr(basis.to(x.dtype))
    r = x - mu.to(x.dtype)
    return torch.linalg.vector_norm(r - (r @ Q) @ Q.T, dim=-1)


# ----------------------------------------------------------------------------------------- flows


class IdentityFlow:
    """The trivial flow :math:`x = z`; latent perturbations with it are input-space perturbations."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def perturb(self, x: torch.Tensor, delta: torch.Tensor, z=None) -> torch.Tensor:
        return x + delta


class AffineFlow:
    r"""The affine flow :math:`x = \mu + Lz` with :math:`L\in\mathbb R^{D\times k}` of full column rank.

    * ``decode(z) = mu + z @ L.T`` (any leading dimensions);
    * ``encode(x) = L^+ (x - mu)``, computed from the thin QR factorisation :math:`L = QR`
      (:math:`z = R^{-1}Q^\top(x-\mu)`). It inverts ``decode`` exactly: ``encode(decode(z)) = z`` for
      every :math:`z`, and ``decode(encode(x)) = x`` for every :math:`x` on the manifold
      :math:`\mu + \operatorname{range}L` (for other :math:`x` it returns the orthogonal projection);
    * ``log_prob(x)`` :math:`= \log\mathcal N(z; 0, I_k) - \log\operatorname{vol}L` with
      :math:`\log\operatorname{vol}L = \frac12\log\det(L^\top L)` (:math:`= \log|\det L|` for
      :math:`k = D`): the density of :math:`x` with respect to the :math:`k`-dimensional volume on the
      manifold, evaluated at the projection of :math:`x` (use :meth:`distance_to_manifold` to see how
      far :math:`x` is from it);
    * ``perturb(x, delta) = x + delta @ L.T``, which equals ``decode(encode(x) + delta)`` for
      :math:`x` on the manifold and keeps the off-manifold residual of other points.
    """

    def __init__(self, mu, L, *, dtype=DEFAULT_DTYPE):
        mu = as_tensor(mu, dtype=dtype, name="mu")
        L = as_tensor(L, dtype=dtype, name="L")
        if mu.dim() != 1:
            raise ValueError(f"mu must be a vector [D], got shape {list(mu.shape)}")
        if L.dim() != 2 or L.shape[0] != mu.shape[0] or L.shape[1] > L.shape[0] or L.shape[1] < 1:
            raise ValueError(f"L must have shape [D, k] with 1 <= k <= D = {mu.shape[0]}, got {list(L.shape)}")
        if not (torch.isfinite(mu).all() and torch.isfinite(L).all()):
            raise ValueError("mu and L must be finite")
        Q, R = torch.linalg.qr(L)
        diag = R.diagonal().abs()
        if diag.min() <= 1e-13 * max(float(diag.max()), 1e-300):
            raise ValueError("L must have full column rank (the flow would not be invertible); drop the null "
                             "directions, e.g. with AffineFlow.from_data(X, rank=k)")
        self.mu, self.L, self._Q, self._R = mu, L, Q, R
        self.log_vol = float(torch.log(diag).sum())

    @property
    def D(self) -> int:
        return self.L.shape[0]

    @property
    def k(self) -> int:
        return self.L.shape[1]

    @property
    def covariance(self) -> torch.Tensor:
        r""":math:`\Sigma = LL^\top` (rank :math:`k`)."""
        return self.L @ self.L.T

    @property
    def projector(self) -> torch.Tensor:
        """The orthogonal projector ``[D, D]`` onto range(L), the tangent space of the manifold."""
        return self._Q @ self._Q.T

    @classmethod
    def from_data(cls, X, *, rank: int | None = None, rel_tol: float = 1e-10, factor: str = "cholesky",
                  dtype=DEFAULT_DTYPE) -> "AffineFlow":
        r"""The maximum-likelihood affine flow of the rows of ``X`` ``[N, D]``, in closed form.

        :math:`\mu = \frac1N\sum_i x_i`, :math:`\Sigma = \frac1N\sum_i (x_i-\mu)(x_i-\mu)^\top` (the
        MLE, divisor :math:`N`). ``factor="cholesky"`` and a covariance of full rank give the lower
        triangular :math:`L` with :math:`LL^\top = \Sigma`. Otherwise (``factor="eigh"``, a rank-deficient
        covariance, or an explicit ``rank``) :math:`L = V_k\Lambda_k^{1/2}` from the eigenvalues
        :math:`\lambda_1 \ge \dots` of :math:`\Sigma`, keeping ``rank`` of them, or, when ``rank`` is
        ``None``, those above ``rel_tol * lambda_1``: data on a :math:`k`-dimensional affine subspace
        gives exactly :math:`k` of them and the manifold is its affine span.
        """
        X = as_tensor(X, dtype=dtype, name="X")
        if X.dim() != 2 or X.shape[0] < 2:
            raise ValueError(f"X must have shape [N, D] with N >= 2 samples, got {list(X.shape)}")
        if factor not in ("cholesky", "eigh"):
            raise ValueError(f"factor must be 'cholesky' or 'eigh', got {factor!r}")
        N, D = X.shape
        mu = X.mean(0)
        Xc = X - mu
        S = Xc.T @ Xc / N
        S = 0.5 * (S + S.T)
        lam, V = torch.linalg.eigh(S)
        lam, V = lam.flip(0), V.flip(1)
        if rank is None:
            k = int((lam > rel_tol * lam[0]).sum())
        else:
            if not 1 <= int(rank) <= D:
                raise ValueError(f"rank must be in 1..{D}, got {rank}")
            k = int(rank)
            if lam[k - 1] <= rel_tol * lam[0]:
                raise ValueError(f"the sample covariance has only {int((lam > rel_tol * lam[0]).sum())} non-zero "
                                 f"eigenvalues (relative tolerance {rel_tol:g}); rank={k} is too large")
        if k == D and factor == "cholesky":
            return cls(mu, torch.linalg.cholesky(S), dtype=dtype)
        return cls(mu, V[:, :k] * lam[:k].sqrt(), dtype=dtype)

    def encode(self, x) -> torch.Tensor:
        x = as_tensor(x, dtype=self.L.dtype, name="x")
        r = (x - self.mu) @ self._Q                                   # [..., k]
        flat = r.reshape(-1, self.k).T                                # one triangular solve for all rows
        return torch.linalg.solve_triangular(self._R, flat, upper=True).T.reshape(r.shape)

    def decode(self, z) -> torch.Tensor:
        return self.mu + as_tensor(z, dtype=self.L.dtype, name="z") @ self.L.T

    def perturb(self, x, delta, z=None) -> torch.Tensor:
        return x + delta @ self.L.T

    def log_prob(self, x) -> torch.Tensor:
        return _std_normal_logpdf(self.encode(x)) - self.log_vol

    def distance_to_manifold(self, x) -> torch.Tensor:
        r"""Distance of ``x`` ``[..., D]`` to the manifold :math:`\mu + \operatorname{range}L` (0 if :math:`k = D`)."""
        r = as_tensor(x, dtype=self.L.dtype) - self.mu
        return torch.linalg.vector_norm(r - (r @ self._Q) @ self._Q.T, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.k, generator=generator, dtype=self.L.dtype)
        return self.decode(z)


class _Coupling(nn.Module):
    r"""One affine coupling layer (normalising direction :math:`x\to y`):
    :math:`y = m\odot x + (1-m)\odot\big(x\odot e^{s(m\odot x)} + t(m\odot x)\big)` with
    :math:`s = b\tanh(\tilde s / b)` bounded by ``scale_bound`` :math:`b`; :math:`\log|\det J| = \sum (1-m)\odot s`."""

    def __init__(self, mask: torch.Tensor, hidden: int, scale_bound: float):
        super().__init__()
        D = mask.numel()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * D))
        nn.init.zeros_(self.net[-1].weight)   # identity at initialisation
        nn.init.zeros_(self.net[-1].bias)
        self.scale_bound = float(scale_bound)

    def _st(self, xm):
        s_raw, t = self.net(xm).chunk(2, dim=-1)
        s = self.scale_bound * torch.tanh(s_raw / self.scale_bound)
        free = 1 - self.mask
        return s * free, t * free

    def forward(self, x):
        xm = x * self.mask
        s, t = self._st(xm)
        return xm + (1 - self.mask) * (x * torch.exp(s) + t), s.sum(-1)

    def inverse(self, y):
        ym = y * self.mask
        s, t = self._st(ym)
        return ym + (1 - self.mask) * ((y - t) * torch.exp(-s))


class CouplingFlow(nn.Module):
    r"""A RealNVP-style flow: an optional fixed affine standardisation :math:`u = L^{-1}(x-\mu)` (an
    :class:`AffineFlow` of full rank, e.g. fitted to the data in closed form) followed by
    ``n_layers`` affine coupling layers with alternating masks (even/odd coordinates).

    ``encode(x)`` (normalising direction) returns :math:`z`; ``encode_with_logdet`` also returns
    :math:`\log|\det\partial z/\partial x|`; ``decode`` is the exact algebraic inverse;
    ``log_prob(x) = log N(z; 0, I) + logdet``. float64 by default, as every exact check of hetlab.
    The last layer of each conditioner starts at zero, so an untrained flow is the standardisation.
    """

    def __init__(self, dim: int, n_layers: int = 6, hidden: int = 32, *, scale_bound: float = 2.0,
                 base: AffineFlow | None = None, seed: int = 0, dtype=DEFAULT_DTYPE):
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling flow needs dim >= 2 (one half conditions the other), got {dim}")
        if n_layers < 1 or hidden < 1:
            raise ValueError(f"n_layers and hidden must be positive, got {n_layers}, {hidden}")
        if base is not None and (base.D != dim or base.k != dim):
            raise ValueError(f"base must be a full-rank AffineFlow on R^{dim}, got D={base.D}, k={base.k}")
        even = (torch.arange(dim) % 2 == 0).to(dtype)
        self.layers = nn.ModuleList(_Coupling(even if i % 2 == 0 else 1 - even, hidden, scale_bound)
                                    for i in range(n_layers))
        self.to(dtype)
        gen = torch.Generator().manual_seed(seed)   # seeded initialisation, independent of the global RNG
        with torch.no_grad():
            for layer in self.layers:
                for lin in (layer.net[0], layer.net[2]):
                    bound = 1.0 / math.sqrt(lin.in_features)
                    lin.weight.copy_((torch.rand(lin.weight.shape, generator=gen, dtype=dtype) * 2 - 1) * bound)
                    lin.bias.copy_((torch.rand(lin.bias.shape, generator=gen, dtype=dtype) * 2 - 1) * bound)
        self.dim, self.base = dim, base

    @property
    def dtype(self):
        return self.layers[0].mask.dtype

    def encode_with_logdet(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        x = as_tensor(x, dtype=self.dtype, name="x")
        if self.base is not None:
            u, logdet = self.base.encode(x), torch.full(x.shape[:-1], -self.base.log_vol, dtype=self.dtype)
        else:
            u, logdet = x, torch.zeros(x.shape[:-1], dtype=self.dtype)
        for layer in self.layers:
            u, ld = layer(u)
            logdet = logdet + ld
        return u, logdet

    def encode(self, x) -> torch.Tensor:
        return self.encode_with_logdet(x)[0]

    forward = encode

    def decode(self, z) -> torch.Tensor:
        u = as_tensor(z, dtype=self.dtype, name="z")
        for layer in reversed(self.layers):
            u = layer.inverse(u)
        return self.base.decode(u) if self.base is not None else u

    def perturb(self, x, delta, z=None) -> torch.Tensor:
        z = self.encode(x) if z is None else z
        return self.decode(z + delta)

    def log_prob(self, x) -> torch.Tensor:
        z, logdet = self.encode_with_logdet(x)
        return _std_normal_logpdf(z) + logdet

    def fit(self, X, steps: int = 500, lr: float = 5e-3, batch: int | None = None, seed: int = 0) -> list[float]:
        """Maximum likelihood with Adam (full batch unless ``batch``); returns the mean NLL per step."""
        X = as_tensor(X, dtype=self.dtype, name="X")
        if X.dim() != 2 or X.shape[1] != self.dim:
            raise ValueError(f"X must have shape [N, {self.dim}], got {list(X.shape)}")
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        hist = []
        for _ in range(steps):
            xb = X if batch is None else X[torch.randint(0, X.shape[0], (batch,), generator=gen)]
            loss = -self.log_prob(xb).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the flow's NLL became {float(loss)} after {len(hist)} steps; lower lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist.append(loss.item())
        return hist

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.decode(torch.randn(n, self.dim, generator=generator, dtype=self.dtype))


class ClassAffineFlows:
    r"""Class-conditional affine flows for stacked training sets, fitted in closed form.

    For training points ``X [R, n, D]`` with labels ``y [R, n]`` (``R`` replicas, e.g. one per seed) and every
    class :math:`c` with at least two points in replica :math:`r`, :meth:`AffineFlow.from_data` with
    ``rank`` ``k`` and ``factor="eigh"`` gives :math:`x = \mu_{rc} + L_{rc} z`. With few points per class the
    covariance has rank at most :math:`n_c - 1`, and the manifold of class :math:`c` is the affine span of its
    points (its top-``k`` principal part). The flow is bound to the points it was built from:
    ``encode(X)`` and ``perturb(X, delta)`` use each point's own class flow; ``delta`` is ``[R, n, k]`` (leading
    dimensions, e.g. several draws, are allowed before ``R``).
    ``rank=None`` takes the largest ``k`` that every class of every replica supports.
    """

    def __init__(self, X, y, n_classes: int, rank: int | None = None, rel_tol: float = 1e-10):
        X = as_tensor(X, name="X")
        if X.dim() != 3 or y.shape != X.shape[:2]:
            raise ValueError(f"X must be [R, n, D] and y [R, n], got {list(X.shape)}, {list(y.shape)}")
        R, n, D = X.shape
        counts = torch.stack([(y == c).sum(1) for c in range(n_classes)], 1)      # [R, C]
        if int(counts.min()) < 2:
            raise ValueError("every class needs at least two points in every replica to define an affine flow "
                             f"(smallest count: {int(counts.min())})")
        if rank is None:
            rank = D
            for r in range(R):
                for c in range(n_classes):
                    Xc = X[r][y[r] == c]
                    lam = torch.linalg.eigvalsh(torch.cov(Xc.T, correction=0))
                    rank = min(rank, int((lam > rel_tol * lam[-1]).sum()))
        self.k = int(rank)
        self.mu = torch.zeros(R, n_classes, D, dtype=X.dtype)
        self.L = torch.zeros(R, n_classes, D, self.k, dtype=X.dtype)
        self.Lpinv = torch.zeros(R, n_classes, self.k, D, dtype=X.dtype)
        for r in range(R):
            for c in range(n_classes):
                f = AffineFlow.from_data(X[r][y[r] == c], rank=self.k, factor="eigh", rel_tol=rel_tol)
                self.mu[r, c], self.L[r, c] = f.mu, f.L
                self.Lpinv[r, c] = torch.linalg.pinv(f.L)
        self.y, self.shape = y, X.shape

    def _check(self, x):
        if tuple(x.shape[-3:]) != tuple(self.shape):
            raise ValueError(f"ClassAffineFlows is bound to its training points of shape {list(self.shape)} "
                             f"(with optional leading dimensions), got {list(x.shape)}")

    def _gather(self, T):
        return T[torch.arange(self.shape[0])[:, None], self.y]                     # [R, n, ...]

    def encode(self, x) -> torch.Tensor:
        self._check(x)
        return torch.einsum("rnkd,...rnd->...rnk", self._gather(self.Lpinv), x - self._gather(self.mu))

    def decode(self, z) -> torch.Tensor:
        return self._gather(self.mu) + torch.einsum("rndk,...rnk->...rnd", self._gather(self.L), z)

    def perturb(self, x, delta, z=None) -> torch.Tensor:
        self._check(x)
        return x + torch.einsum("rndk,...rnk->...rnd", self._gather(self.L), delta)


# ---------------------------------------------------------------------------- latent perturbations


def logistic_loss(margin: torch.Tensor) -> torch.Tensor:
    r"""The logistic loss :math:`\log(1 + e^{-m})` of the margin :math:`m = y\,s(x)` (decreasing in :math:`m`)."""
    return nn.functional.softplus(-margin)


def latent_adversarial_linear(flow: AffineFlow, y, w, eps: float) -> torch.Tensor:
    r"""Closed-form worst latent perturbation for the linear score :math:`w^\top x + b` and labels
    ``y`` in {-1, +1}: :math:`\delta^\star = -\varepsilon\,y\,L^\top w/\|L^\top w\|` (``[..., k]``), for any
    loss that decreases in the margin :math:`y\,s(x)`."""
    w = as_tensor(w, dtype=flow.L.dtype, name="w")
    y = as_tensor(y, dtype=flow.L.dtype, name="y")
    if w.shape != (flow.D,):
        raise ValueError(f"w must have shape [{flow.D}], got {list(w.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    if not torch.all(y.abs() == 1):
        raise ValueError("labels y must be -1 or +1")
    a = flow.L.T @ w
    na = torch.linalg.vector_norm(a)
    if na == 0:
        raise ValueError("L^T w = 0: the classifier is constant on the manifold, no latent direction changes it")
    return -eps * y.unsqueeze(-1) * (a / na)


def linear_margin_drop(flow: AffineFlow, w, eps: float) -> float:
    r"""The margin decrease :math:`\varepsilon\|L^\top w\| = \varepsilon\sqrt{w^\top\Sigma w}` caused by the
    worst latent perturbation of norm :math:`\varepsilon` (independent of the point and of the label)."""
    w = as_tensor(w, dtype=flow.L.dtype, name="w")
    return float(eps * torch.linalg.vector_norm(flow.L.T @ w))


def random_latent_perturbation(shape, eps: float, generator: torch.Generator | None = None,
                               dtype=DEFAULT_DTYPE) -> torch.Tensor:
    """Perturbations of norm exactly ``eps`` along uniformly random directions (``shape = [..., k]``)."""
    g = torch.randn(*shape, generator=generator, dtype=dtype)
    return eps * g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)


def _project_ball(delta: torch.Tensor, eps) -> torch.Tensor:
    n = torch.linalg.vector_norm(delta, dim=-1, keepdim=True)
    return delta * torch.clamp(eps / torch.clamp(n, min=1e-300), max=1.0)


def _radius(eps, batch_shape, dtype):
    """``eps`` as a float, or as a tensor ``[..., 1]`` when one radius per sample is given."""
    if isinstance(eps, torch.Tensor) and eps.dim() > 0:
        e = eps.to(dtype)
        if e.shape != batch_shape:
            raise ValueError(f"per-sample eps must have shape {list(batch_shape)}, got {list(e.shape)}")
        if (e < 0).any():
            raise ValueError("eps must be non-negative")
        return e.unsqueeze(-1)
    e = float(eps)
    if e < 0:
        raise ValueError(f"eps must be non-negative, got {e}")
    return e


def latent_pgd(flow, loss_fn: Callable, x, y, eps: float, steps: int = 10, step_size: float | None = None,
               delta0=None, return_history: bool = False):
    r"""Projected gradient ascent of the per-sample loss in latent space.

    Maximises ``loss_fn(flow.perturb(x, delta), y)`` (a tensor of per-sample losses, shape ``x.shape[:-1]``)
    over :math:`\|\delta\|_2 \le \varepsilon` for every sample separately (``eps`` a float, or a tensor of
    per-sample radii of shape ``x.shape[:-1]``), by
    :math:`\delta \leftarrow \Pi_{\varepsilon}\big(\delta + \alpha\, g/\|g\|\big)`, :math:`g = \nabla_\delta`
    loss (normalised L2 steps, the L2 version of the PGD attack of Madry et al.). ``step_size`` :math:`\alpha`
    defaults to :math:`\varepsilon/2`; ``delta0`` (default 0) is the start. With :class:`IdentityFlow`
    this is input-space PGD. Returns ``(x_adv, delta)`` (detached), plus the per-step losses if asked.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    x = x.detach()
    with torch.no_grad():
        z = flow.encode(x)
    eps = _radius(eps, z.shape[:-1], z.dtype)
    alpha = 0.5 * eps if step_size is None else float(step_size)
    delta = torch.zeros_like(z) if delta0 is None else _project_ball(as_tensor(delta0, dtype=z.dtype).clone(), eps)
    hist = []
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(flow.perturb(x, delta, z), y)
        (g,) = torch.autograd.grad(loss.sum(), delta)
        hist.append(loss.detach())
        with torch.no_grad():
            gn = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
            delta = _project_ball(delta + alpha * g / torch.clamp(gn, min=1e-300), eps)
    with torch.no_grad():
        x_adv = flow.perturb(x, delta, z)
        if return_history:
            hist.append(loss_fn(x_adv, y))
            return x_adv, delta, torch.stack(hist)
    return x_adv, delta


def calibrate_eps(flow, X, r: float, generator: torch.Generator, iters: int = 6, draws: int = 8) -> float:
    r"""The latent radius :math:`\varepsilon` whose random perturbations move the points ``X`` by ``r`` on average in
    data space: :math:`\mathbb E\,\|\text{perturb}(x, \delta) - x\| = r` over the rows of ``X`` and ``draws``
    uniformly random directions of norm :math:`\varepsilon` (fixed draws, fixed-point iteration
    :math:`\varepsilon \leftarrow \varepsilon\, r / m(\varepsilon)`; exact after one step for affine flows). Used to
    compare flows at the same Euclidean budget."""
    if r <= 0:
        raise ValueError(f"r must be positive, got {r}")
    with torch.no_grad():
        z = flow.encode(X)
        U = random_latent_perturbation((draws, *z.shape), 1.0, generator, z.dtype)
        Xd = X.expand(draws, *X.shape)
        zd = z.expand(draws, *z.shape)
        eps = 1.0
        for _ in range(iters):
            m = float(torch.linalg.vector_norm(flow.perturb(Xd, eps * U, zd) - Xd, dim=-1).mean())
            if m <= 0:
                raise ValueError("the flow's perturbations do not move the points (zero Jacobian?)")
            eps *= r / m
    return eps


# ------------------------------------------------------------------------ replica training helpers


def init_mlp(sizes, replicas: int, seed: int = 0, dtype=DEFAULT_DTYPE) -> list[torch.Tensor]:
    """Parameters of ``replicas`` independent tanh MLPs (widths ``sizes``, input first, classes last),
    stacked on a leading axis: ``[W1 [R, d0, d1], b1 [R, d1], W2, b2, ...]``, PyTorch's default
    uniform initialisation (bound ``1/sqrt(fan_in)``) from a seeded generator."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1 or replicas < 1:
        raise ValueError(f"need at least input and output widths (positive) and replicas >= 1, got {sizes}, {replicas}")
    gen = torch.Generator().manual_seed(seed)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(a)
        params.append(((torch.rand(replicas, a, b, generator=gen, dtype=dtype) * 2 - 1) * bound).requires_grad_())
        params.append(((torch.rand(replicas, b, generator=gen, dtype=dtype) * 2 - 1) * bound).requires_grad_())
    return params


def mlp_logits(params, X: torch.Tensor) -> torch.Tensor:
    """Logits ``[R, n, C]`` of the stacked MLPs on ``X [R, n, D]`` (tanh hidden layers)."""
    h = X
    for i in range(0, len(params), 2):
        h = torch.baddbmm(params[i + 1].unsqueeze(1), h, params[i])
        if i + 2 < len(params):
            h = torch.tanh(h)
    return h


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``[R, n]`` of logits ``[R, n, C]`` and integer labels ``[R, n]``."""
    return -torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def accuracy(params, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy per replica ``[R]`` (``X`` ``[R, n, D]`` or ``[n, D]`` shared by all replicas)."""
    with torch.no_grad():
        if X.dim() == 2:
            X = X.expand(params[0].shape[0], *X.shape)
            y = y.expand(params[0].shape[0], *y.shape)
        return (mlp_logits(params, X).argmax(-1) == y).to(X.dtype).mean(-1)


def train_classifier(params, X: torch.Tensor, y: torch.Tensor, *, steps: int = 300, lr: float = 1e-2,
                     weight_decay: float = 0.0, augment: Callable | None = None, aug_weight: float = 1.0):
    r"""Full-batch Adam on the replicas' mean cross-entropy (replicas are independent: Adam acts per entry).

    With ``augment(params, X, y) -> X_aug`` the loss is
    :math:`\frac{1}{1+\lambda}\big(\mathrm{CE}(X) + \lambda\,\mathrm{CE}(X_{\rm aug})\big)`, :math:`\lambda` =
    ``aug_weight``, with ``X_aug`` regenerated at every step against the current parameters (adaptive
    augmentation). ``weight_decay`` adds :math:`\frac{\text{wd}}2\|\theta\|^2`. Returns the trained parameters.
    """
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = cross_entropy(mlp_logits(params, X), y).mean(-1)
        if augment is not None:
            X_aug = augment(params, X, y).detach()
            loss = (loss + aug_weight * cross_entropy(mlp_logits(params, X_aug), y).mean(-1)) / (1 + aug_weight)
        total = loss.sum()
        if weight_decay:
            total = total + 0.5 * weight_decay * sum((p * p).sum() for p in params[0::2])
        opt.zero_grad()
        total.backward()
        opt.step()
    return params


def latent_adversarial_augmenter(flow, eps: float, steps: int = 3, step_size: float | None = None) -> Callable:
    """``augment(params, X, y)`` for :func:`train_classifier`: latent PGD against the current classifiers
    (input-space PGD with :class:`IdentityFlow`)."""
    def augment(params, X, y):
        frozen = [p.detach() for p in params]
        return latent_pgd(flow, lambda xa, yy: cross_entropy(mlp_logits(frozen, xa), yy), X, y, eps, steps,
                          step_size)[0]
    return augment


def latent_random_augmenter(flow, eps: float, generator: torch.Generator) -> Callable:
    """``augment(params, X, y)``: decoded uniformly random latent perturbations of norm ``eps`` (fresh each step)."""
    def augment(params, X, y):
        with torch.no_grad():
            z = flow.encode(X)
            return flow.perturb(X, random_latent_perturbation(z.shape, eps, generator, z.dtype), z)
    return augment


def gaussian_mixture_2d(n: int, means, covs, weights=None, labels=None, seed: int = 0, dtype=DEFAULT_DTYPE):
    """``n`` points of a 2-D Gaussian mixture and their labels (``labels[c]`` is the class of component ``c``;
    default: the component index). Returns ``(X [n, 2], y [n], component [n])``."""
    import numpy as np
    means = means if isinstance(means, torch.Tensor) else np.asarray(means, dtype=np.float64)
    covs = covs if isinstance(covs, torch.Tensor) else np.asarray(covs, dtype=np.float64)
    means = as_tensor(means, dtype=dtype, name="means")
    covs = as_tensor(covs, dtype=dtype, name="covs")
    C = means.shape[0]
    if means.shape != (C, 2) or covs.shape != (C, 2, 2):
        raise ValueError(f"means must be [C, 2] and covs [C, 2, 2], got {list(means.shape)}, {list(covs.shape)}")
    w = torch.full((C,), 1.0 / C, dtype=dtype) if weights is None else as_tensor(weights, dtype=dtype)
    lab = torch.arange(C) if labels is None else torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(w / w.sum(), n, replacement=True, generator=gen)
    chol = torch.linalg.cholesky(covs)
    eps = torch.randn(n, 2, generator=gen, dtype=dtype)
    X = means[comp] + (chol[comp] @ eps.unsqueeze(-1)).squeeze(-1)
    return X, lab[comp], comp
