r"""Robust aggregators: the server's rule for turning the workers' vectors into one vector.

Every aggregator takes the **gathered stacked rows** ``X`` of shape ``[n, d]`` (row ``i`` = what worker
``i`` sent, as returned by ``comm.gather(X)``) and returns one vector ``[d]``. Extra leading dimensions
are batch dimensions: ``[..., n, d] -> [..., d]`` (the worker axis is always ``-2``), so independent runs
can be stacked. Nothing loops over workers in Python; the geometric median loops over Weiszfeld
iterations only.

* :func:`mean` -- :math:`\frac1n\sum_ix_i`; tolerates 0 Byzantine rows (one attacker moves it anywhere);
  cost :math:`O(nd)`.
* :func:`coordinate_median` -- per coordinate the middle value (the mean of the two middle values for
  even ``n``); tolerates :math:`\lceil n/2\rceil-1`; cost :math:`O(nd\log n)` (a sort).
* :func:`trimmed_mean` -- per coordinate the mean after dropping the ``trim`` largest and ``trim``
  smallest values; tolerates ``trim`` (needs :math:`2\,\text{trim}<n`); cost :math:`O(nd\log n)`.
* :func:`majority_vote` -- :math:`\operatorname{sign}\sum_i\operatorname{sign}(x_i)` per coordinate,
  in :math:`\{-1,0,1\}`; tolerates :math:`\lceil n/2\rceil-1` on coordinates where the honest workers
  agree; cost :math:`O(nd)`, 1 bit per coordinate and worker.
* :func:`geometric_median` -- :math:`\arg\min_z\sum_i\|z-x_i\|_2` by Weiszfeld's iteration;
  tolerates :math:`\lceil n/2\rceil-1`; cost :math:`O(nd)` per iteration.
* :func:`krum` -- the row with the smallest sum of squared distances to its :math:`n-f-2` nearest
  rows (multi-Krum: the mean of the ``m`` best rows); tolerates ``f`` (needs :math:`n>2f+2`); cost
  :math:`O(n^2d)`.

**Robustness.** "Tolerated f" is the largest number of arbitrary (Byzantine) rows that cannot move the
output arbitrarily far: the breakdown point times ``n``. For the coordinate-wise median, the trimmed
mean and the geometric median, with ``f`` attackers the output stays within the range (the convex hull,
for the geometric median a ball around the honest points whose radius depends only on the honest
points) of the honest rows as long as ``f`` is below the bound. Krum's guarantee
(Blanchard et al. 2017) needs :math:`n>2f+2`; its selected row is an honest row or close to the
honest ones. The majority vote is the sign of the median for odd ``n`` (the identity of
:func:`majority_vote`), so a coordinate on which every honest worker agrees cannot be flipped by
fewer than :math:`\lceil n/2\rceil` attackers; Bernstein et al. (2019) prove convergence when fewer than
half of the workers are "blind multiplicative" adversaries (e.g. sign flippers), under unimodal
symmetric gradient noise.

**Tie conventions.** ``sign(0) = 0`` (``torch.sign``): a worker whose coordinate is exactly zero abstains,
and a tied vote (equal numbers of + and -, possible for even ``n`` or with abstentions) outputs 0, i.e.
no step on that coordinate. The median of an even number of values is the mean of the two middle
values (NumPy's convention; ``torch.median`` would return the lower one). With this convention the
identity ``majority_vote = sign(coordinate_median)`` holds for odd ``n`` when no value is exactly zero,
and can fail for even ``n`` (e.g. values ``(-3, -1, 2, 5)``: tied vote 0, median 0.5). Krum breaks
ties in the score by the lowest worker index.

**Heterogeneity.** All robust rules answer a different question than the mean: with honest but
heterogeneous workers, the expected median of the local gradients need not be their mean, which is
why median-based methods stall away from :math:`x^\star` (THEORY D1, :mod:`hetlab.closed_forms_median`).

Use them through the communication interface: ``aggregator(comm.gather(X))`` (:func:`aggregate`).
"""
from __future__ import annotations

