r"""Median- and sign-based methods, their noisy versions, and error-feedback signSGD.

The core is :class:`RobustAggregationSGD`: every worker computes its (stochastic) gradient at the
server model, optionally adds a perturbation :math:`b\,\xi_i`, optionally a Byzantine worker replaces
its row (:mod:`hetlab.faults`), and the server aggregates the gathered rows with any aggregator of
:mod:`hetlab.aggregate` and steps:

.. math:: x^{t+1}=x^t-\eta\,\mathrm{AGG}\big(\{g_i(x^t)+b\,\xi_i^t\}_{i\in S_t}\big).

The named methods are thin subclasses (Chen et al. 2020 for the noisy versions):

=========================  ===================================================================
method                     update
=========================  ===================================================================
:class:`MedianSGD`         :math:`x\leftarrow x-\eta\,\mathrm{med}_i(g_i)` (coordinate-wise)
:class:`SignSGDMajorityVote`  :math:`x\leftarrow x-\eta\,\mathrm{sign}\big(\sum_i\mathrm{sign}(g_i)\big)`
:class:`NoisyMedianSGD`    :math:`x\leftarrow x-\eta\,\mathrm{med}_i(g_i+b\,\xi_i)`
:class:`NoisySignSGD`      :math:`x\leftarrow x-\eta\,\mathrm{sign}\big(\sum_i\mathrm{sign}(g_i+b\,\xi_i)\big)`
:class:`EFSignSGD`         scaled sign with error feedback (Karimireddy et al. 2019), mean aggregation
=========================  ===================================================================

**Perturbation** (:class:`Perturbation`): :math:`\xi_i^t` i.i.d. over workers, coordinates and steps,
either standard Gaussian (``"gaussian"``, :math:`b\xi\sim\mathcal N(0,b^2)`) or uniform on
:math:`[-1,1]` (``"uniform"``, :math:`b\xi\sim\mathcal U[-b,b]`); the scale is :math:`b`. With
:math:`b=0` nothing is drawn and the noisy methods are exactly the noiseless ones. Adding noise makes
the *expected* median (or sign of the median) a smoothed function of the inputs whose first-order
term is proportional to the mean: :math:`\mathbb E\,\mathrm{med}_i(g_i+b\xi_i)=\bar g+O(b^{-2})` and
:math:`\mathbb E\,\mathrm{sign}\,\mathrm{med}_i(g_i+b\xi_i)=\frac{c_n}{b}\bar g+O(b^{-3})` for odd
:math:`n` (THEORY D2, :mod:`hetlab.closed_forms_median`).

**Sub-sampling** (``subsample=m``). The server uses the values of a random subset of the workers at
each step: :math:`S_t` is a uniformly random subset of :math:`m` distinct workers (without replacement,
independent across steps, drawn from the run's generator before anything else), and only those rows
are gathered and aggregated; ``None`` means all :math:`n` workers. (This is our formalisation; THEORY D2
does not specify it.) It is a second source of randomness that smooths the median: for :math:`m=1`
the server steps along one random worker's value, whose expectation is the mean (plain SGD with client
sampling, no robustness); for :math:`m=n` it is the full median. In between, for odd
:math:`m=2k+1`, the expected update is the order-statistic average
:math:`\sum_j g_{(j)}\binom{j-1}{k}\binom{n-j}{k}/\binom nm` per coordinate (the sorted values
:math:`g_{(1)}\le\dots\le g_{(n)}`). Use odd :math:`m` for the median and the vote (an even :math:`m`
averages the two middle values, and ties the vote to 0).

Everything is written against stacked ``[n, d]`` tensors and ``comm.gather``: no loop over workers.
"""
from __future__ import annotations

import math

import torch

from .. import aggregate as agg
from .base import Method, check_local_lr, check_x0, num_participants, refuse_sharded_sampling, sample_clients

NOISES = ("gaussian", "uniform")


