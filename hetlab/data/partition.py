r"""Seeded partitioners of a centralised data set into federated clients, and what they induce.

A *partition* of ``N`` samples among ``n`` clients is a list ``parts`` of ``n`` integer index
arrays that is a **disjoint cover** of ``{0, ..., N-1}``: every index belongs to exactly one
client. Every partitioner here returns one (sorted within each client), is seeded by an ``int``
or a :class:`numpy.random.Generator`, and terminates: draws that may be rejected are retried a
bounded number of times and then fail with an error that says how to change the request.

Partitioners (the heterogeneity each one creates):

* :func:`iid` — uniform random split, sizes differ by at most one (no heterogeneity);
* :func:`dirichlet` — *label skew* (Hsu et al. 2019; Wang et al. 2020): for each class
  :math:`c` a vector :math:`p_c\sim\mathrm{Dir}(\alpha\mathbf 1_n)` says which fraction of the
  class goes to each client; :math:`\alpha\to\infty` is IID, :math:`\alpha\to0` gives every class
  to one client;
* :func:`shards` — *pathological* label skew (McMahan et al. 2017): sort by label, cut into
  ``n * classes_per_client`` shards, every client gets ``classes_per_client`` shards;
* :func:`quantity_skew` — IID labels but unequal client sizes (Dirichlet or power-law sizes).

Diagnostics: :func:`label_histogram` (counts ``[n, C]``), :func:`plot_label_histogram` and
:func:`heterogeneity_summary` (total-variation distance of each client's label distribution to
the global one, effective number of classes, size statistics).
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_generator", "iid", "dirichlet", "shards", "quantity_skew", "check_partition",
    "parts_from_client_ids", "client_ids_from_parts", "label_histogram", "plot_label_histogram",
    "label_tv_to_global", "effective_num_classes", "heterogeneity_summary",
]


# ------------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------------
def as_generator(seed) -> np.random.Generator:
    """A :class:`numpy.random.Generator` from an ``int`` seed or a Generator (returned as is).

    ``None`` is rejected on purpose: an unseeded partition cannot be reproduced.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be an int or a numpy.random.Generator, got {seed!r} "
            "(pass e.g. seed=0; an unseeded split could not be reproduced)"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _nonneg_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _labels_1d(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array (one label per sample), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels is empty: there is nothing to partition")
    return y


def _encode(labels) -> tuple[np.ndarray, np.ndarray]:
    """Classes (sorted unique values) and the label of every sample coded as ``0..C-1``."""
    classes, codes = np.unique(_labels_1d(labels), return_inverse=True)
    return classes, codes.reshape(-1)


def _split_by_fractions(total: int, p: np.ndarray) -> np.ndarray:
    r"""Integer counts summing exactly to ``total``, following the fractions ``p``.

    Boundaries are the rounded cumulative sums :math:`b_k=\mathrm{round}(\text{total}\sum_{j\le k}p_j)`,
    so each count is within one of :math:`\text{total}\,p_k` and nothing is lost to rounding.
    """
    cum = np.rint(np.cumsum(p) / p.sum() * total).astype(np.int64)
    cum[-1] = total
    return np.diff(np.concatenate([[0], cum]))


def _safe_dirichlet(rng: np.random.Generator, alpha: float, k: int) -> np.ndarray:
    """Dirichlet draw that never returns NaN (older NumPy could, for tiny ``alpha``): a draw that is
    not a proper probability vector is replaced by its ``alpha -> 0`` limit, a random vertex."""
    p = rng.dirichlet(np.full(k, alpha))
    if not np.all(np.isfinite(p)) or p.sum() <= 0:  # pragma: no cover - depends on the NumPy version
        p = np.zeros(k)
        p[rng.integers(k)] = 1.0
    return p


def _finish(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ------------------------------------------------------------------------------------------------
# partition bookkeeping
# ------------------------------------------------------------------------------------------------
def check_partition(parts, n_samples: int) -> list[np.ndarray]:
    """Validate that ``parts`` is a disjoint cover of ``range(n_samples)``; return it as int64 arrays.

    Raises ``ValueError`` naming the first problem: an index out of range, an index given to two
    clients, or indices given to nobody.
    """
    n_samples = _nonneg_int(n_samples, "n_samples")
    out = []
    for k, p in enumerate(parts):
        a = np.asarray(p)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"part {k} must be a 1-D array of integer indices, got dtype {a.dtype}, shape {a.shape}")
        out.append(a.astype(np.int64, copy=False))
    allidx = np.concatenate(out) if out else np.zeros(0, np.int64)
    if allidx.size and (allidx.min() < 0 or allidx.max() >= n_samples):
        raise ValueError(f"partition indices must lie in [0, {n_samples}), got range "
                         f"[{allidx.min()}, {allidx.max()}]")
    counts = np.bincount(allidx, minlength=n_samples)
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)
        raise ValueError(f"not a disjoint cover: {dup.size} indices belong to several clients "
                         f"(first: {dup[:5].tolist()})")
    if (counts == 0).any():
        miss = np.flatnonzero(counts == 0)
        raise ValueError(f"not a cover: {miss.size} of {n_samples} indices belong to no client "
                         f"(first: {miss[:5].tolist()})")
    return out


