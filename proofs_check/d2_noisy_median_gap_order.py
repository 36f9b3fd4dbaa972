"""D2 `noisy_median_gap_order`: noise closes the gap between the expected median and the mean."""
from __future__ import annotations

import math

import numpy as np
import torch

from hetlab import aggregate as agg
from hetlab import closed_forms_median as cfm
from hetlab.algorithms.robust import Perturbation
from hetlab.exact import fit_slope, mc_interval

from ._base import CheckResult, Criterion, Timer

ID = "D2"
NAME = "noisy_median_gap_order"
CLAIM = ("Perturbing n = 2k+1 values by b*xi (symmetric noise) before the median closes the gap to the mean: "
         "E med = mean + O(b^-2), E sign(med) = (c_n/b) mean + O(b^-3) with c_n = 2 phi(0) n C(2k,k) 4^-k, and the "
         "zero of noisy signGD's expected step on a heterogeneous 1-D quadratic is O(b^-2) from x_star (exact "
         "subset sums + quadrature); noisy signSGD-MV with b = 0.5 (dT)^(1/4), eta = 1/sqrt(dT) drives the "
         "time-averaged ||grad f|| down (compatible with the O(d^(3/4) T^(-1/4)) bound), the noiseless one does not.")
SOURCE = ("Chen, Chen, Sun, Wu, Hong 2020 (noisy signSGD / medianSGD); orders and c_n derived and verified by "
          "quadrature (THEORY.md D2)")

G_GAP = np.array([0.0, 0.0, 3.0])            # mean 1, median 0
BS = np.array([4.0, 8.0, 16.0, 32.0, 64.0])
A1, M1 = np.array([1.0, 2.0, 0.5]), np.array([0.0, 1.0, 4.0])
THEORY_GAP_B8 = -0.01277                     # THEORY D2 reference value (independent script)
B_MC_MEDIAN, B_MC_SIGN, N_MC = 8.0, 4.0, 2_000_000
TS = (1000, 4000, 16000, 64000)
SEEDS = 3
N_RATE, D_RATE = 5, 10


