r"""FedProx's synthetic federated classification data, ``synthetic(alpha, beta)``.

Li et al. (2020), *Federated Optimization in Heterogeneous Networks*, Sec. 5.1: client :math:`k`
holds samples of a softmax-regression model with its own parameters and its own input
distribution,

.. math::

   u_k\sim\mathcal N(0,\alpha^2),\quad B_k\sim\mathcal N(0,\beta^2),\qquad
   W_k\in\mathbb R^{C\times d},\ (W_k)_{ij}\sim\mathcal N(u_k,1),\quad (b_k)_i\sim\mathcal N(u_k,1),

.. math::

   v_k\in\mathbb R^d,\ (v_k)_j\sim\mathcal N(B_k,1),\qquad
   x\sim\mathcal N(v_k,\Sigma),\ \Sigma=\mathrm{diag}(j^{-1.2})_{j=1..d},\qquad
   y=\arg\max_c\,\mathrm{softmax}(W_kx+b_k)_c=\arg\max_c\,(W_kx+b_k)_c .

``alpha`` controls how much the local *models* differ (concept shift), ``beta`` how much the
local *inputs* differ (covariate shift); :math:`d=60`, :math:`C=10` by default.

**Scale convention.** The paper writes :math:`\mathcal N(0,\alpha)`; the authors' generator
(``FedProx/data/synthetic_*/generate_niid.py``) passes ``alpha`` and ``beta`` to NumPy as the
*standard deviation*. We follow the generator, so ``synthetic(1, 1)`` is the paper's
"Synthetic (1,1)" data set in distribution.

**Client sizes.** Also as in the authors' generator, sizes follow a lognormal power law,
:math:`m_k=\lfloor e^{Z_k}\rfloor+m_{\min}` with :math:`Z_k\sim\mathcal N(4,2^2)` and
:math:`m_{\min}=50` (median :math:`\approx 105`, heavy right tail). Because :math:`e^{Z}` is
unbounded, ``max_size`` (default 10 000) caps a single client so that a rare draw cannot allocate
gigabytes; pass ``max_size=None`` for the uncapped law, or ``sizes=`` for explicit sizes.

**IID variant** (:func:`synthetic_iid`): one :math:`W,b\sim\mathcal N(0,1)` shared by all clients
and :math:`v_k=0`, i.e. every client samples :math:`x\sim\mathcal N(0,\Sigma)` from the same model.

Everything is drawn from one seeded :class:`numpy.random.Generator`; the same seed gives the
same data set bit for bit.
"""
from __future__ import annotations

import numpy as np

from .partition import _nonneg_int, _positive_int, as_generator

__all__ = ["synthetic", "synthetic_iid", "lognormal_client_sizes", "flatten_clients", "synthetic_covariance"]


def synthetic_covariance(dim: int = 60, power: float = 1.2) -> np.ndarray:
    r"""Diagonal of FedProx's input covariance, :math:`\Sigma_{jj}=j^{-\text{power}}` for :math:`j=1..d`."""
    dim = _positive_int(dim, "dim")
    return np.arange(1, dim + 1, dtype=np.float64) ** (-float(power))


def lognormal_client_sizes(n_clients: int, seed, *, mean: float = 4.0, sigma: float = 2.0,
                           min_size: int = 50, max_size: int | None = 10_000) -> np.ndarray:
    r"""Client sizes :math:`m_k=\min(\lfloor e^{Z_k}\rfloor+m_{\min},\ m_{\max})`, :math:`Z_k\sim\mathcal N(\text{mean},\text{sigma}^2)`.

    The defaults (4, 2, 50) are those of FedProx's generator; ``max_size=None`` removes the cap.
    """
    n_clients = _positive_int(n_clients, "n_clients")
    min_size = _nonneg_int(min_size, "min_size")
    if sigma < 0 or not np.isfinite(sigma) or not np.isfinite(mean):
        raise ValueError(f"lognormal sizes need finite mean and sigma >= 0, got mean={mean}, sigma={sigma}")
    if max_size is not None:
        max_size = _positive_int(max_size, "max_size")
        if max_size < max(min_size, 1):
            raise ValueError(f"max_size={max_size} must be >= min_size={min_size} (and >= 1)")
    rng = as_generator(seed)
    # clip before the cast: exp(Z) can exceed int64 for extreme draws
    raw = np.minimum(rng.lognormal(mean, sigma, n_clients), 1e15)
    sizes = np.floor(raw).astype(np.int64) + min_size
    if max_size is not None:
        sizes = np.minimum(sizes, max_size)
    if (sizes < 1).any():
        sizes = np.maximum(sizes, 1)  # min_size = 0 and exp(Z) < 1: every client keeps one sample
    return sizes


