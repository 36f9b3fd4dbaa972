"""The theorem checks: each passes, each negative control fails, and the checks can fail."""
from __future__ import annotations

import json

import numpy as np
import pytest

import proofs_check
from proofs_check import Criterion, CheckResult
from proofs_check.__main__ import main

IDS = proofs_check.known_ids()
REQUIRED_JSON_KEYS = {"id", "passed", "measured", "predicted", "tolerance", "seed", "runtime_s"}


@pytest.fixture(scope="module")
def results():
    return {cid: proofs_check.run_check(cid, seed=0) for cid in IDS}


def test_issue_checks_are_registered():
    assert {"A1", "A2", "A3", "A4", "A5"} <= set(IDS)


@pytest.mark.parametrize("cid", IDS)
def test_check_passes_with_seed_0(results, cid):
    res = results[cid]
    bad = [c.name for c in res.criteria if not c.ok]
    assert res.passed, f"{cid} failed criteria: {bad}"
    assert res.seed == 0


@pytest.mark.parametrize("cid", IDS)
def test_every_negative_control_fails(results, cid):
    res = results[cid]
    assert res.negative_controls, f"{cid} has no negative control"
    for c in res.negative_controls:
        assert not c.holds, f"{cid}: negative control {c.name!r} held (measured {c.measured})"


@pytest.mark.parametrize("cid", IDS)
def test_json_record_has_required_fields(results, cid):
    d = results[cid].to_dict()
    assert REQUIRED_JSON_KEYS <= set(d)
    assert d["id"] == cid and d["passed"] is True
    json.dumps(d)  # serialisable


@pytest.mark.parametrize("cid", IDS)
def test_module_exposes_contract(cid):
    mod = proofs_check.get(cid)
    for attr in ("ID", "NAME", "CLAIM", "SOURCE", "run", "figure"):
        assert hasattr(mod, attr), f"{cid} lacks {attr}"
    assert mod.ID == cid


def test_checks_pass_for_another_seed():
    # the claims are not tuned to one random instance
    for cid in ("A1", "A2", "A3", "A5"):
        assert proofs_check.run_check(cid, seed=3).passed, cid


# --- the verdict logic cannot be fooled -------------------------------------------------------


def _result(criteria):
    return CheckResult("X1", "x", "claim", "src", 0, criteria)


def test_a_check_without_negative_control_cannot_pass():
    assert not _result([Criterion("a", 0.0, 0.0, 1e-12, "<=")]).passed


def test_a_negative_control_that_holds_fails_the_check():
    crit = [Criterion("a", 0.0, 0.0, 1e-12, "<="), Criterion("ctrl", 0.0, 0.0, 1e-12, "<=", negative=True)]
    assert not _result(crit).passed
    crit[1] = Criterion("ctrl", 1.0, 0.0, 1e-12, "<=", negative=True)
    assert _result(crit).passed


def test_non_finite_measurement_never_holds():
    assert not Criterion("a", float("nan"), 0.0, 1.0, "<=").holds
    assert not Criterion("a", float("inf"), None, 1.0, ">=").holds


def test_relations():
    assert Criterion("a", 1.05, 1.0, 0.1, "abs").holds and not Criterion("a", 1.2, 1.0, 0.1, "abs").holds
    assert Criterion("a", 1.05, 1.0, 0.1, "rel").holds and not Criterion("a", 1.2, 1.0, 0.1, "rel").holds
    assert Criterion("a", 2.0, None, 1.0, ">=").holds and not Criterion("a", 0.5, None, 1.0, ">=").holds
    with pytest.raises(ValueError):
        Criterion("a", 1.0, 1.0, 1.0, "approx")


# --- mutation tests: a wrong theory or a wrong implementation makes the check fail ----------


def test_a1_fails_if_theory_claimed_no_bias(monkeypatch):
    mod = proofs_check.get("A1")
    monkeypatch.setattr(mod.cf, "fedavg_fixed_point", lambda prob, lr, K: prob.x_star.numpy())
    assert not mod.run().passed


def test_a2_fails_with_plus_sign_surrogate(monkeypatch):
    mod = proofs_check.get("A2")
    real = mod.cf.local_surrogate_minimizer
    monkeypatch.setattr(mod.cf, "local_surrogate_minimizer", lambda prob, coef: real(prob, -coef))
    assert not mod.run().passed


def test_a3_fails_if_implementation_ignores_mu(monkeypatch):
    mod = proofs_check.get("A3")
    from hetlab.algorithms import FedProx

    class WrongProx(FedProx):  # proximal weight off by a factor of two
        def __init__(self, mu, *a, **k):
            super().__init__(2 * mu, *a, **k)

    monkeypatch.setattr(mod, "FedProx", WrongProx)
    assert not mod.run().passed


def test_a4_fails_if_scaffold_is_plain_fedavg(monkeypatch):
    mod = proofs_check.get("A4")
    from hetlab.algorithms import Scaffold

    class NoCorrection(Scaffold):  # control variates never used: the classic bug
        def init(self, x0, problem):
            state = super().init(x0, problem)
            return state

        def step(self, state, oracle, comm, generator):
            zeroed = dict(state, c=state["c"] * 0, c_i=state["c_i"] * 0)
            return super().step(zeroed, oracle, comm, generator)

    monkeypatch.setattr(mod, "Scaffold", NoCorrection)
    assert not mod.run().passed


def test_a5_fails_if_rate_prediction_is_wrong(monkeypatch):
    mod = proofs_check.get("A5")
    real = mod.cf.fedavg_contraction
    monkeypatch.setattr(mod.cf, "fedavg_contraction", lambda *a, **k: real(*a, **k) + 0.05)
    assert not mod.run().passed


def test_c6_fails_if_the_sam_correction_is_dropped(monkeypatch):
    mod = proofs_check.get("C6")
    real = mod.cs.sam_correction
    monkeypatch.setattr(mod.cs, "sam_correction", lambda a, c, w, Xi, degree: 0 * real(a, c, w, Xi, degree))
    assert not mod.run().passed


# --- CLI contract ---------------------------------------------------------------------------


def test_cli_json_and_exit_code(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["A1", "a2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [d["id"] for d in data] == ["A1", "A2"]
    for d in data:
        assert REQUIRED_JSON_KEYS <= set(d) and d["passed"] is True
    text = capsys.readouterr().out
    assert "A1" in text and "PASS" in text and "2 passed, 0 failed" in text


def test_cli_unknown_id_lists_known_ones(capsys):
    assert main(["Z9"]) == 2
    err = capsys.readouterr().err
    assert "Z9" in err and "A1" in err and "A5" in err


def test_cli_report_folder(tmp_path):
    assert main(["A5", "--report", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "README.md").read_text()
    assert "A5" in md and "negative control" in md
    png = (tmp_path / "rep" / "A5.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "rep" / "results.json").read_text())[0]["id"] == "A5"


def test_report_for_every_check(results, tmp_path):
    from proofs_check.report import write_report
    write_report(list(results.values()), tmp_path)
    for cid in IDS:
        assert (tmp_path / f"{cid}.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "README.md").read_text()
    assert f"{len(IDS)} of {len(IDS)} checks passed" in md


def test_cli_exit_code_is_nonzero_on_failure(monkeypatch):
    mod = proofs_check.get("A1")
    monkeypatch.setattr(mod.cf, "fedavg_fixed_point", lambda prob, lr, K: np.zeros(prob.d))
    assert main(["A1"]) == 1


def test_get_unknown_id_raises():
    with pytest.raises(KeyError, match="known ids"):
        proofs_check.get("Q7")
