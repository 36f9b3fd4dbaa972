r"""Experiment grids that compare fairly: problem x partition x algorithm x hyper-parameters x seed.

* :class:`Grid` enumerates the configurations (the Cartesian product of named axes) and derives each
  run's **seed from its axis values** (a hash of the configuration without the ``lr`` axis, plus the
  repetition index), so the same configuration gets the same seed whatever the order of the grid, the
  other axes, the machine or the backend, and every algorithm compared in one setting sees the same
  data split and the same initialisation.
* :func:`run_grid` runs every configuration with :func:`hetlab.run.run`, writes one tidy CSV per finished
  run (a rerun skips finished runs, so an interrupted grid loses nothing), and returns all records
  with the configuration as columns. It adds the fairness columns ``grad_evals`` (stochastic
  gradients per worker so far: rounds x local steps x batch) and ``comm_rounds``.
* :func:`tune_lr` picks each algorithm's step size on a grid (the grid and every score reported),
  as the field guide of Wang et al. (2021) recommends: never compare algorithms at one shared step.
* :func:`summarize` gives, per configuration and round, the mean over seeds and a Student-t
  confidence band.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .run import History, run

__all__ = ["Grid", "config_seed", "run_grid", "tune_lr", "summarize"]


def _key(cfg: dict) -> str:
    return json.dumps({k: cfg[k] for k in sorted(cfg)}, sort_keys=True, default=str)


def config_seed(cfg: dict, repetition: int = 0, exclude=("lr", "algorithm")) -> int:
    """A 31-bit seed from the configuration's axis values (minus ``exclude``) and the repetition."""
    base = {k: v for k, v in cfg.items() if k not in exclude}
    h = hashlib.sha256(f"{_key(base)}#{int(repetition)}".encode()).hexdigest()
    return int(h[:8], 16) & 0x7FFFFFFF


class Grid:
    """Named axes, e.g. ``Grid(alpha=[0.1, 1, 100], algorithm=["fedavg", "scaffold"], lr=[0.05, 0.1])``,
    and ``repetitions`` seeds per configuration. Iterating yields ``(config, repetition, seed)``."""

    def __init__(self, repetitions: int = 1, seed_exclude=("lr", "algorithm"), **axes):
        if repetitions < 1:
            raise ValueError(f"repetitions must be >= 1, got {repetitions}")
        for k, v in axes.items():
            if not isinstance(v, (list, tuple)) or len(v) == 0:
                raise ValueError(f"axis {k!r} must be a non-empty list of values, got {v!r}")
        self.axes, self.repetitions, self.seed_exclude = dict(axes), int(repetitions), tuple(seed_exclude)

    def configs(self) -> list[dict]:
        names = list(self.axes)
        return [dict(zip(names, vals)) for vals in itertools.product(*(self.axes[k] for k in names))]

    def __iter__(self):
        for cfg in self.configs():
            for rep in range(self.repetitions):
                yield cfg, rep, config_seed(cfg, rep, self.seed_exclude)

    def __len__(self):
        return len(self.configs()) * self.repetitions


def _fname(cfg, rep) -> str:
    return hashlib.sha256(f"{_key(cfg)}#{rep}".encode()).hexdigest()[:16] + ".csv"


def run_grid(build: Callable, grid: Grid, rounds: int, *, out_dir=None, eval_every: int = 1, metrics=None,
             progress: bool = False) -> History:
    """Run every configuration of ``grid``.

    ``build(config, seed) -> dict`` returns the run's pieces: ``method``, ``problem`` and optionally
    ``oracle``, ``x0``, ``comm``, ``local_steps`` and ``batch`` (for the ``grad_evals`` column; 1 if absent).
    With ``out_dir``, each finished run is written to ``out_dir/<hash of config>.csv`` and skipped when
    the grid is run again. Returns the tidy records of all runs (config values as columns).
    """
    out = Path(out_dir) if out_dir is not None else None
    hist = History()
    for cfg, rep, seed in grid:
        path = out / _fname(cfg, rep) if out is not None else None
        if path is not None and path.exists():
            hist = hist + History.load(path)
            continue
        parts = build(dict(cfg), seed)
        unknown = set(parts) - {"method", "problem", "oracle", "x0", "comm", "local_steps", "batch"}
        if unknown or "method" not in parts or "problem" not in parts:
            raise ValueError(f"build() must return a dict with 'method' and 'problem' (and optionally oracle, x0, "
                             f"comm, local_steps, batch); got keys {sorted(parts)}")
        h, _ = run(parts["method"], parts["problem"], rounds, oracle=parts.get("oracle"), x0=parts.get("x0"),
                   seed=seed, eval_every=eval_every, metrics=metrics, comm=parts.get("comm"), progress=progress,
                   extra={**cfg, "repetition": rep})
        per_round = int(parts.get("local_steps", 1)) * int(parts.get("batch", 1))
        for r in h.records:
            r["grad_evals"] = r["round"] * per_round
            r["comm_rounds"] = r["round"]
        if path is not None:
            h.save(path)
        hist = hist + h
    return hist


def tune_lr(build: Callable, config: dict, lrs, rounds: int, *, score: Callable | None = None,
            seed: int | None = None, metrics=None) -> tuple[float, dict]:
    """Best step size of one configuration: run each ``lr`` in ``lrs`` (same seed) and minimise
    ``score(history)`` (default: the last ``loss`` or ``suboptimality`` record). Diverged runs score
    ``inf``. Returns ``(best_lr, {lr: score})`` so the grid can be reported with the choice."""
    from .run import DivergenceError
    seed = config_seed(config) if seed is None else seed

    def default_score(h):
        last = h.records[-1]
        return float(last.get("suboptimality", last.get("loss")))

    score = score or default_score
    scores = {}
    for lr in lrs:
        parts = build({**config, "lr": lr}, seed)
        try:
            h, _ = run(parts["method"], parts["problem"], rounds, oracle=parts.get("oracle"), x0=parts.get("x0"),
                       seed=seed, metrics=metrics, progress=False, eval_every=max(1, rounds))
            s = score(h)
            scores[lr] = s if math.isfinite(s) else math.inf
        except DivergenceError:
            scores[lr] = math.inf
    best = min(scores, key=lambda k: scores[k])
    if not math.isfinite(scores[best]):
        raise ValueError(f"every step size in {list(lrs)} diverged for {config}; try smaller ones")
    return best, scores


def summarize(hist: History, metric: str, by, x: str = "round", level: float = 0.95) -> list[dict]:
    """Mean of ``metric`` over repetitions per (``by`` values, ``x``) with a Student-t ``level`` interval:
    records ``{**by, x, "mean", "lo", "hi", "count"}``."""
    from scipy import stats
    by = [by] if isinstance(by, str) else list(by)
    groups: dict = {}
    for r in hist.records:
        if metric not in r:
            continue
        groups.setdefault(tuple(r.get(k) for k in by) + (r[x],), []).append(float(r[metric]))
    out = []
    def order(kv):  # numbers in numeric order (rounds 5 < 10), everything else by its text
        return tuple((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
                     for v in kv[0])

    for key, vals in sorted(groups.items(), key=order):
        v = np.asarray(vals)
        m = float(v.mean())
        if len(v) > 1:
            half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
        else:
            half = float("nan")
        out.append({**dict(zip(by, key[:-1])), x: key[-1], "mean": m, "lo": m - half, "hi": m + half,
                    "count": len(v)})
    return out
