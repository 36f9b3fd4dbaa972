"""The run loop: evaluation schedule, tidy records on disk, divergence, reproducibility."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hetlab import DivergenceError, History, measures, run
from hetlab.algorithms import GD, FedAvg, Scaffold
from hetlab.problems import GaussianNoiseOracle, pl_family, random_quadratics
from hetlab.run import default_metrics

DT = torch.float64


@pytest.fixture
def prob():
    return random_quadratics(6, 4, seed=1)


def _strip_time(hist):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in hist.records]


@pytest.mark.parametrize("rounds,every,expected", [(10, 3, [0, 3, 6, 9, 10]), (9, 3, [0, 3, 6, 9]),
                                                   (5, 1, [0, 1, 2, 3, 4, 5]), (4, 10, [0, 4]), (0, 1, [0])])
def test_evaluation_schedule(prob, rounds, every, expected):
    hist, state = run(FedAvg(0.1, 2), prob, rounds, eval_every=every, progress=False)
    assert [r["round"] for r in hist] == expected
    assert state["round"] == rounds
    assert len(hist) == len(expected)


def test_records_content(prob):
    hist, state = run(FedAvg(0.1, 2), prob, 6, eval_every=2, seed=3, progress=False, extra={"K": 2, "tag": "t"})
    for rec in hist:
        assert rec["method"] == "fedavg" and rec["seed"] == 3 and rec["K"] == 2 and rec["tag"] == "t"
        assert {"suboptimality", "dist_to_opt", "grad_norm_sq", "gradient_variance", "b_dissimilarity",
                "time_s"} <= rec.keys()
    last = hist.records[-1]
    x = state["x"]
    assert last["suboptimality"] == pytest.approx(float(prob.global_loss(x)) - prob.f_star, rel=1e-12)
    assert last["dist_to_opt"] == pytest.approx(float((x - prob.x_star).norm()), rel=1e-12)
    G = prob.local_grads(x)
    assert last["gradient_variance"] == pytest.approx(measures.gradient_variance(G, prob.weights), rel=1e-12)
    assert last["grad_norm_sq"] == pytest.approx(float(prob.global_grad(x) @ prob.global_grad(x)), rel=1e-12)
    # the first record is at x0 = 0
    assert hist.records[0]["dist_to_opt"] == pytest.approx(float(prob.x_star.norm()), rel=1e-14)
    assert hist.records[0]["suboptimality"] > hist.records[-1]["suboptimality"] > 0
    np.testing.assert_array_equal(hist.column("round"), [0, 2, 4, 6])
    np.testing.assert_array_equal(hist.column("round", method="gd"), [])


def test_history_column_filter_and_add(prob):
    h1, _ = run(FedAvg(0.1, 2), prob, 3, progress=False)
    h2, _ = run(GD(0.1), prob, 2, progress=False)
    both = h1 + h2
    assert len(both) == 7
    np.testing.assert_array_equal(both.column("round", method="gd"), [0, 1, 2])
    np.testing.assert_array_equal(both.column("round", method="fedavg"), [0, 1, 2, 3])
    # a shared History accumulates several runs
    h = History()
    run(FedAvg(0.1, 2), prob, 2, progress=False, history=h)
    run(GD(0.1), prob, 2, progress=False, history=h)
    assert [r["method"] for r in h] == ["fedavg"] * 3 + ["gd"] * 3


def _assert_records_equal(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and math.isnan(va):
                assert isinstance(vb, float) and math.isnan(vb), k
            else:
                assert va == vb and type(va) is type(vb), (k, va, vb)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_save_load_round_trip(prob, tmp_path, suffix):
    hist, _ = run(FedAvg(0.1, 2), prob, 5, progress=False, extra={"tag": "abc", "K": 2})
    hist.append({"round": 6, "method": "fedavg", "seed": 0, "tag": "abc", "K": 2, "suboptimality": math.inf,
                 "dist_to_opt": math.nan, "grad_norm_sq": -1.5e-300, "gradient_variance": 0.0,
                 "b_dissimilarity": 1e300, "time_s": 0.1})
    path = hist.save(tmp_path / "sub" / f"r{suffix}")
    assert path.exists()
    loaded = History.load(path)
    _assert_records_equal(hist.records, loaded.records)
    if suffix == ".json":
        assert isinstance(json.loads(path.read_text()), list)
    else:
        header = path.read_text().splitlines()[0].split(",")
        assert header[:3] == ["round", "method", "seed"]


def test_divergence_raises_and_keeps_partial_records(prob, tmp_path):
    out = tmp_path / "diverged.csv"
    meth = FedAvg(3.0 / prob.L, 1, check_stability=False)
    with pytest.raises(DivergenceError) as err:
        run(meth, prob, 500, progress=False, out=out)
    msg = str(err.value)
    assert "fedavg" in msg and "round" in msg
    r_div = int(msg.split("round ")[1].split()[0])
    assert 1 < r_div < 500
    loaded = History.load(out)
    assert [r["round"] for r in loaded] == list(range(r_div))  # every round before the divergence
    assert all(r["method"] == "fedavg" for r in loaded)
    d = [r["dist_to_opt"] for r in loaded]
    assert d[-1] > 1e6 * d[0]  # it was blowing up
    # the guard of the method itself refuses that step size
    with pytest.raises(ValueError, match="stability"):
        run(FedAvg(3.0 / prob.L, 1), prob, 5, progress=False)


def test_divergence_detects_non_finite(prob):
    with pytest.raises(DivergenceError, match="round 1"):
        run(FedAvg(0.1, 1), prob, 3, progress=False, x0=torch.tensor([math.nan, 0, 0, 0], dtype=DT))


def test_records_written_when_interrupted(prob, tmp_path):
    out = tmp_path / "interrupted.json"

    def metrics(problem, method, state):
        if state["round"] == 4:
            raise RuntimeError("stop")
        return {"x0": float(state["x"][0])}

    with pytest.raises(RuntimeError, match="stop"):
        run(FedAvg(0.1, 2), prob, 10, metrics=metrics, progress=False, out=out)
    loaded = History.load(out)
    assert [r["round"] for r in loaded] == [0, 1, 2, 3]
    assert set(loaded.records[0]) == {"round", "method", "seed", "x0", "time_s"}


def test_same_seed_same_history_with_stochastic_oracle(prob):
    def go(seed, meth):
        return run(meth, prob, 8, oracle=GaussianNoiseOracle(prob, 0.5), seed=seed, progress=False)[0]

    for make in (lambda: FedAvg(0.1, 3), lambda: Scaffold(0.1, 3, participation=0.5)):
        a, b, c = go(7, make()), go(7, make()), go(8, make())
        assert _strip_time(a) == _strip_time(b)
        assert _strip_time(a) != _strip_time(c)
        assert a.records[0] == {**c.records[0], "seed": 7, "time_s": a.records[0]["time_s"]}  # same start


def test_consensus_distance_only_for_worker_models(prob):
    for meth in (FedAvg(0.1, 2), GD(0.1), Scaffold(0.1, 2)):
        hist, _ = run(meth, prob, 2, progress=False)
        assert all("consensus_distance_sq" not in r for r in hist)

    class WithWorkers(FedAvg):
        """Pretends to keep worker models x + row offsets (a positive control)."""

        def worker_models(self, state):
            return state["x"] + torch.arange(6 * 4, dtype=DT).reshape(6, 4) / 10

    hist, state = run(WithWorkers(0.1, 2), prob, 2, progress=False)
    Xw = WithWorkers(0.1, 2).worker_models(state)
    assert hist.records[-1]["consensus_distance_sq"] == pytest.approx(
        measures.consensus_distance_sq(Xw, prob.weights), rel=1e-14)


def test_default_metrics_without_x_star(prob):
    class NoOpt(type(prob)):
        @property
        def x_star(self):
            raise NotImplementedError

    P = NoOpt(prob.A, prob.c, prob.e)
    out = default_metrics(P, FedAvg(0.1, 2), {"x": torch.ones(4, dtype=DT)})
    assert "suboptimality" not in out and out["loss"] == pytest.approx(float(P.global_loss(torch.ones(4, dtype=DT))))


def test_run_on_pl_problem_converges():
    P = pl_family(6, seed=0)
    hist, state = run(FedAvg(0.05, 5), P, 50, x0=torch.tensor([2.5], dtype=DT), progress=False)
    assert abs(float(state["x"])) < 1e-12  # THEORY A5 (b)
    assert hist.records[-1]["suboptimality"] < 1e-20


def test_run_argument_validation(prob):
    with pytest.raises(ValueError, match="rounds"):
        run(GD(0.1), prob, -1, progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        run(GD(0.1), prob, 3, eval_every=0, progress=False)


def test_progress_bar_runs(prob, capsys):
    hist, _ = run(GD(0.1), prob, 3, progress=True)
    assert len(hist) == 4
