"""Report writing: the console table, the markdown report with one figure per check, and JSON."""
from __future__ import annotations

import json
from pathlib import Path

from ._base import CheckResult


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table(results: list[CheckResult]) -> str:
    """A plain-text table: id, claim, measured, predicted, tolerance, verdict, seconds."""
    rows = [("id", "claim (headline criterion)", "measured", "predicted", "tolerance", "verdict", "seconds")]
    for r in results:
        h = r.headline
        rows.append((r.id, f"{r.name}: {h.name}"[:70], _fmt(h.measured), _fmt(h.predicted),
                     h.describe_tolerance(), "PASS" if r.passed else "FAIL", f"{r.runtime_s:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(r: CheckResult) -> str:
    out = []
    for c in r.criteria:
        tag = "ok  " if c.ok else "BAD "
        kind = "must fail" if c.negative else "must hold"
        out.append(f"   {tag} [{kind}] {c.name}: measured {_fmt(c.measured)}, predicted {_fmt(c.predicted)}, "
                   f"{c.describe_tolerance()} -> {'holds' if c.holds else 'fails'}")
    return "\n".join(out)


def write_json(results: list[CheckResult], path) -> Path:
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in results], indent=2))
    return path


def write_report(results: list[CheckResult], folder) -> Path:
    """``folder/README.md`` (summary table + every criterion), ``folder/<ID>.png``, ``folder/results.json``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import get

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md = ["# hetlab theorem checks", "",
          f"{sum(r.passed for r in results)} of {len(results)} checks passed.", "",
          "| id | name | headline measured | predicted | tolerance | verdict | seed | seconds |",
          "|---|---|---|---|---|---|---|---|"]
    for r in results:
        h = r.headline
        md.append(f"| {r.id} | `{r.name}` | {_fmt(h.measured)} | {_fmt(h.predicted)} | "
                  f"{h.describe_tolerance()} | {'PASS' if r.passed else '**FAIL**'} | {r.seed} | {r.runtime_s:.2f} |")
    for r in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        get(r.id).figure(r, ax=ax)
        fig.tight_layout()
        fig.savefig(folder / f"{r.id}.png", dpi=110)
        plt.close(fig)
        md += ["", f"## {r.id} `{r.name}` — {'PASS' if r.passed else 'FAIL'}", "", f"**Claim.** {r.claim}", "",
               f"**Source.** {r.source}", "", f"Seed {r.seed}, {r.runtime_s:.2f} s.", "",
               "| criterion | kind | measured | predicted | tolerance | holds | as required |",
               "|---|---|---|---|---|---|---|"]
        for c in r.criteria:
            md.append(f"| {c.name} | {'negative control (must fail)' if c.negative else 'must hold'} | "
                      f"{_fmt(c.measured)} | {_fmt(c.predicted)} | {c.describe_tolerance()} | "
                      f"{c.holds} | {'yes' if c.ok else '**no**'} |")
        md += ["", f"![{r.id}]({r.id}.png)"]
    (folder / "README.md").write_text("\n".join(md) + "\n")
    write_json(results, folder / "results.json")
    return folder
