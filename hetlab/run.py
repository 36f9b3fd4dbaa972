r"""The run loop: rounds, metrics every ``eval_every`` rounds, progress bar, divergence detection,
tidy results on disk.

Results are *tidy records*: one dict per evaluation with the round, the method, the seed and one
column per metric. :class:`History` writes them as CSV or JSON and hands columns to the plotting
functions. If a run diverges (non-finite or exploding iterate) it stops with a
:class:`DivergenceError` naming the method and the round; the records gathered so far are still
written to ``out`` first, as they are when the run is interrupted.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import measures
from .comm import SimulatedComm
from .problems.oracles import Oracle


class DivergenceError(RuntimeError):
    """The iterate became non-finite or left every reasonable ball."""


def _parse(text: str):
    """CSV cell -> int, float or the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class History:
    """Tidy evaluation records of one or more runs."""

    def __init__(self, records: list[dict] | None = None):
        self.records: list[dict] = list(records or [])

    def append(self, rec: dict) -> None:
        self.records.append(rec)

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def column(self, key: str, **where) -> np.ndarray:
        """Values of ``key`` over the records matching ``where`` (e.g. ``method="fedavg"``)."""
        rows = [r for r in self.records if all(r.get(k) == v for k, v in where.items())]
        return np.array([r[key] for r in rows], dtype=float)

    def __add__(self, other: "History") -> "History":
        return History(self.records + other.records)

    def to_csv(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys: list[str] = []
        for r in self.records:
            keys += [k for k in r if k not in keys]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.records)
        return path

    def to_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.records, indent=1, default=float))
        return path

    def save(self, path) -> Path:
        """Write CSV or JSON according to the suffix of ``path``."""
        return self.to_json(path) if str(path).endswith(".json") else self.to_csv(path)

    @classmethod
    def load(cls, path) -> "History":
        path = Path(path)
        if path.suffix == ".json":
            return cls(json.loads(path.read_text()))
        with path.open() as fh:
            rows = [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]
        return cls(rows)


def default_metrics(problem, method, state) -> dict:
    """Suboptimality, distance to ``x_star``, gradient norm and heterogeneity measures at the model."""
    x = method.model(state)
    out = {}
    try:
        xs = problem.x_star
        out["suboptimality"] = float(problem.global_loss(x)) - problem.f_star
        out["dist_to_opt"] = float((x - xs).norm())
    except NotImplementedError:
        out["loss"] = float(problem.global_loss(x))
    G = problem.local_grads(x)
    q = problem.weights
    gbar = q @ G
    out["grad_norm_sq"] = float(gbar @ gbar)
    out["gradient_variance"] = measures.gradient_variance(G, q)
    out["b_dissimilarity"] = measures.b_dissimilarity(G, q)
    Xw = method.worker_models(state)
    if Xw is not None:
        out["consensus_distance_sq"] = measures.consensus_distance_sq(Xw, q)
        # the covariance is a matrix; the tidy record keeps its largest eigenvalue (its trace is the line above)
        out["consensus_cov_top_eig"] = float(torch.linalg.eigvalsh(measures.consensus_covariance(Xw, q))[-1])
    return out