import warnings

import torch

__all__ = [
    "mean", "coordinate_median", "trimmed_mean", "majority_vote", "geometric_median", "krum",
    "Aggregator", "Mean", "CoordinateMedian", "TrimmedMean", "MajorityVote", "GeometricMedian", "Krum",
    "make_aggregator", "aggregate", "GeometricMedianWarning",
]


class GeometricMedianWarning(RuntimeWarning):
    """Weiszfeld's iteration reached its iteration cap before its tolerance."""


def _check_rows(X, name: str = "aggregator") -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        X = torch.as_tensor(X, dtype=torch.float64)
    if X.dim() < 2:
        raise ValueError(f"{name}: expected stacked rows of shape [n, d] (or [..., n, d]), got shape {list(X.shape)}; "
                         "pass a single vector as X[None] or X[:, None]")
    if X.shape[-2] < 1:
        raise ValueError(f"{name}: need at least one row (worker), got shape {list(X.shape)}")
    if not X.is_floating_point():
        X = X.to(torch.float64)
    return X

# --------------------------------------------------------------------------------- functions


def mean(X) -> torch.Tensor:
    r"""Average of the rows, :math:`\frac1n\sum_ix_i`. Breakdown point 0: a single row can move it anywhere.
    Cost :math:`O(nd)`."""
    X = _check_rows(X, "mean")
    return X.mean(-2)


def coordinate_median(X) -> torch.Tensor:
    r"""Coordinate-wise median. Odd ``n``: the middle value of every coordinate; even ``n``: the mean of the
    two middle values (NumPy's convention). Tolerates :math:`\lceil n/2\rceil-1` Byzantine rows (the output
    of each coordinate stays between the smallest and the largest honest value). Cost :math:`O(nd\log n)`
    (a sort along the worker axis)."""
    X = _check_rows(X, "coordinate_median")
    n = X.shape[-2]
    S = X.sort(dim=-2).values
    k = n // 2
    if n % 2:
        return S[..., k, :]
    return 0.5 * (S[..., k - 1, :] + S[..., k, :])


def trimmed_mean(X, trim: int) -> torch.Tensor:
    r"""Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the ``trim`` largest and the
    ``trim`` smallest values and average the remaining :math:`n-2\,\text{trim}`. ``trim = 0`` is the mean;
    ``trim = (n-1)//2`` is the median (both parities). Tolerates ``trim`` Byzantine rows. Requires
    :math:`2\,\text{trim}<n`. Cost :math:`O(nd\log n)`."""
    X = _check_rows(X, "trimmed_mean")
    n = X.shape[-2]
    trim = _check_trim(trim, n)
    if trim == 0:
        return X.mean(-2)
    S = X.sort(dim=-2).values
    return S[..., trim:n - trim, :].mean(-2)


def _check_trim(trim, n: int) -> int:
    if isinstance(trim, bool) or not isinstance(trim, int) or trim < 0:
        raise ValueError("trimmed_mean: trim must be a non-negative integer (values dropped on each side), "
                         f"got {trim!r}")
    if 2 * trim >= n:
        raise ValueError(f"trimmed_mean: 2 * trim must be < n (something must remain), got trim={trim}, n={n}; "
                         f"use trim <= {(n - 1) // 2} (trim = (n-1)//2 is the median)")
    return trim


def majority_vote(X) -> torch.Tensor:
    r"""signSGD's majority vote (Bernstein et al. 2018, 2019): :math:`\operatorname{sign}\big(\sum_i
    \operatorname{sign}(x_i)\big)` per coordinate, in :math:`\{-1, 0, 1\}`.

    ``sign(0) = 0``: a zero entry abstains, and a tie outputs 0. For odd ``n`` and no zero entries it equals
    ``sign(coordinate_median(X))`` (THEORY D1(a)): the sign of the sum is + iff more than half of the
    values are positive, iff the middle order statistic is positive. Each worker sends 1 bit per
    coordinate; cost :math:`O(nd)`. Byzantine workers: a coordinate on which every honest worker agrees
    is decided correctly as long as fewer than :math:`\lceil n/2\rceil` workers are adversarial."""
    X = _check_rows(X, "majority_vote")
    return torch.sign(torch.sign(X).sum(-2))