def parts_from_client_ids(client_ids, n_clients: int | None = None) -> list[np.ndarray]:
    """Partition from a per-sample client id (``client_ids[j] = k`` means sample ``j`` is client ``k``'s)."""
    c = np.asarray(client_ids)
    if c.ndim != 1 or (c.size and not np.issubdtype(c.dtype, np.integer)) or (c.size and c.min() < 0):
        raise ValueError("client_ids must be a 1-D array of non-negative integers")
    if n_clients is None:
        n = int(c.max()) + 1 if c.size else 0
    else:
        n = _nonneg_int(n_clients, "n_clients")
    if c.size and c.max() >= n:
        raise ValueError(f"client id {int(c.max())} is out of range for n_clients={n}")
    order = np.argsort(c, kind="stable")
    bounds = np.searchsorted(c[order], np.arange(n + 1))
    return [order[bounds[k]:bounds[k + 1]].astype(np.int64) for k in range(n)]


def client_ids_from_parts(parts, n_samples: int) -> np.ndarray:
    """Inverse of :func:`parts_from_client_ids`: the client of every sample (validates the cover)."""
    parts = check_partition(parts, n_samples)
    ids = np.empty(n_samples, dtype=np.int64)
    for k, p in enumerate(parts):
        ids[p] = k
    return ids


# ------------------------------------------------------------------------------------------------
# partitioners
# ------------------------------------------------------------------------------------------------
def iid(n_samples: int, n_clients: int, seed) -> list[np.ndarray]:
    """Uniformly random split of ``n_samples`` indices into ``n_clients`` parts whose sizes differ by
    at most one (a random permutation cut into near-equal blocks)."""
    n_samples = _positive_int(n_samples, "n_samples")
    n_clients = _positive_int(n_clients, "n_clients")
    if n_clients > n_samples:
        raise ValueError(f"iid: n_clients={n_clients} > n_samples={n_samples}: some client would get no "
                         "sample; use at most n_samples clients")
    perm = as_generator(seed).permutation(n_samples)
    return _finish(np.array_split(perm, n_clients))