def run(method, problem, rounds: int, *, oracle=None, x0=None, seed: int = 0, eval_every: int = 1,
        metrics: Callable | None = None, comm=None, progress: bool = True, out=None,
        divergence_threshold: float = 1e10, history: History | None = None, extra: dict | None = None,
        checkpoint=None, checkpoint_every: int = 10, resume: bool = True):
    r"""Run ``method`` for ``rounds`` rounds on ``problem``; return ``(history, final_state)``.

    Parameters
    ----------
    oracle : an oracle over ``problem`` (exact gradients by default).
    seed : seeds the ``torch.Generator`` that drives all sampling (recorded in every record).
    eval_every : evaluate ``metrics`` at round 0, every ``eval_every`` rounds and at the end.
    metrics : ``f(problem, method, state) -> dict`` (default :func:`default_metrics`).
    out : a ``.csv`` or ``.json`` path; records are written at the end, on divergence and on
        interruption, so finished work is never lost.
    divergence_threshold : stop with :class:`DivergenceError` when ``||x|| / (1 + ||x0||)`` exceeds it.
    checkpoint : a file path. The method state, the generator state and the records are saved there
        every ``checkpoint_every`` rounds, at the end, and when the run is interrupted or diverges
        (written to a temporary file, then renamed: a kill never leaves a torn checkpoint). With
        ``resume=True`` an existing checkpoint of the same method, hyper-parameters and seed is loaded
        and the run continues after its round; on CPU the result is bit-identical to an uninterrupted run.
    """
    if rounds < 0 or eval_every < 1:
        raise ValueError("rounds must be >= 0 and eval_every >= 1")
    oracle = oracle if oracle is not None else Oracle(problem)
    comm = comm or SimulatedComm(problem.n)
    metrics = metrics or default_metrics
    dev = getattr(problem, "device", None)
    x0 = torch.zeros(problem.d, dtype=problem.dtype, device=dev) if x0 is None else \
        torch.as_tensor(x0, dtype=problem.dtype, device=dev)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if hasattr(problem, "check_memory") and getattr(problem, "device", torch.device("cpu")).type == "cuda":
        problem.check_memory(getattr(oracle, "batch_size", 1))  # MemoryError with the numbers, before any work
    gen = torch.Generator().manual_seed(int(seed))
    state = method.init(x0, problem)
    hist = history if history is not None else History()
    base = {"method": method.name, "seed": int(seed), **(extra or {})}
    scale = 1.0 + float(x0.norm())
    t0 = time.perf_counter()
    ident = {"method": method.name, "hyperparameters": _plain(method.hyperparameters()), "seed": int(seed)}
    start, done, good_gen = 1, 0, gen.get_state()

    def record(r):
        rec = {"round": r, **base, **metrics(problem, method, state), "time_s": time.perf_counter() - t0}
        hist.append(rec)
        return rec

    def save_checkpoint(r):
        # ``state`` and ``good_gen`` always belong to the last finished round (a diverged step is dropped)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {**ident, "round": r, "state": state, "generator": good_gen,
                                          "records": hist.records})

    if checkpoint is not None and resume and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False)
        for k in ident:
            if ck.get(k) != ident[k]:
                raise ValueError(f"checkpoint {checkpoint} was written by another run ({k}: {ck.get(k)!r} != "
                                 f"{ident[k]!r}); delete it or pass resume=False")
        state, done, good_gen = ck["state"], int(ck["round"]), ck["generator"]
        gen.set_state(good_gen)
        hist.records.extend(ck["records"])
        start = done + 1

    try:
        if start == 1:
            record(0)
        bar = tqdm(range(start, rounds + 1), desc=method.name, disable=not progress, leave=False,
                   initial=start - 1, total=rounds)
        for r in bar:
            new = method.step(state, oracle, comm, gen)
            x = method.model(new)
            nrm = float(x.norm())
            if not math.isfinite(nrm) or nrm > divergence_threshold * scale:
                raise DivergenceError(
                    f"{method.name} ({method!r}) diverged at round {r} (||x|| = {nrm:.3g}); lower the step size "
                    f"(the problem's L is {getattr(problem, 'L', float('nan')):.4g})"
                )
            state, done, good_gen = new, r, gen.get_state()
            if r % eval_every == 0 or r == rounds:
                rec = record(r)
                if progress and "suboptimality" in rec:
                    bar.set_postfix(subopt=f"{rec['suboptimality']:.3e}")
                elif progress and "loss" in rec:
                    bar.set_postfix(loss=f"{rec['loss']:.3e}")
            if r % checkpoint_every == 0 or r == rounds:
                save_checkpoint(r)
    finally:
        save_checkpoint(done)  # the last finished round, also on interruption or divergence
        if out is not None:
            hist.save(out)
    return hist, state


def _plain(obj):
    """Hyper-parameters as plain JSON-like values (for comparing a checkpoint with the current run)."""
    return json.loads(json.dumps(obj, default=str))


def _save_checkpoint(path, payload) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
