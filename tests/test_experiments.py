"""Experiment grids: seeds from axis values, resumable grids, fairness columns, step-size tuning, bands."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hetlab.algorithms import FedAvg, MinibatchSGD
from hetlab.experiments import Grid, config_seed, run_grid, summarize, tune_lr
from hetlab.problems import GaussianNoiseOracle, random_quadratics


def build(cfg, seed):
    prob = random_quadratics(6, 3, seed=seed % 1000, hessian_heterogeneity=cfg.get("het", 1.0))
    K = cfg.get("K", 2)
    meth = FedAvg(cfg["lr"], K, check_stability=False) if cfg["algorithm"] == "fedavg" else \
        MinibatchSGD(cfg["lr"], batches=K, check_stability=False)
    return {"method": meth, "problem": prob, "oracle": GaussianNoiseOracle(prob, 0.1), "local_steps": K}


def test_seed_depends_on_the_configuration_not_on_the_grid():
    a = {g[0]["het"]: g[2] for g in Grid(het=[0.5, 1.0], lr=[0.1], algorithm=["fedavg"])}
    b = {g[0]["het"]: g[2] for g in Grid(algorithm=["sgd", "fedavg"], lr=[0.3, 0.1], het=[1.0, 2.0, 0.5])}
    assert a[0.5] == b[0.5] and a[1.0] == b[1.0] and a[0.5] != a[1.0]
    assert config_seed({"het": 1.0}, 0) != config_seed({"het": 1.0}, 1)
    # algorithms and step sizes compared in one setting share the seed (same data, same noise stream)
    assert config_seed({"het": 1.0, "algorithm": "x", "lr": 1}) == config_seed({"het": 1.0, "algorithm": "y"})
    with pytest.raises(ValueError, match="non-empty list"):
        Grid(lr=[])


def test_run_grid_is_resumable_and_adds_fairness_columns(tmp_path, monkeypatch):
    grid = Grid(repetitions=2, algorithm=["fedavg", "sgd"], lr=[0.05], het=[1.0], K=[3])
    calls = {"n": 0}

    def counting(cfg, seed):
        calls["n"] += 1
        return build(cfg, seed)

    h1 = run_grid(counting, grid, 4, out_dir=tmp_path, eval_every=2)
    assert calls["n"] == 4 and len(list(tmp_path.glob("*.csv"))) == 4
    rec = [r for r in h1.records if r["round"] == 4][0]
    assert rec["grad_evals"] == 12 and rec["comm_rounds"] == 4 and rec["K"] == 3 and "repetition" in rec
    h2 = run_grid(counting, grid, 4, out_dir=tmp_path, eval_every=2)
    assert calls["n"] == 4                                   # nothing rerun
    assert sorted(h1.column("suboptimality")) == pytest.approx(sorted(h2.column("suboptimality")), rel=1e-12)
    with pytest.raises(ValueError, match="build\\(\\) must return"):
        run_grid(lambda c, s: {"method": None}, Grid(lr=[1]), 1)


def test_tune_lr_picks_the_best_and_reports_divergence():
    cfg = {"algorithm": "fedavg", "het": 1.0, "K": 2}
    prob = build({**cfg, "lr": 0.1}, config_seed(cfg))["problem"]
    lrs = [0.01 / prob.L, 0.5 / prob.L, 50.0 / prob.L]
    best, scores = tune_lr(build, cfg, lrs, 30)
    assert scores[lrs[2]] == math.inf
    assert best == min(lrs[:2], key=lambda l: scores[l]) and best == lrs[1]
    with pytest.raises(ValueError, match="diverged"):
        tune_lr(build, cfg, [50.0 / prob.L], 30)


def test_summarize_mean_and_t_band():
    grid = Grid(repetitions=3, algorithm=["fedavg"], lr=[0.05], het=[1.0])
    h = run_grid(build, grid, 3)
    rows = summarize(h, "suboptimality", by="algorithm")
    last = [r for r in rows if r["round"] == 3][0]
    v = np.array([r["suboptimality"] for r in h.records if r["round"] == 3])
    half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / math.sqrt(3)
    assert last["count"] == 3 and last["mean"] == pytest.approx(v.mean())
    assert last["hi"] - last["mean"] == pytest.approx(half)


def test_summarize_orders_rounds_numerically():
    from hetlab.run import History
    h = History([{"algorithm": "a", "round": r, "loss": float(r)} for r in (0, 5, 10, 50, 15)])
    assert [r["round"] for r in summarize(h, "loss", by="algorithm")] == [0, 5, 10, 15, 50]