def dirichlet(labels, n_clients: int, alpha: float, seed, min_size: int = 1,
              max_tries: int = 100) -> list[np.ndarray]:
    r"""Dirichlet label skew.

    For every class :math:`c` with :math:`N_c` samples (shuffled), draw
    :math:`p_c\sim\mathrm{Dir}(\alpha\mathbf 1_n)` and give client :math:`k` a block of
    :math:`\approx N_cp_{c,k}` of them (rounded cumulative boundaries, so counts are exact and each is
    within one of :math:`N_cp_{c,k}`). Client :math:`k`'s expected label distribution is the global
    one; its spread is controlled by :math:`\alpha`:
    :math:`\mathrm{Var}(p_{c,k})=\frac{(n-1)}{n^2(n\alpha+1)}`, so :math:`\alpha\to\infty` is IID and
    :math:`\alpha\to0` gives each class to a single client.

    A draw in which some client gets fewer than ``min_size`` samples is redrawn, at most
    ``max_tries`` times in total; after that a ``ValueError`` reports the best draw's smallest client.
    Requests with ``n_clients * min_size > len(labels)`` are rejected before drawing.

    Parameters
    ----------
    labels : array-like ``[N]`` of class labels (any values; classes are their sorted unique values).
    n_clients : number of clients ``n``.
    alpha : Dirichlet concentration :math:`\alpha>0`.
    seed : ``int`` or :class:`numpy.random.Generator`.
    min_size : smallest acceptable client size (``0`` accepts empty clients).
    max_tries : number of draws before giving up (``>= 1``).
    """
    _, codes = _encode(labels)
    n_samples = codes.size
    n_clients = _positive_int(n_clients, "n_clients")
    alpha = _positive_float(alpha, "alpha")
    min_size = _nonneg_int(min_size, "min_size")
    max_tries = _positive_int(max_tries, "max_tries")
    if n_clients * min_size > n_samples:
        raise ValueError(
            f"dirichlet: impossible request, n_clients * min_size = {n_clients} * {min_size} = "
            f"{n_clients * min_size} > n_samples = {n_samples}; use fewer clients or a smaller min_size"
        )
    rng = as_generator(seed)
    by_class = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    best = -1
    for _ in range(max_tries):
        blocks = [[] for _ in range(n_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            counts = _split_by_fractions(idx.size, _safe_dirichlet(rng, alpha, n_clients))
            for k, block in enumerate(np.split(idx, np.cumsum(counts)[:-1])):
                blocks[k].append(block)
        parts = [np.concatenate(b) for b in blocks]
        smallest = min(p.size for p in parts)
        if smallest >= min_size:
            return _finish(parts)
        best = max(best, smallest)
    raise ValueError(
        f"dirichlet: after max_tries={max_tries} draws with alpha={alpha:g}, n_clients={n_clients}, "
        f"every draw left a client with fewer than min_size={min_size} samples (the best draw's smallest "
        f"client had {best}). Small alpha concentrates each class on few clients; use a larger alpha, "
        f"fewer clients, a smaller min_size, or a larger max_tries"
    )


def shards(labels, n_clients: int, classes_per_client: int, seed, *,
           distinct_classes: bool = True) -> list[np.ndarray]:
    r"""Pathological non-IID split of McMahan et al. (2017).

    Samples are sorted by label (ties broken by a seeded shuffle) and cut into
    :math:`S=n\cdot\text{classes\_per\_client}` contiguous shards of near-equal size; every client
    gets ``classes_per_client`` shards.

    With ``distinct_classes=True`` (default) the class order is first randomly permuted and shard
    :math:`j` goes to client :math:`\sigma(j \bmod n)` for a random permutation :math:`\sigma`:
    a client's shards are :math:`n` positions apart in label order, so when a class occupies at most
    :math:`n` shards whose boundaries align with the class boundaries (balanced labels and
    :math:`S` divisible by the number of classes) every client sees **exactly**
    ``classes_per_client`` classes. With ``distinct_classes=False`` shards are dealt uniformly at
    random, as in the original experiment, and a client may receive two shards of one class.

    Raises ``ValueError`` when ``classes_per_client`` exceeds the number of classes or when there
    are fewer samples than shards.
    """
    classes, codes = _encode(labels)
    n_samples, n_classes = codes.size, classes.size
    n_clients = _positive_int(n_clients, "n_clients")
    classes_per_client = _positive_int(classes_per_client, "classes_per_client")
    if classes_per_client > n_classes:
        raise ValueError(f"shards: classes_per_client={classes_per_client} exceeds the number of classes "
                         f"in labels ({n_classes}); use classes_per_client <= {n_classes}")
    n_shards = n_clients * classes_per_client
    if n_shards > n_samples:
        raise ValueError(
            f"shards: n_clients * classes_per_client = {n_clients} * {classes_per_client} = {n_shards} shards "
            f"cannot be formed from {n_samples} samples (every shard needs at least one); use fewer clients "
            f"or fewer classes per client"
        )
    rng = as_generator(seed)
    class_rank = rng.permutation(n_classes) if distinct_classes else np.arange(n_classes)
    tiebreak = rng.permutation(n_samples)
    order = np.lexsort((tiebreak, class_rank[codes]))  # sort by (permuted) class, random within class
    pieces = np.array_split(order, n_shards)
    if distinct_classes:
        sigma = rng.permutation(n_clients)
        owner = sigma[np.arange(n_shards) % n_clients]
    else:
        owner = np.repeat(np.arange(n_clients), classes_per_client)[rng.permutation(n_shards)]
    parts = [np.concatenate([pieces[j] for j in np.flatnonzero(owner == k)]) for k in range(n_clients)]
    return _finish(parts)


def quantity_skew(n_samples: int, n_clients: int, seed, *, alpha: float | None = None,
                  power: float | None = None, min_size: int = 1) -> list[np.ndarray]:
    r"""Quantity skew: IID labels, unequal client sizes.

    Every client first receives ``min_size`` samples; the remaining :math:`R=N-n\cdot\text{min\_size}`
    are shared by fractions :math:`p` (rounded cumulative boundaries, exact total), where

    * ``alpha=a``: :math:`p\sim\mathrm{Dir}(a\mathbf 1_n)` (sizes :math:`\approx` Dirichlet :math:`\times N`;
      small ``a`` = very unequal, large ``a`` = equal);
    * ``power=s``: a power law :math:`p_k\propto r_k^{-s}` over the ranks :math:`r=1..n` assigned to
      clients in random order (Zipf-like; ``s = 0`` is equal sizes).

    Give exactly one of ``alpha`` and ``power``. The samples themselves are a random permutation, so
    each client's labels are an IID draw from the global distribution. Since the minimum is
    allocated first, no draw is ever rejected; ``n_clients * min_size > n_samples`` raises.
    """
    n_samples = _positive_int(n_samples, "n_samples")
    n_clients = _positive_int(n_clients, "n_clients")
    min_size = _nonneg_int(min_size, "min_size")
    if (alpha is None) == (power is None):
        raise ValueError("quantity_skew: give exactly one of alpha= (Dirichlet sizes) or power= (power-law sizes)")
    if n_clients * min_size > n_samples:
        raise ValueError(
            f"quantity_skew: impossible request, n_clients * min_size = {n_clients} * {min_size} = "
            f"{n_clients * min_size} > n_samples = {n_samples}; use fewer clients or a smaller min_size"
        )
    rng = as_generator(seed)
    if alpha is not None:
        p = _safe_dirichlet(rng, _positive_float(alpha, "alpha"), n_clients)
    else:
        s = float(power)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"quantity_skew: power must be a finite number >= 0, got {power!r}")
        p = np.arange(1, n_clients + 1, dtype=np.float64) ** (-s)
        p = p[rng.permutation(n_clients)]
    sizes = min_size + _split_by_fractions(n_samples - n_clients * min_size, p)
    perm = rng.permutation(n_samples)
    return _finish(np.split(perm, np.cumsum(sizes)[:-1]))


# ------------------------------------------------------------------------------------------------
# diagnostics
# ------------------------------------------------------------------------------------------------
def label_histogram(labels, parts, n_classes: int | None = None) -> np.ndarray:
    """Counts ``H[k, c]`` = number of samples of class ``c`` held by client ``k`` (``[n_clients, n_classes]``).

    ``labels`` must be integer class ids in ``[0, n_classes)``; ``n_classes`` defaults to ``max + 1``.
    Row sums are the client sizes, column sums the class sizes (of the covered samples).
    """
    y = _labels_1d(labels)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError("label_histogram needs integer class ids 0..C-1 (encode labels with "
                             "np.unique(labels, return_inverse=True) first)")
    if y.min() < 0:
        raise ValueError(f"labels must be non-negative class ids, got minimum {y.min()}")
    C = int(y.max()) + 1 if n_classes is None else _positive_int(n_classes, "n_classes")
    if y.max() >= C:
        raise ValueError(f"label {int(y.max())} is out of range for n_classes={C}")
    H = np.zeros((len(parts), C), dtype=np.int64)
    for k, p in enumerate(parts):
        p = np.asarray(p, dtype=np.int64)
        if p.size and (p.min() < 0 or p.max() >= y.size):
            raise ValueError(f"part {k} has indices outside [0, {y.size})")
        H[k] = np.bincount(y[p], minlength=C)
    return H


def _check_hist(hist) -> np.ndarray:
    H = np.asarray(hist, dtype=np.float64)
    if H.ndim != 2:
        raise ValueError(f"hist must be a [n_clients, n_classes] array of counts, got shape {H.shape}")
    if (H < 0).any() or not np.all(np.isfinite(H)):
        raise ValueError("hist must contain finite non-negative counts")
    if H.sum() <= 0:
        raise ValueError("hist is all zeros: no samples")
    return H


def label_tv_to_global(hist) -> np.ndarray:
    r"""Total-variation distance of every client's label distribution to the global one,
    :math:`\mathrm{TV}_k=\frac12\sum_c|P_k(c)-P(c)|\in[0,1]`, with :math:`P_k=H_{k\cdot}/\sum_cH_{kc}` and
    :math:`P=\sum_kH_{k\cdot}/\sum_{kc}H_{kc}`. Empty clients get ``nan``."""
    H = _check_hist(hist)
    sizes = H.sum(1)
    glob = H.sum(0) / H.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        P = H / sizes[:, None]
    tv = 0.5 * np.abs(P - glob).sum(1)
    tv[sizes == 0] = np.nan
    return tv


def effective_num_classes(hist) -> np.ndarray:
    r"""Effective number of classes of every client, :math:`\exp(H(P_k))=\exp(-\sum_cP_k(c)\log P_k(c))`
    (the perplexity: ``C`` for a uniform distribution over ``C`` classes, 1 for a single class).
    Empty clients get ``nan``."""
    H = _check_hist(hist)
    sizes = H.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        P = H / sizes[:, None]
        ent = -np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0).sum(1)
    out = np.exp(ent)
    out[sizes == 0] = np.nan
    return out


