"""Checkpoint and resume: a run killed mid-way and resumed ends with bit-identical parameters (CPU)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hetlab.algorithms import FedAvg
from hetlab.models import mlp
from hetlab.problems import MinibatchOracle, NNProblem, random_quadratics
from hetlab.problems.oracles import GaussianNoiseOracle
from hetlab.run import DivergenceError, run

ROOT = Path(__file__).resolve().parents[1]


def nn_problem():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(6, 10, 5, generator=g)
    y = torch.randint(0, 3, (6, 10), generator=g)
    torch.manual_seed(0)
    return NNProblem(mlp([5, 8, 3]), Z, y)


def loss_only(problem, method, state):
    return {"loss": float(problem.global_loss(method.model(state)))}


class Stop(Exception):
    pass


def test_interrupted_run_resumes_bit_identically(tmp_path):
    prob = nn_problem()
    x0 = prob.initial_point()
    meth = FedAvg(0.1, 3, check_stability=False)
    ref_hist, ref = run(meth, prob, 12, oracle=MinibatchOracle(prob, 4), x0=x0, seed=5, metrics=loss_only,
                        progress=False)

    def stop_at_round_7(problem, method, state):
        if state["round"] == 7:
            raise Stop
        return loss_only(problem, method, state)

    ck = tmp_path / "run.ckpt"
    with pytest.raises(Stop):
        run(meth, prob, 12, oracle=MinibatchOracle(prob, 4), x0=x0, seed=5, metrics=stop_at_round_7,
            progress=False, checkpoint=ck, checkpoint_every=5)
    saved = torch.load(ck, weights_only=False)
    assert saved["round"] == 7          # the last finished round, saved on the way out
    hist, state = run(meth, prob, 12, oracle=MinibatchOracle(prob, 4), x0=x0, seed=5, metrics=loss_only,
                      progress=False, checkpoint=ck, checkpoint_every=5)
    assert torch.equal(state["x"], ref["x"])
    assert hist.column("round").tolist() == ref_hist.column("round").tolist()[:7] + list(range(8, 13))
    assert hist.column("loss")[-1] == ref_hist.column("loss")[-1]


def test_killed_process_resumes_bit_identically(tmp_path):
    ck, out = tmp_path / "run.ckpt", tmp_path / "final.pt"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_checkpoint import nn_problem, loss_only
        from hetlab.algorithms import Scaffold
        from hetlab.problems import MinibatchOracle
        from hetlab.run import run
        torch.set_num_threads(1)
        prob = nn_problem()
        slow = sys.argv[1] == "slow"
        def metrics(p, m, s):
            if slow:
                time.sleep(0.3)
            return loss_only(p, m, s)
        h, s = run(Scaffold(0.05, 2, check_stability=False), prob, 30, oracle=MinibatchOracle(prob, 3),
                   x0=prob.initial_point(), seed=9, metrics=metrics, progress=False,
                   checkpoint=sys.argv[2], checkpoint_every=2)
        torch.save(s["x"], sys.argv[3])
    """))
    proc = subprocess.Popen([sys.executable, str(script), "slow", str(ck), str(out)])
    deadline = time.time() + 120
    while time.time() < deadline:
        if ck.exists() and torch.load(ck, weights_only=False)["round"] >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)          # no cleanup runs: only the periodic checkpoint survives
    proc.wait()
    assert ck.exists() and not out.exists()
    killed_at = torch.load(ck, weights_only=False)["round"]
    assert 6 <= killed_at < 30
    subprocess.run([sys.executable, str(script), "fast", str(ck), str(out)], check=True, timeout=300)
    ref_out = tmp_path / "ref.pt"
    subprocess.run([sys.executable, str(script), "fast", str(tmp_path / "fresh.ckpt"), str(ref_out)], check=True,
                   timeout=300)
    assert torch.equal(torch.load(out), torch.load(ref_out))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    prob = random_quadratics(4, 3, seed=0)
    ck = tmp_path / "c.ckpt"
    run(FedAvg(0.05, 2), prob, 3, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="another run"):
        run(FedAvg(0.1, 2), prob, 3, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="another run"):
        run(FedAvg(0.05, 2), prob, 3, checkpoint=ck, seed=1, progress=False)
    hist, _ = run(FedAvg(0.1, 2), prob, 3, checkpoint=ck, resume=False, progress=False)
    assert len(hist) == 4


def test_divergence_keeps_the_last_good_round(tmp_path):
    prob = random_quadratics(4, 3, seed=0)
    ck = tmp_path / "c.ckpt"
    with pytest.raises(DivergenceError, match="fedavg"):
        run(FedAvg(3.0 / prob.L, 5, check_stability=False), prob, 200, oracle=GaussianNoiseOracle(prob, 0.1),
            checkpoint=ck, checkpoint_every=1000, progress=False)
    saved = torch.load(ck, weights_only=False)
    assert torch.isfinite(saved["state"]["x"]).all()
    assert saved["round"] == len(saved["records"]) - 1 >= 1