def geometric_median(X, tol: float = 1e-10, max_iter: int = 1000, eps: float = 1e-12, *,
                     on_cap: str = "warn", return_info: bool = False):
    r"""Geometric median :math:`\arg\min_z\sum_i\|z-x_i\|_2` by Weiszfeld's iteration.

    From :math:`z_0=` the mean, iterate :math:`z_{k+1}=\sum_iw_ix_i/\sum_iw_i` with
    :math:`w_i=1/\max(\|z_k-x_i\|,\varepsilon)` until :math:`\|z_{k+1}-z_k\|\le\text{tol}\,(1+\|z_k\|)`
    (for every batch entry) or ``max_iter`` iterations.

    **Convergence.** Every Weiszfeld step decreases the objective; from a start that is not a data point
    the iterates converge to the geometric median when the points are not all collinear (Kuhn 1973), in
    general linearly. The median is unique unless the points are collinear (then it is any 1-D median
    along the line, an interval for even ``n``; from the mean the iteration stays on the line and
    converges to a point of that set). Convergence slows when the median coincides with a data point
    whose pull is nearly balanced. The floor :math:`\varepsilon` on the distances (the smoothed
    Weiszfeld of Pillutla et al. 2022) avoids a division by zero when an iterate lands on a data point;
    the result is then a minimiser of the :math:`\varepsilon`-smoothed objective, within
    :math:`O(\varepsilon)` of the exact one.

    **Robustness.** Breakdown point 1/2: tolerates :math:`\lceil n/2\rceil-1` Byzantine rows. Cost
    :math:`O(nd)` per iteration. Rotation and translation equivariant (unlike the coordinate-wise rules,
    which are only equivariant to coordinate permutations, sign flips and translations).

    ``on_cap``: what to do when ``max_iter`` is reached first: ``"warn"`` (a
    :class:`GeometricMedianWarning`), ``"raise"`` (``RuntimeError``) or ``"ignore"``. With
    ``return_info`` also returns ``{"iterations": k, "converged": bool, "step": last step size}``.
    """
    X = _check_rows(X, "geometric_median")
    if tol <= 0 or eps <= 0:
        raise ValueError(f"geometric_median: tol and eps must be positive, got tol={tol}, eps={eps}")
    if max_iter < 1:
        raise ValueError(f"geometric_median: max_iter must be >= 1, got {max_iter}")
    if on_cap not in ("warn", "raise", "ignore"):
        raise ValueError(f"geometric_median: on_cap must be 'warn', 'raise' or 'ignore', got {on_cap!r}")
    z = X.mean(-2)
    converged, step, k = False, float("inf"), 0
    for k in range(1, max_iter + 1):
        D = X - z.unsqueeze(-2)                                                   # [..., n, d]
        w = torch.linalg.vector_norm(D, dim=-1).clamp_min_(eps).reciprocal_()   # [..., n]
        dz = (w.unsqueeze(-1) * D).sum(-2) / w.sum(-1, keepdim=True)             # z_new - z
        rel = torch.linalg.vector_norm(dz, dim=-1) / (1.0 + torch.linalg.vector_norm(z, dim=-1))
        z = z + dz
        step = float(rel.max())
        if step <= tol:
            converged = True
            break
    if not converged:
        msg = (f"geometric_median: Weiszfeld did not reach tol={tol:g} in max_iter={max_iter} iterations "
               f"(last relative step {step:.3g}); raise max_iter or loosen tol")
        if on_cap == "raise":
            raise RuntimeError(msg)
        if on_cap == "warn":
            warnings.warn(msg, GeometricMedianWarning, stacklevel=2)
    if return_info:
        return z, {"iterations": k, "converged": converged, "step": step}
    return z