def heterogeneity_summary(hist) -> dict:
    r"""How heterogeneous a partition is, from its label histogram ``[n_clients, n_classes]``.

    Returns a dict of floats:

    * ``mean_tv`` / ``max_tv`` / ``weighted_tv``: mean, max and size-weighted mean of
      :func:`label_tv_to_global` (0 for identical label distributions, close to 1 for disjoint ones);
    * ``mean_effective_classes``: mean of :func:`effective_num_classes`; ``global_effective_classes``
      the same quantity for the pooled data (the IID reference);
    * ``mean_classes_present``: mean number of classes with at least one sample per client;
    * ``min_size`` / ``max_size`` / ``size_cv``: client sizes and their coefficient of variation
      (std / mean; 0 for equal sizes);
    * ``n_clients``, ``n_classes``, ``empty_clients``.

    Empty clients are excluded from the means (and counted in ``empty_clients``).
    """
    H = _check_hist(hist)
    sizes = H.sum(1)
    tv = label_tv_to_global(H)
    eff = effective_num_classes(H)
    ok = sizes > 0
    glob = H.sum(0, keepdims=True)
    return {
        "n_clients": int(H.shape[0]),
        "n_classes": int(H.shape[1]),
        "empty_clients": int((~ok).sum()),
        "mean_tv": float(tv[ok].mean()),
        "max_tv": float(tv[ok].max()),
        "weighted_tv": float(sizes[ok] @ tv[ok] / sizes.sum()),
        "mean_effective_classes": float(eff[ok].mean()),
        "global_effective_classes": float(effective_num_classes(glob)[0]),
        "mean_classes_present": float((H[ok] > 0).sum(1).mean()),
        "min_size": int(sizes.min()),
        "max_size": int(sizes.max()),
        "size_cv": float(sizes.std() / sizes.mean()),
    }


