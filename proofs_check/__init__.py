"""Theorem checks of hetlab: one module per entry of THEORY.md, named by its id.

Each module exposes ``ID``, ``NAME``, ``CLAIM``, ``SOURCE``, ``run(seed=0) -> CheckResult`` and
``figure(result, ax=None)``. The book's chapters call the same functions, so the book and the
checks cannot disagree. Run them with ``python -m proofs_check [ID ...]``.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

from ._base import CheckResult, Criterion

_PATTERN = re.compile(r"^([a-z])(\d+)_\w+$")


def _discover() -> dict:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        m = _PATTERN.match(info.name)
        if m:
            found[(m.group(1).upper() + m.group(2))] = info.name
    return dict(sorted(found.items(), key=lambda kv: (kv[0][0], int(kv[0][1:]))))


CHECKS: dict[str, str] = _discover()  # id -> module name


def known_ids() -> list[str]:
    return list(CHECKS)


def get(check_id: str):
    """The module of a check, by id (case-insensitive, e.g. ``"A1"``)."""
    key = str(check_id).upper()
    if key not in CHECKS:
        raise KeyError(f"unknown check id {check_id!r}; known ids: {', '.join(known_ids())}")
    return importlib.import_module(f"{__name__}.{CHECKS[key]}")


def run_check(check_id: str, seed: int = 0) -> CheckResult:
    return get(check_id).run(seed=seed)


__all__ = ["CheckResult", "Criterion", "CHECKS", "known_ids", "get", "run_check"]