def krum_scores(X, f: int) -> torch.Tensor:
    r"""Krum scores :math:`s_i=\sum_{j\in N_i}\|x_i-x_j\|^2` over the :math:`n-f-2` nearest other rows
    :math:`N_i` (``[..., n]``). Requires :math:`n>2f+2`."""
    X = _check_rows(X, "krum")
    n = X.shape[-2]
    _check_krum(n, f)
    diff = X.unsqueeze(-2) - X.unsqueeze(-3)            # [..., n, n, d], exact differences
    D2 = (diff * diff).sum(-1)
    eye = torch.eye(n, dtype=torch.bool, device=X.device)
    D2 = D2.masked_fill(eye, float("inf"))              # a row is not its own neighbour
    nearest = D2.sort(dim=-1).values[..., : n - f - 2]
    return nearest.sum(-1)


def _check_krum(n: int, f) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError("krum: f (the number of Byzantine workers to tolerate) must be a non-negative integer, "
                         f"got {f!r}")
    if n <= 2 * f + 2:
        raise ValueError(f"krum needs n > 2f + 2 workers (Blanchard et al. 2017), got n={n}, f={f}; "
                         f"with n={n} use f <= {max((n - 3) // 2, -1)}" + (" (no f works for n < 3)" if n < 3 else ""))


def krum(X, f: int, m: int = 1) -> torch.Tensor:
    r"""Krum (Blanchard et al. 2017) and multi-Krum.

    Each row gets the score :math:`s_i=\sum_{j\in N_i}\|x_i-x_j\|^2`, :math:`N_i` its :math:`n-f-2`
    nearest other rows; Krum returns the row with the smallest score (ties: lowest index), multi-Krum
    (``m > 1``) the mean of the ``m`` rows with the smallest scores (``m = n`` is the mean). Tolerates ``f``
    Byzantine rows; requires :math:`n>2f+2`. Cost :math:`O(n^2d)` for the pairwise distances plus
    :math:`O(n^2\log n)` for the neighbour sort. The output is one worker's vector, so with heterogeneous
    honest workers Krum follows whichever worker is most central, not the mean.
    """
    X = _check_rows(X, "krum")
    n = X.shape[-2]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"krum: m (rows averaged by multi-Krum) must be an integer in [1, n={n}], got {m!r}")
    scores = krum_scores(X, f)
    order = torch.sort(scores, dim=-1, stable=True).indices[..., :m]          # [..., m]
    idx = order.unsqueeze(-1).expand(*order.shape, X.shape[-1])
    return torch.gather(X, -2, idx).mean(-2)

# ------------------------------------------------------------------------------ objects


class Aggregator:
    """An aggregator as an object: ``agg(X [..., n, d]) -> [..., d]`` plus its properties.

    ``sign_output`` is true when the output is a sign vector (not on the gradients' scale), so step-size
    rules for gradient methods do not apply; ``max_byzantine(n)`` is the number of arbitrary rows it
    tolerates among ``n``; ``cost`` its complexity.
    """

    name = "aggregator"
    cost = ""
    sign_output = False

    def __call__(self, X) -> torch.Tensor:
        raise NotImplementedError

    def max_byzantine(self, n: int) -> int:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class Mean(Aggregator):
    name, cost = "mean", "O(nd)"

    def __call__(self, X):
        return mean(X)

    def max_byzantine(self, n):
        return 0


class CoordinateMedian(Aggregator):
    name, cost = "median", "O(nd log n)"

    def __call__(self, X):
        return coordinate_median(X)

    def max_byzantine(self, n):
        return (n - 1) // 2


class TrimmedMean(Aggregator):
    name, cost = "trimmed_mean", "O(nd log n)"

    def __init__(self, trim: int):
        if isinstance(trim, bool) or not isinstance(trim, int) or trim < 0:
            raise ValueError("TrimmedMean: trim must be a non-negative integer (values dropped on each side), "
                             f"got {trim!r}")
        self.trim = trim

    def __call__(self, X):
        return trimmed_mean(X, self.trim)

    def max_byzantine(self, n):
        _check_trim(self.trim, n)
        return self.trim

    def __repr__(self):
        return f"TrimmedMean(trim={self.trim})"