def plot_label_histogram(hist, ax=None, *, kind: str = "bar", normalize: bool = False,
                         class_names=None, cmap: str = "tab10"):
    """Plot a label histogram ``[n_clients, n_classes]``; returns the matplotlib ``Axes``.

    ``kind="bar"``: one stacked bar per client, one colour per class (``normalize=True`` shows
    fractions, so label skew is visible independently of client size). ``kind="heatmap"``: clients
    by classes, colour = count (or fraction).
    """
    import matplotlib.pyplot as plt

    H = _check_hist(hist)
    if kind not in ("bar", "heatmap"):
        raise ValueError(f"kind must be 'bar' or 'heatmap', got {kind!r}")
    n, C = H.shape
    names = [str(c) for c in range(C)] if class_names is None else [str(c) for c in class_names]
    if len(names) != C:
        raise ValueError(f"class_names has {len(names)} entries but hist has {C} classes")
    if normalize:
        s = H.sum(1, keepdims=True)
        H = np.divide(H, s, out=np.zeros_like(H), where=s > 0)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.35 * n + 2), 3.2))
    x = np.arange(n)
    if kind == "bar":
        colors = plt.get_cmap(cmap if C <= 10 else "tab20")
        bottom = np.zeros(n)
        for c in range(C):
            ax.bar(x, H[:, c], bottom=bottom, width=0.85, color=colors(c % colors.N), label=names[c])
            bottom += H[:, c]
        ax.set_xlabel("client")
        ax.set_ylabel("fraction of samples" if normalize else "samples")
        if C <= 20:
            ax.legend(title="class", fontsize="small", ncol=2 if C > 10 else 1,
                      bbox_to_anchor=(1.01, 1), loc="upper left")
    else:
        im = ax.imshow(H.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
        ax.set_xlabel("client")
        ax.set_ylabel("class")
        ax.set_yticks(np.arange(C))
        ax.set_yticklabels(names)
        ax.figure.colorbar(im, ax=ax, label="fraction" if normalize else "samples")
    if n <= 30:
        ax.set_xticks(x)
    return ax