class Perturbation:
    r"""The perturbation :math:`b\,\xi` added to every worker's gradient before aggregation:
    ``kind="gaussian"`` (:math:`\xi\sim\mathcal N(0,1)` per coordinate) or ``"uniform"``
    (:math:`\xi\sim\mathcal U[-1,1]`); ``scale`` is :math:`b\ge0`. ``density_at_zero`` is
    :math:`\varphi(0)` of :math:`\xi` (:math:`1/\sqrt{2\pi}` or :math:`1/2`)."""

    def __init__(self, kind: str = "gaussian", scale: float = 0.0):
        if kind not in NOISES:
            raise ValueError(f"unknown perturbation {kind!r}; choose 'gaussian' or 'uniform'")
        scale = float(scale)
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"the perturbation scale b must be finite and >= 0, got {scale}")
        self.kind, self.scale = kind, scale

    @property
    def density_at_zero(self) -> float:
        return 1.0 / math.sqrt(2 * math.pi) if self.kind == "gaussian" else 0.5

    def sample(self, shape, dtype=torch.float64, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """A draw of :math:`b\\,\\xi` with the given shape."""
        if self.kind == "gaussian":
            xi = torch.randn(shape, dtype=dtype, generator=generator, device=device)
        else:
            xi = 2.0 * torch.rand(shape, dtype=dtype, generator=generator, device=device) - 1.0
        return self.scale * xi

    def __repr__(self):
        return f"Perturbation({self.kind!r}, scale={self.scale:g})"


def _as_perturbation(noise, b) -> Perturbation | None:
    if isinstance(noise, Perturbation):
        if b is not None:
            raise ValueError("give the perturbation scale either inside the Perturbation or as b, not both")
        return noise
    if noise is None:
        if b not in (None, 0, 0.0):
            raise ValueError(f"a perturbation scale b={b} was given without a noise kind; "
                             "pass noise='gaussian' or 'uniform'")
        return None
    return Perturbation(noise, 0.0 if b is None else b)


class RobustAggregationSGD(Method):
    r"""SGD whose server aggregates the workers' (perturbed) gradients with ``aggregator``.

    Parameters
    ----------
    lr : float
        Step size :math:`\eta`.
    aggregator : str, :class:`~hetlab.aggregate.Aggregator` or callable
        Any aggregator of :mod:`hetlab.aggregate` (``"mean"``, ``"median"``, ``"majority_vote"``, ...).
    noise : :class:`Perturbation`, ``"gaussian"``, ``"uniform"`` or None
        Perturbation added to every gradient before aggregation (scale ``b``).
    b : float, optional
        Perturbation scale when ``noise`` is a kind name.
    faults : :class:`~hetlab.faults.ByzantineFaults`, optional
        Byzantine workers whose rows are replaced after the perturbation.
    subsample : int, optional
        Number :math:`m` of workers whose values the server uses each step (uniform random subset).
    check_stability : bool
        For aggregators on the gradients' scale (not sign outputs), reject :math:`\eta\ge2/L`.

    Order of the random draws in a step (from the run's generator): subset, oracle noise,
    perturbation, random attacks.
    """

    name = "robust_sgd"

    def __init__(self, lr: float, aggregator="mean", noise=None, b: float | None = None, faults=None,
                 subsample: int | None = None, check_stability: bool = True):
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{self.name}: the step size lr must be positive and finite, got {lr}")
        if subsample is not None and (isinstance(subsample, bool) or not isinstance(subsample, int) or subsample < 1):
            raise ValueError(f"{self.name}: subsample must be a positive number of workers (or None for all), "
                             f"got {subsample!r}")
        self.lr = lr
        self.aggregator = agg.make_aggregator(aggregator)
        self.perturbation = _as_perturbation(noise, b)
        self.faults = faults
        self.subsample = subsample
        self.check_stability = check_stability

    # plain-typed description for the records
    def hyperparameters(self) -> dict:
        hp = {"lr": self.lr, "aggregator": repr(self.aggregator), "subsample": self.subsample,
              "check_stability": self.check_stability}
        hp["noise"] = None if self.perturbation is None else self.perturbation.kind
        hp["b"] = 0.0 if self.perturbation is None else self.perturbation.scale
        hp["faults"] = None if self.faults is None else repr(self.faults)
        return hp

    @property
    def b(self) -> float:
        return 0.0 if self.perturbation is None else self.perturbation.scale

    def init(self, x0, problem) -> dict:
        if self.subsample is not None:
            num_participants(problem.n, self.subsample)  # validates 1 <= m <= n
        if self.faults is not None:
            self.faults.num_byzantine(problem.n)
        if not self.aggregator.sign_output:
            check_local_lr(self.name, self.lr, problem, self.check_stability)
        return {"x": check_x0(x0, problem), "round": 0}

    def messages(self, x: torch.Tensor, oracle, comm, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows the server gathers at model ``x``: ``(G [m, d], idx)`` (``idx`` = the sampled worker
        ids, ``None`` when every worker takes part)."""
        problem = oracle.problem
        idx = None
        m = problem.n
        if self.subsample is not None:
            m = num_participants(problem.n, self.subsample)
            refuse_sharded_sampling(problem, self.name, True)
            idx = sample_clients(problem.n, m, generator)
        X = comm.broadcast(x, m)
        G = oracle.grad(X, idx, generator)
        if self.perturbation is not None and self.perturbation.scale > 0:
            G = G + self.perturbation.sample(G.shape, G.dtype, generator, G.device)
        if self.faults is not None:
            G = self.faults.apply(G, generator, idx=idx, n=problem.n)
        return G, idx

    def direction(self, x, oracle, comm, generator) -> torch.Tensor:
        """The aggregated direction ``AGG(rows) [d]`` the step moves against."""
        G, _ = self.messages(x, oracle, comm, generator)
        return self.aggregator(comm.gather(G))

    def step(self, state, oracle, comm, generator):
        v = self.direction(state["x"], oracle, comm, generator)
        return {"x": state["x"] - self.lr * v, "round": state["round"] + 1}


def _check_b(name, b, required_positive, noise="gaussian"):
    if noise not in NOISES:
        raise ValueError(f"{name}: unknown perturbation {noise!r}; choose 'gaussian' or 'uniform'")
    b = float(b)
    if not (math.isfinite(b) and b >= 0):
        raise ValueError(f"{name}: the perturbation scale b must be finite and >= 0, got {b}")
    if required_positive and b == 0:
        raise ValueError(f"{name}: b = 0 is the noiseless method; use "
                         f"{'MedianSGD' if 'median' in name else 'SignSGDMajorityVote'} or pass b > 0")
    return b


class MedianSGD(RobustAggregationSGD):
    r"""medianSGD (Yin et al. 2018): :math:`x\leftarrow x-\eta\,\mathrm{med}_i(g_i+b\xi_i)`, coordinate-wise
    median (``b = 0`` by default: no perturbation). On heterogeneous separable quadratics with exact
    gradients it converges to :math:`x_{\rm med}` (:math:`\mathrm{med}_i\,a_{ic}(x_c-b_{ic})=0`), not to
    :math:`x^\star` (THEORY D1)."""

    name = "median_sgd"

    def __init__(self, lr: float, b: float = 0.0, noise: str = "gaussian", faults=None, subsample=None,
                 check_stability: bool = True):
        b = _check_b(self.name, b, False, noise)
        super().__init__(lr, agg.CoordinateMedian(), noise if b > 0 else None, b if b > 0 else None,
                         faults, subsample, check_stability)


class NoisyMedianSGD(MedianSGD):
    r"""Noisy medianSGD (Chen et al. 2020): the median of :math:`g_i+b\xi_i` with :math:`b>0`."""

    name = "noisy_median_sgd"

    def __init__(self, lr: float, b: float, noise: str = "gaussian", faults=None, subsample=None,
                 check_stability: bool = True):
        _check_b(self.name, b, True, noise)
        super().__init__(lr, b, noise, faults, subsample, check_stability)


class SignSGDMajorityVote(RobustAggregationSGD):
    r"""signSGD with majority vote (Bernstein et al. 2018, 2019):
    :math:`x\leftarrow x-\eta\,\mathrm{sign}\big(\sum_i\mathrm{sign}(g_i+b\xi_i)\big)` (``b = 0`` by
    default). For odd :math:`n` the vote is the sign of the median, so this is a median-based method:
    on heterogeneous data it ends in a band of width :math:`\eta` around :math:`x_{\rm med}` (THEORY D1)."""

    name = "signsgd_mv"

    def __init__(self, lr: float, b: float = 0.0, noise: str = "gaussian", faults=None, subsample=None):
        b = _check_b(self.name, b, False, noise)
        super().__init__(lr, agg.MajorityVote(), noise if b > 0 else None, b if b > 0 else None,
                         faults, subsample, check_stability=False)


class NoisySignSGD(SignSGDMajorityVote):
    r"""Noisy signSGD with majority vote (Chen et al. 2020), :math:`b>0`. With :math:`\eta=1/\sqrt{dT}` and
    :math:`b\propto(dT)^{1/4}` the paper's bound is :math:`\min_t\mathbb E\|\nabla f(x_t)\|=O(d^{3/4}T^{-1/4})`."""

    name = "noisy_signsgd_mv"

    def __init__(self, lr: float, b: float, noise: str = "gaussian", faults=None, subsample=None):
        _check_b(self.name, b, True, noise)
        super().__init__(lr, b, noise, faults, subsample)


class EFSignSGD(Method):
    r"""signSGD with error feedback (EF-signSGD, Karimireddy et al. 2019), one memory per worker:

    .. math::

        p_i=\eta\,g_i+e_i,\qquad \Delta_i=\frac{\|p_i\|_1}{d}\,\mathrm{sign}(p_i),\qquad
        e_i\leftarrow p_i-\Delta_i,\qquad x\leftarrow x-\frac1n\sum_i\Delta_i .

    Each worker sends :math:`d` signs and one scale; the server *averages* (it is mean-based). The error
    memory re-injects what the compression dropped: exactly,
    :math:`x_T=x_0-\eta\sum_{t<T}\nabla f(x_t)+\frac1n\sum_ie_i^T` (with exact gradients). Unlike the
    majority vote it does not stall at :math:`x_{\rm med}` on heterogeneous data: with a constant step it
    oscillates in a band around :math:`x^\star` whose width shrinks like :math:`\eta` (observed on the
    D1(c) problem). ``faults`` replaces the Byzantine workers' messages :math:`\Delta_i`.
    """

    name = "ef_signsgd"

    def __init__(self, lr: float, faults=None):
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{self.name}: the step size lr must be positive and finite, got {lr}")
        self.lr, self.faults = lr, faults

    def hyperparameters(self):
        return {"lr": self.lr, "faults": None if self.faults is None else repr(self.faults)}

    def init(self, x0, problem):
        x = check_x0(x0, problem)
        return {"x": x, "e": torch.zeros(problem.n, problem.d, dtype=x.dtype), "round": 0}

    def step(self, state, oracle, comm, generator):
        problem = oracle.problem
        X = comm.broadcast(state["x"])
        P = self.lr * oracle.grad(X, None, generator) + state["e"]
        Delta = (P.abs().sum(1, keepdim=True) / problem.d) * torch.sign(P)
        E = P - Delta
        if self.faults is not None:
            Delta = self.faults.apply(Delta, generator)
        return {"x": state["x"] - comm.mean(Delta), "e": E, "round": state["round"] + 1}
