"""Standard figures: a measured curve with its theoretical curve or bound drawn over it."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def new_axes(ax=None, figsize=(5.0, 3.6)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def measured_vs_predicted(x, measured, predicted=None, *, ax=None, loglog=False, semilogy=False,
                          xlabel="", ylabel="", title="", measured_label="measured",
                          predicted_label="predicted"):
    """Markers for the measurement, a line for the prediction (curve, or a constant)."""
    ax = new_axes(ax)
    x = np.asarray(x)
    ax.plot(x, measured, "o", ms=5, label=measured_label, zorder=3)
    if predicted is not None:
        pred = np.broadcast_to(np.asarray(predicted, dtype=float), x.shape)
        ax.plot(x, pred, "-", lw=1.5, label=predicted_label, zorder=2)
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    elif semilogy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return ax


def slope_guide(ax, x, y0, slope, label=None, **kw):
    """A reference line ``y0 * (x / x[0]) ** slope`` on log-log axes."""
    x = np.asarray(x, dtype=float)
    ax.plot(x, y0 * (x / x[0]) ** slope, "--", lw=1, color=kw.pop("color", "gray"),
            label=label or f"slope {slope:g}", **kw)
    return ax


def history_curves(history, metric: str, *, by: str = "method", ax=None, logy=True, xlabel="round"):
    """One curve of ``metric`` against ``round`` per value of ``by`` in a :class:`~hetlab.run.History`
    (or the path of a CSV/JSON file written by one)."""
    from pathlib import Path

    from .run import History
    if isinstance(history, (str, Path)):
        history = History.load(history)
    ax = new_axes(ax)
    for key in dict.fromkeys(r[by] for r in history.records):
        rows = [r for r in history.records if r[by] == key]
        ax.plot([r["round"] for r in rows], [r[metric] for r in rows], label=str(key))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    return ax