def rate_problem(seed: int = 0, n: int = N_RATE, d: int = D_RATE):
    r"""THEORY D1(c)'s separable quadratic: ``a ~ U[0.5, 2]``, then ``m ~ 2 N(0, 1)``, both ``[n, d]``
    (``numpy.random.default_rng(seed)``, in this order)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, size=(n, d))
    m = 2.0 * rng.standard_normal((n, d))
    return a, m


def as_problem(a, m):
    """The same separable quadratic as a :class:`~hetlab.problems.QuadraticProblem` (diagonal Hessians)."""
    from hetlab.problems import QuadraticProblem
    A = np.stack([np.diag(r) for r in np.asarray(a)])
    return QuadraticProblem.from_minimizers(A, np.asarray(m))


def simulate_majority_vote(a, m, lrs, bs, T, generator, *, x0=None, noise: str = "gaussian", chunk: int = 1000):
    r"""``R`` independent runs of (noisy) signSGD with majority vote on the separable quadratic ``(a, m)``,
    stacked as the rows of ``x [R, d]``, with the minimal per-step overhead (plain torch ops, no metrics
    inside the step):

    .. math:: x_r\leftarrow x_r-\eta_r\,\mathrm{sign}\Big(\sum_i\mathrm{sign}\big(a_i\odot x_r-a_i\odot m_i+b_r\xi_{r,i}\big)\Big).

    ``lrs``, ``bs`` (``[R]``): step and perturbation scale of every run; ``T`` (int or ``[R]``): run ``r`` is
    averaged over its first ``T_r`` iterates (all runs step ``max T`` times; the later iterates of a
    shorter run are simply not counted). The perturbation is drawn in chunks of ``chunk`` steps, for the
    runs with :math:`b_r>0` only: ``xi [len, R_noisy, n, d]`` from ``generator`` (:func:`library_majority_vote`
    replays one run through the library's :class:`~hetlab.algorithms.NoisySignSGD`). Returns
    ``(mean_grad_norm [R], x_T [R, d])``, ``mean_grad_norm[r]`` :math:`=\frac1{T_r}\sum_{t<T_r}\|\nabla f(x_t)\|`.
    """
    a_t = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    c_t = a_t * torch.as_tensor(np.asarray(m), dtype=torch.float64)
    n, d = a_t.shape
    lrs = torch.as_tensor(np.asarray(lrs, dtype=np.float64))
    R = lrs.numel()
    bs = torch.as_tensor(np.broadcast_to(np.asarray(bs, dtype=np.float64), (R,)).copy())
    Tr = torch.as_tensor(np.broadcast_to(np.asarray(T, dtype=np.int64), (R,)).copy())
    T_max = int(Tr.max())
    x = (torch.zeros(R, d, dtype=torch.float64) if x0 is None
         else torch.as_tensor(x0, dtype=torch.float64).expand(R, d).clone())
    lr_col = lrs.reshape(R, 1)
    abar, cbar = a_t.mean(0), c_t.mean(0)
    unit = Perturbation(noise, 1.0)
    noisy = torch.nonzero(bs > 0).flatten()          # noise is drawn for these rows only
    acc = torch.zeros(R, dtype=torch.float64)
    for t0 in range(0, T_max, chunk):
        L = min(chunk, T_max - t0)
        bN = None
        if len(noisy):
            bN = torch.zeros(L, R, n, d, dtype=torch.float64)
            bN[:, noisy] = bs[noisy].reshape(1, -1, 1, 1) * unit.sample((L, len(noisy), n, d), torch.float64, generator)
        buf = torch.empty(L, R, d, dtype=torch.float64)
        for j in range(L):
            buf[j] = x
            G = a_t * x.unsqueeze(1) - c_t
            if bN is not None:
                G += bN[j]
            v = torch.sign(G).sum(1).sign_()
            x = x - lr_col * v
        norms = torch.linalg.vector_norm(abar * buf - cbar, dim=-1)            # [L, R]
        t_idx = torch.arange(t0, t0 + L).unsqueeze(1)
        acc += (norms * (t_idx < Tr.unsqueeze(0))).sum(0)
    return (acc / Tr).numpy(), x.numpy()


class ReplayPerturbation(Perturbation):
    """The perturbation that :func:`simulate_majority_vote` gives its ``row``-th noisy run (of ``R`` noisy runs),
    for the library: draws the same chunks from its own generator (seeded like the simulation's) and
    returns ``b * chunk[t, row]`` at the library's ``t``-th call."""

    def __init__(self, b, R, row, n, d, T, seed, noise="gaussian", chunk=1000):
        super().__init__(noise, b)
        self.R, self.row, self.n, self.d, self.T, self.chunk = R, row, n, d, T, chunk
        self.gen = torch.Generator().manual_seed(seed)
        self.unit = Perturbation(noise, 1.0)
        self.t, self.buf = 0, None

    def sample(self, shape, dtype=torch.float64, generator=None, device=None):
        if self.t % self.chunk == 0:
            L = min(self.chunk, self.T - self.t)
            self.buf = self.unit.sample((L, self.R, self.n, self.d), torch.float64, self.gen)
        out = self.scale * self.buf[self.t % self.chunk, self.row]
        self.t += 1
        assert tuple(shape) == tuple(out.shape)
        return out


def library_majority_vote(a, m, lr, b, T, R, row, seed, noise="gaussian", chunk=1000):
    """A run of :func:`simulate_majority_vote` computed by the library's signSGD-MV
    (``RobustAggregationSGD(lr, "majority_vote", noise)``) with the same perturbation draws: ``row`` is the
    run's position among the ``R`` runs with ``b > 0`` (ignored when ``b = 0``), ``T`` the simulation's
    number of steps. Returns ``(mean_grad_norm, x_T)``."""
    from hetlab.algorithms import RobustAggregationSGD
    from hetlab.comm import SimulatedComm
    from hetlab.problems import Oracle
    prob = as_problem(a, m)
    method = RobustAggregationSGD(lr, "majority_vote",
                                  noise=ReplayPerturbation(b, R, row, prob.n, prob.d, T, seed, noise, chunk))
    state = method.init(torch.zeros(prob.d, dtype=torch.float64), prob)
    oracle, comm, total = Oracle(prob), SimulatedComm(prob.n), 0.0
    for _ in range(T):
        total += float(prob.global_grad(state["x"]).norm())
        state = method.step(state, oracle, comm, None)
    return total / T, state["x"].numpy()


def rate_experiment(seed: int = 0, Ts=TS, seeds: int = SEEDS, noiseless: bool = True):
    r"""THEORY D2(iv): time-averaged :math:`\|\nabla f\|` of noisy signSGD-MV (:math:`b=0.5(dT)^{1/4}`,
    :math:`\eta=1/\sqrt{dT}`, ``seeds`` runs per ``T``) and, with ``noiseless``, of plain signSGD-MV
    (:math:`b=0`, deterministic: one run per ``T``), all stacked in one simulation.
    Returns ``{"noisy": [len(Ts), seeds], "noiseless": [len(Ts)], "runtime_s": float}``."""
    import time
    a, m = rate_problem(seed)
    d = a.shape[1]
    lrs, bs, Tr = [], [], []
    for T in Ts:
        for _ in range(seeds):
            lrs.append(1.0 / math.sqrt(d * T)), bs.append(0.5 * (d * T) ** 0.25), Tr.append(T)
    if noiseless:
        for T in Ts:
            lrs.append(1.0 / math.sqrt(d * T)), bs.append(0.0), Tr.append(T)
    t0 = time.perf_counter()
    avg, _ = simulate_majority_vote(a, m, lrs, bs, Tr, torch.Generator().manual_seed(seed))
    out = {"noisy": avg[: len(Ts) * seeds].reshape(len(Ts), seeds), "runtime_s": time.perf_counter() - t0}
    if noiseless:
        out["noiseless"] = avg[len(Ts) * seeds:]
    return out


def gap_experiment(bs=BS):
    """Exact quadrature values (no Monte Carlo) of THEORY D2 (i)-(iii) on the grid of noise scales ``bs``."""
    gbar = float(G_GAP.mean())
    cn = cfm.sign_slope_constant(len(G_GAP))
    x_star = float((A1 * M1).sum() / A1.sum())
    gap = np.array([cfm.expected_median(G_GAP, b) - gbar for b in bs])
    esign = np.array([cfm.expected_sign_median(G_GAP, b) for b in bs])
    resid = np.abs(esign - cn * gbar / bs)
    offset = np.array([abs(cfm.noisy_sign_root(A1, M1, b) - x_star) for b in bs])
    return {"bs": np.asarray(bs, dtype=float), "gap": gap, "esign": esign, "sign_resid": resid,
            "offset": offset, "cn": cn, "x_star": x_star}


def _mc_library(b: float, kind: str, seed: int):
    """Monte Carlo through the library: ``N_MC`` draws of the rows ``g_i + b xi_i`` (``Perturbation``),
    aggregated by ``coordinate_median`` or ``majority_vote`` (samples as coordinates)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.as_tensor(G_GAP).unsqueeze(1)
    X = g + Perturbation("gaussian", b).sample((len(G_GAP), N_MC), torch.float64, gen)
    out = agg.coordinate_median(X) if kind == "median" else agg.majority_vote(X)
    return out.numpy()


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        ge = gap_experiment()
        bs = ge["bs"]
        s_gap = fit_slope(bs, np.abs(ge["gap"])).slope
        s_sign = fit_slope(bs, ge["sign_resid"]).slope
        s_off = fit_slope(bs, ge["offset"]).slope
        gap_b8 = float(ge["gap"][list(bs).index(8.0)])
        # Monte Carlo through the library (aggregators + Perturbation) against the quadrature (M5)
        med_s = _mc_library(B_MC_MEDIAN, "median", seed)
        sgn_s = _mc_library(B_MC_SIGN, "sign", seed + 1)
        pred_med = cfm.expected_median(G_GAP, B_MC_MEDIAN)
        pred_sgn = cfm.expected_sign_median(G_GAP, B_MC_SIGN)
        m_med, lo_med, hi_med = mc_interval(med_s)
        m_sgn, lo_sgn, hi_sgn = mc_interval(sgn_s)
        z_med = abs(m_med - pred_med) / ((hi_med - lo_med) / 2)
        z_sgn = abs(m_sgn - pred_sgn) / ((hi_sgn - lo_sgn) / 2)
        # (iv) the rate experiment (stacked simulation)
        re = rate_experiment(seed)
        noisy_mean = re["noisy"].mean(1)
        s_noisy = fit_slope(TS, noisy_mean).slope
        s_plain = fit_slope(TS, re["noiseless"]).slope
        plain_gap = float(agg.coordinate_median(torch.as_tensor(G_GAP)[:, None])[0]) - float(G_GAP.mean())
        crit = [
            Criterion("(ii) slope of |E med - mean| in b (b = 4..64, quadrature)", s_gap, -2.0, 0.05, "abs"),
            Criterion("(ii) gap E med - mean at b = 8 vs THEORY reference -0.01277", gap_b8, THEORY_GAP_B8, 5e-6,
                      "abs"),
            Criterion("(i) slope of |E sign med - (c_n/b) mean| in b", s_sign, -3.0, 0.05, "abs"),
            Criterion("(iii) slope of |x_root(b) - x_star| (zero of noisy signGD's expected step)", s_off, -2.0, 0.05,
                      "abs"),
            Criterion(f"library noisy median, b = {B_MC_MEDIAN:g}: |MC - quadrature| in units of 3 SE (M5)", z_med,
                      1.0, 1.0, "<="),
            Criterion(f"library noisy median, b = {B_MC_MEDIAN:g}: MC vs quadrature, relative", m_med, pred_med, 0.05,
                      "rel"),
            Criterion(f"library noisy majority vote, b = {B_MC_SIGN:g}: |MC - exact| in units of 3 SE (M5)", z_sgn,
                      1.0, 1.0, "<="),
            Criterion(f"library noisy majority vote, b = {B_MC_SIGN:g}: MC vs exact, relative", m_sgn, pred_sgn, 0.05,
                      "rel"),
            Criterion("(iv) noisy signSGD-MV: slope of time-averaged ||grad f|| in T (<= -0.12; bound -1/4)", s_noisy,
                      -0.25, -0.12, "<="),
            Criterion("(iv) noiseless signSGD-MV: slope in T >= -0.02 (no convergence)", s_plain, 0.0, -0.02, ">="),
            Criterion("[control] noiseless signSGD-MV decays with slope <= -0.12", s_plain, -0.25, -0.12, "<=",
                      negative=True),
            Criterion("[control] the median equals the mean without noise (|med g - mean g| <= 1e-3)", abs(plain_gap),
                      0.0, 1e-3, "<=", negative=True),
            Criterion("[control] the sign residual is only O(b^-2) (slope -2 +- 0.05)", s_sign, -2.0, 0.05, "abs",
                      negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={**ge, "slopes": {"gap": s_gap, "sign": s_sign, "offset": s_off, "noisy": s_noisy,
                                              "noiseless": s_plain},
                             "Ts": np.array(TS, dtype=float), "noisy": re["noisy"], "noiseless": re["noiseless"],
                             "rate_runtime_s": re["runtime_s"],
                             "grad_norm_x_med": float(cfm.global_grad_norm_separable(
                                 *rate_problem(seed), cfm.median_fixed_point(*rate_problem(seed))))})


def figure(result: CheckResult, ax=None):
    """|E med - mean|, the sign residual and the root offset against b (log-log) with the predicted orders."""
    import matplotlib.ticker
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    bs = d["bs"]
    for key, lab, order, mk in [("gap", r"$|\mathbb{E}\,\mathrm{med}-\bar g|$", -2, "o"),
                                ("sign_resid", r"$|\mathbb{E}\,\mathrm{sign\,med}-c_n\bar g/b|$", -3, "s"),
                                ("offset", r"$|x_{\rm root}(b)-x^\star|$ (1-D quadratic)", -2, "^")]:
        y = np.abs(d[key])
        ax.loglog(bs, y, mk, ms=6, label=f"{lab}, quadrature")
        ax.loglog(bs, y[0] * (bs / bs[0]) ** order, "--", lw=1, color="gray")
    ax.plot([], [], "--", color="gray", lw=1, label=r"predicted orders $b^{-2}$, $b^{-3}$")
    ax.set_xlabel("noise scale $b$")
    ax.set_ylabel("gap")
    ax.set_title("D2: noise closes the median-mean gap")
    ax.set_xticks(bs)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(frameon=False, fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return ax


def figure_rate(result: CheckResult, ax=None):
    """Time-averaged ||grad f|| against T: noisy signSGD-MV (3 seeds), the noiseless one, the T^(-1/4) guide."""
    import matplotlib.ticker
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    Ts, noisy = d["Ts"], d["noisy"]
    for s in range(noisy.shape[1]):
        ax.loglog(Ts, noisy[:, s], ".", color="C0", alpha=0.5)
    ax.loglog(Ts, noisy.mean(1), "o-", color="C0",
              label=fr"noisy signSGD-MV, $b=0.5(dT)^{{1/4}}$ (slope {d['slopes']['noisy']:.2f})")
    ax.loglog(Ts, d["noiseless"], "s-", color="C3",
              label=f"signSGD-MV, no noise (slope {d['slopes']['noiseless']:.3f})")
    ax.axhline(d["grad_norm_x_med"], color="C3", ls=":", lw=1, label=r"predicted plateau $\|\nabla f(x_{\rm med})\|$")
    ax.loglog(Ts, noisy.mean(1)[0] * (Ts / Ts[0]) ** -0.25, "--", color="gray", lw=1,
              label=r"$T^{-1/4}$ (order of the upper bound)")
    ax.set_xlabel("iterations $T$")
    ax.set_ylabel(r"time-averaged $\|\nabla f(x_t)\|$, $t<T$")
    ax.set_title(r"D2(iv): $\eta=1/\sqrt{dT}$, $n=5$, $d=10$")
    ax.set_xticks(Ts)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([0.5, 1.0, 2.0, 3.0])
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(0.2, 4.0)
    ax.legend(frameon=False, fontsize=7, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return ax