class MajorityVote(Aggregator):
    name, cost, sign_output = "majority_vote", "O(nd), 1 bit per coordinate", True

    def __call__(self, X):
        return majority_vote(X)

    def max_byzantine(self, n):
        return (n - 1) // 2


class GeometricMedian(Aggregator):
    name, cost = "geometric_median", "O(nd) per Weiszfeld iteration"

    def __init__(self, tol: float = 1e-10, max_iter: int = 1000, eps: float = 1e-12, on_cap: str = "warn"):
        if tol <= 0 or eps <= 0 or max_iter < 1:
            raise ValueError(f"GeometricMedian: need tol > 0, eps > 0, max_iter >= 1, got {tol}, {eps}, {max_iter}")
        self.tol, self.max_iter, self.eps, self.on_cap = tol, max_iter, eps, on_cap

    def __call__(self, X):
        return geometric_median(X, self.tol, self.max_iter, self.eps, on_cap=self.on_cap)

    def max_byzantine(self, n):
        return (n - 1) // 2

    def __repr__(self):
        return f"GeometricMedian(tol={self.tol:g}, max_iter={self.max_iter})"


class Krum(Aggregator):
    name, cost = "krum", "O(n^2 d)"

    def __init__(self, f: int, m: int = 1):
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"Krum: f must be a non-negative integer, got {f!r}")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"Krum: m must be a positive integer, got {m!r}")
        self.f, self.m = f, m
        self.name = "krum" if m == 1 else "multi_krum"

    def __call__(self, X):
        return krum(X, self.f, self.m)

    def max_byzantine(self, n):
        _check_krum(n, self.f)
        return self.f

    def __repr__(self):
        return f"Krum(f={self.f}, m={self.m})"


_NAMES = {
    "mean": Mean, "median": CoordinateMedian, "coordinate_median": CoordinateMedian,
    "trimmed_mean": TrimmedMean, "sign": MajorityVote, "majority_vote": MajorityVote,
    "geometric_median": GeometricMedian, "krum": Krum, "multi_krum": Krum,
}


def make_aggregator(spec, **kw) -> Aggregator:
    """An :class:`Aggregator` from a name (``"mean"``, ``"median"``, ``"trimmed_mean"`` (``trim=``),
    ``"majority_vote"``/``"sign"``, ``"geometric_median"``, ``"krum"``/``"multi_krum"`` (``f=``, ``m=``)),
    an :class:`Aggregator` (returned as is) or a plain callable ``[n, d] -> [d]`` (wrapped)."""
    if isinstance(spec, Aggregator):
        if kw:
            raise ValueError("make_aggregator: keyword arguments only go with an aggregator name")
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _NAMES:
            raise ValueError(f"unknown aggregator {spec!r}; known: {', '.join(sorted(_NAMES))}")
        if key in ("trimmed_mean",) and "trim" not in kw:
            raise ValueError("make_aggregator('trimmed_mean') needs trim=<values dropped on each side>")
        if key in ("krum", "multi_krum") and "f" not in kw:
            raise ValueError(f"make_aggregator({spec!r}) needs f=<number of Byzantine workers to tolerate>")
        return _NAMES[key](**kw)
    if callable(spec):
        return _Callable(spec)
    raise TypeError(f"aggregator must be a name, an Aggregator or a callable, got {type(spec).__name__}")


class _Callable(Aggregator):
    name = "custom"

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", "custom")

    def __call__(self, X):
        return self.fn(X)

    def max_byzantine(self, n):
        raise NotImplementedError(f"the robustness of the custom aggregator {self.name!r} is unknown")


def aggregate(comm, X: torch.Tensor, aggregator) -> torch.Tensor:
    """Gather the rows through the communication interface and aggregate them: ``aggregator(comm.gather(X))``."""
    return make_aggregator(aggregator)(comm.gather(X))

