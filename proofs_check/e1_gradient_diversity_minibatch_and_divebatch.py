"""E1 `gradient_diversity_minibatch_and_divebatch`: exact minibatch moments, Yin's batch bound, DiveBatch."""
from __future__ import annotations

import numpy as np

from hetlab import batch as hb

from ._base import CheckResult, Criterion, Timer

ID = "E1"
NAME = "gradient_diversity_minibatch_and_divebatch"
CLAIM = ("Sampling B of N per-sample gradients without replacement: E||sum_B g||^2 = B/N sum||g||^2 + "
         "B(B-1)/(N(N-1)) (||S||^2 - sum||g||^2) and E||mean_B g - S/N||^2 = (N-B)/(B(N-1)) V; if B - 1 <= delta N Delta "
         "the second moment is within (1 + delta N/(N-1)) of B serial steps. DiveBatch's batch size never decreases, "
         "Delta-hat diverges at a non-interpolating optimum and B reaches B_max soon after the gradient vanishes.")
SOURCE = ("Yin et al. AISTATS 2018; DiveBatch (Chen, Wang, Sundaram) rule from public code of unconfirmed provenance "
          "(THEORY.md E1; moment identities derived and verified)")

N, B, D = 12, 4, 4
N_DB, D_DB, EPOCHS = 1024, 20, 20


def run(seed: int = 0) -> CheckResult:
    with Timer() as t:
        rng = np.random.default_rng(seed)
        G = rng.normal(0.3, 1.0, (N, D))
        a_pred, a_enum = hb.minibatch_sum_second_moment(G, B), hb.enumerate_sum_second_moment(G, B)
        b_pred, b_enum = hb.minibatch_mean_variance(G, B), hb.enumerate_mean_variance(G, B)
        a_repl = hb.minibatch_sum_second_moment(G, B, replace=True)
        Delta = hb.diversity(G)
        S = G.sum(0)
        a_alt = B / N * float(S @ S) * (Delta + (B - 1) / (N - 1) * (1 - Delta))
        # (c) on 100 random instances: every B with B - 1 <= delta N Delta, checked against enumeration
        worst = -np.inf
        n_checked = 0
        for _ in range(100):
            Gi = rng.normal(rng.uniform(0, 1), 1.0, (N, D))
            delta = rng.uniform(0.05, 1.0)
            for Bi in range(1, N + 1):
                cond, _, rhs = hb.yin_bound(Gi, Bi, delta)
                if cond:
                    worst = max(worst, hb.enumerate_sum_second_moment(Gi, Bi) / rhs - 1)
                    n_checked += 1
        # DiveBatch on noisy least squares
        Z = rng.standard_normal((N_DB, D_DB))
        y = Z @ rng.standard_normal(D_DB) + 0.5 * rng.standard_normal(N_DB)
        db = hb.DiveBatch(B0=16, B_max=512, delta=0.1, lr0=0.01, lr_max=0.5)
        out = db.run_least_squares(Z, y, EPOCHS, seed=seed)
        Bk, div, gn = out["B"], out["div"], out["grad_norm"]
        small = np.flatnonzero(gn < 0.01 * out["grad_norm0"])
        full = np.flatnonzero(Bk >= db.B_max)
        # B_k is the batch used in epoch k, set from epoch k-1's diversity
        lag = (full[0] - small[0]) if (small.size and full.size) else np.inf
        # inverted orientation (pitfall 1): ||sum g||^2 / sum ||g||^2 over the same epochs
        inv = 1.0 / div
        crit = [
            Criterion("(a) E||sum_B g||^2 closed form = enumeration of 495 subsets (relative; reference 30.0705)",
                      a_enum, a_pred, 1e-12, "rel"),
            Criterion("(a) Delta form of (a) (relative)", a_alt, a_enum, 1e-12, "rel"),
            Criterion("(b) E||mean_B g - S/N||^2 closed form = enumeration (relative)", b_enum, b_pred, 1e-12, "rel"),
            Criterion(f"(c) Yin bound on 100 instances ({n_checked} (instance, B) pairs): max E/rhs - 1",
                      worst, 0.0, 1e-12, "<="),
            Criterion("DiveBatch: B_k non-decreasing (min increment)", float(np.min(np.diff(Bk))), 0.0, 0.0, ">="),
            Criterion("DiveBatch: Delta-hat(15)/Delta-hat(0) (reference 0.022 -> 26)", div[15] / div[0], 100.0,
                      100.0, ">="),
            Criterion("DiveBatch: epochs from ||grad f|| < 1% to B = B_max (<= 5)", lag, 5.0, 5.0, "<="),
            # negative controls
            Criterion("[control] with-replacement formula matches the without-replacement enumeration",
                      a_enum, a_repl, 1e-12, "rel", negative=True),
            Criterion("[control] inverted diversity ||S||^2/sum||g||^2 grows >= 100x (pitfall 1)",
                      inv[15] / inv[0], 100.0, 100.0, ">=", negative=True),
        ]
    return CheckResult(ID, NAME, CLAIM, SOURCE, seed, crit, t.elapsed,
                       data={"B": Bk, "div": div, "grad_norm": gn, "grad_norm0": out["grad_norm0"],
                             "a": (a_enum, a_pred), "b": (b_enum, b_pred), "B_max": db.B_max})


def figure(result: CheckResult, ax=None):
    """DiveBatch: measured Delta-hat, batch size and gradient norm per epoch; (a) and (b) enumeration vs closed form."""
    from hetlab.plot import new_axes
    ax = new_axes(ax)
    d = result.data
    k = np.arange(len(d["B"]))
    ax.semilogy(k, d["div"], "o-", ms=3, label=r"$\hat\Delta_k$ measured")
    ax.semilogy(k, d["B"], "s-", ms=3, label=r"$B_k$")
    ax.semilogy(k, d["grad_norm"] / d["grad_norm0"], "^-", ms=3, label=r"$\|\nabla f\|/\|\nabla f_0\|$")
    ax.axhline(d["B_max"], color="k", ls="--", lw=1, label=r"$B_{\max}$")
    ax.axhline(0.01, color="gray", ls=":", lw=1, label="1% gradient")
    ax.set_xlabel("epoch k")
    ax.set_title(f"E1: (a) enum {d['a'][0]:.4f} vs pred {d['a'][1]:.4f}; (b) {d['b'][0]:.4f} vs {d['b'][1]:.4f}")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return ax
