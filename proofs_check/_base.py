"""The result types shared by every check.

A check is a list of :class:`Criterion` objects. A *positive* criterion states what the theorem
predicts and must hold. A *negative control* applies the same kind of criterion to something the
theorem says must fail (a biased method, a wrong sign, the wrong order); it must **not** hold.
A check passes iff every positive criterion holds and every negative control fails, so a check
that cannot fail is impossible by construction: each check carries at least one negative control.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Criterion:
    """One comparison of a measurement with a prediction.

    ``relation`` is one of

    * ``"abs"``: ``|measured - predicted| <= tolerance``;
    * ``"rel"``: ``|measured - predicted| <= tolerance * |predicted|``;
    * ``"<="``: ``measured <= tolerance`` (an error that must be small; ``predicted`` is informative);
    * ``">="``: ``measured >= tolerance`` (a gap that must be visible).
    """

    name: str
    measured: float
    predicted: float | None
    tolerance: float
    relation: str
    negative: bool = False

    def __post_init__(self):
        if self.relation not in ("abs", "rel", "<=", ">="):
            raise ValueError(f"unknown relation {self.relation!r}")
        self.measured = float(self.measured)
        self.predicted = None if self.predicted is None else float(self.predicted)
        self.tolerance = float(self.tolerance)

    @property
    def holds(self) -> bool:
        m, p, t = self.measured, self.predicted, self.tolerance
        if not math.isfinite(m):
            return False
        if self.relation == "abs":
            return abs(m - p) <= t
        if self.relation == "rel":
            return abs(m - p) <= t * abs(p)
        if self.relation == "<=":
            return m <= t
        return m >= t

    @property
    def ok(self) -> bool:
        """Whether this criterion is as the check needs it (holds, or fails for a negative control)."""
        return self.holds != self.negative

    def describe_tolerance(self) -> str:
        return {"abs": f"|m-p| <= {self.tolerance:.3g}", "rel": f"|m-p|/|p| <= {self.tolerance:.3g}",
                "<=": f"m <= {self.tolerance:.3g}", ">=": f"m >= {self.tolerance:.3g}"}[self.relation]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["holds"] = self.holds
        d["ok"] = self.ok
        return d


@dataclass
class CheckResult:
    """Everything a check measured, for the table, the JSON report, the figure and the book."""

    id: str
    name: str
    claim: str
    source: str
    seed: int
    criteria: list[Criterion]
    runtime_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # arrays for the figure

    @property
    def positives(self) -> list[Criterion]:
        return [c for c in self.criteria if not c.negative]

    @property
    def negative_controls(self) -> list[Criterion]:
        return [c for c in self.criteria if c.negative]

    @property
    def passed(self) -> bool:
        return bool(self.negative_controls) and all(c.ok for c in self.criteria)

    @property
    def headline(self) -> Criterion:
        return self.positives[0]

    def criterion(self, name: str) -> Criterion:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(f"{self.id} has no criterion {name!r}; it has {[c.name for c in self.criteria]}")

    def to_dict(self) -> dict:
        h = self.headline
        return {
            "id": self.id, "name": self.name, "claim": self.claim, "source": self.source,
            "passed": self.passed, "measured": h.measured, "predicted": h.predicted,
            "tolerance": h.tolerance, "relation": h.relation, "headline": h.name,
            "seed": self.seed, "runtime_s": self.runtime_s,
            "criteria": [c.to_dict() for c in self.positives],
            "negative_controls": [c.to_dict() for c in self.negative_controls],
        }


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.perf_counter() - self.t0


def rel_err(a, b) -> float:
    """``||a - b|| / ||b||`` for arrays (plain relative error for scalars)."""
    import numpy as np
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def iterate(method, problem, rounds: int, x0=None, oracle=None, seed: int = 0):
    """Run ``method`` for ``rounds`` rounds; return the models ``[rounds + 1, d]`` (NumPy) and the final state."""
    import numpy as np
    import torch

    from hetlab.comm import SimulatedComm
    from hetlab.problems import Oracle

    oracle = oracle or Oracle(problem)
    comm = SimulatedComm(problem.n)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.zeros(problem.d, dtype=problem.dtype) if x0 is None else torch.as_tensor(x0, dtype=problem.dtype)
    state = method.init(x0, problem)
    xs = [method.model(state).numpy().copy()]
    for _ in range(rounds):
        state = method.step(state, oracle, comm, gen)
        xs.append(method.model(state).numpy().copy())
    return np.array(xs), state