def _client_sizes(n_clients, rng, sizes, size_kwargs):
    if sizes is None:
        return lognormal_client_sizes(n_clients, rng, **(size_kwargs or {}))
    s = np.asarray(sizes)
    if s.shape != (n_clients,) or not np.issubdtype(s.dtype, np.integer) or (s < 1).any():
        raise ValueError(f"sizes must be {n_clients} positive integers (one per client), got {sizes!r}")
    return s.astype(np.int64)


def _sample_clients(W, b, V, sizes, sqrt_cov, rng, flat):
    clients = []
    for k, m in enumerate(sizes):  # loops over clients only to build the data set once
        X = V[k] + rng.standard_normal((int(m), sqrt_cov.size)) * sqrt_cov
        y = np.argmax(X @ W[k].T + b[k], axis=1).astype(np.int64)  # softmax is monotone
        clients.append((X, y))
    return flatten_clients(clients) if flat else clients


def synthetic(alpha: float, beta: float, n_clients: int = 30, seed=0, *, dim: int = 60,
              n_classes: int = 10, sizes=None, size_kwargs: dict | None = None, flat: bool = False):
    r"""FedProx's ``Synthetic(alpha, beta)`` (see the module docstring for the model).

    Parameters
    ----------
    alpha, beta : standard deviations of the per-client model mean :math:`u_k` and input mean :math:`B_k`
        (``>= 0``; ``synthetic(0, 0)`` still differs across clients through :math:`W_k, b_k, v_k`).
    n_clients : number of clients (30 in the paper).
    seed : ``int`` or :class:`numpy.random.Generator`.
    dim, n_classes : input dimension :math:`d` (60) and number of classes :math:`C` (10).
    sizes : explicit client sizes ``[n_clients]``; default: :func:`lognormal_client_sizes` with
        ``size_kwargs`` (e.g. ``{"mean": 4, "sigma": 2, "min_size": 50, "max_size": 10000}``).
    flat : return ``(X, y, client_ids)`` instead of a list of per-client ``(X_k, y_k)``.

    Returns
    -------
    A list of ``(X_k [m_k, d] float64, y_k [m_k] int64)``, or with ``flat=True`` the concatenation
    ``(X [N, d], y [N], client_ids [N])`` (turn ``client_ids`` into index arrays with
    :func:`hetlab.data.parts_from_client_ids`).
    """
    for name, v in (("alpha", alpha), ("beta", beta)):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"synthetic: {name} must be a finite number >= 0 (a standard deviation), got {v!r}")
    n_clients = _positive_int(n_clients, "n_clients")
    dim = _positive_int(dim, "dim")
    n_classes = _positive_int(n_classes, "n_classes")
    rng = as_generator(seed)
    sizes = _client_sizes(n_clients, rng, sizes, size_kwargs)
    u = rng.normal(0.0, alpha, n_clients)
    B = rng.normal(0.0, beta, n_clients)
    V = rng.normal(B[:, None], 1.0, (n_clients, dim))
    W = rng.normal(u[:, None, None], 1.0, (n_clients, n_classes, dim))
    b = rng.normal(u[:, None], 1.0, (n_clients, n_classes))
    return _sample_clients(W, b, V, sizes, np.sqrt(synthetic_covariance(dim)), rng, flat)


def synthetic_iid(n_clients: int = 30, seed=0, *, dim: int = 60, n_classes: int = 10, sizes=None,
                  size_kwargs: dict | None = None, flat: bool = False):
    r"""FedProx's ``Synthetic-IID``: one model :math:`W_{ij},b_i\sim\mathcal N(0,1)` for all clients and
    inputs :math:`x\sim\mathcal N(0,\Sigma)` on every client (:math:`v_k=0`); only the sizes differ.
    Arguments and return value as in :func:`synthetic`."""
    n_clients = _positive_int(n_clients, "n_clients")
    dim = _positive_int(dim, "dim")
    n_classes = _positive_int(n_classes, "n_classes")
    rng = as_generator(seed)
    sizes = _client_sizes(n_clients, rng, sizes, size_kwargs)
    W = np.broadcast_to(rng.normal(0.0, 1.0, (n_classes, dim)), (n_clients, n_classes, dim))
    b = np.broadcast_to(rng.normal(0.0, 1.0, n_classes), (n_clients, n_classes))
    V = np.zeros((n_clients, dim))
    return _sample_clients(W, b, V, sizes, np.sqrt(synthetic_covariance(dim)), rng, flat)


def flatten_clients(clients):
    """Concatenate per-client ``[(X_k, y_k), ...]`` into ``(X, y, client_ids)``."""
    if len(clients) == 0:
        raise ValueError("flatten_clients: no clients given")
    X = np.concatenate([c[0] for c in clients], axis=0)
    y = np.concatenate([c[1] for c in clients], axis=0)
    ids = np.repeat(np.arange(len(clients)), [len(c[1]) for c in clients]).astype(np.int64)
    return X, y, ids
