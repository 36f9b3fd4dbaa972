"""Standard figures run headless (Agg) and return axes with the expected content."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hetlab import History, plot  # noqa: E402


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_measured_vs_predicted_curve_and_constant():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    ax = plot.measured_vs_predicted(x, x ** -1.0, x ** -1.0 * 1.01, loglog=True, xlabel="eta", ylabel="err",
                                    title="t")
    assert isinstance(ax, plt.Axes)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), x ** -1.0)
    np.testing.assert_allclose(lines[1].get_ydata(), 1.01 * x ** -1.0)
    assert ax.get_xlabel() == "eta" and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["measured", "predicted"]
    # a constant prediction is broadcast; semilogy; existing axes are reused
    fig, ax0 = plt.subplots()
    ax2 = plot.measured_vs_predicted(x, x, 3.0, ax=ax0, semilogy=True)
    assert ax2 is ax0 and ax2.get_yscale() == "log" and ax2.get_xscale() == "linear"
    np.testing.assert_array_equal(ax2.get_lines()[1].get_ydata(), [3.0] * 4)
    ax3 = plot.measured_vs_predicted(x, x)
    assert len(ax3.get_lines()) == 1 and ax3.get_yscale() == "linear"


def test_slope_guide():
    ax = plot.new_axes()
    x = np.array([1.0, 10.0, 100.0])
    plot.slope_guide(ax, x, 2.0, -1.0)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [2.0, 0.2, 0.02])
    assert line.get_label() == "slope -1"


def test_history_curves():
    recs = [{"round": r, "method": m, "err": 10.0 ** -r * (2 if m == "b" else 1)}
            for m in ("a", "b") for r in range(4)]
    ax = plot.history_curves(History(recs), "err")
    assert isinstance(ax, plt.Axes) and ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    np.testing.assert_array_equal(lines[1].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 0.2, 0.02, 0.002])
    assert ax.get_ylabel() == "err"
    ax2 = plot.history_curves(History(recs), "err", logy=False)
    assert ax2.get_yscale() == "linear"


def test_figure_saves(tmp_path):
    ax = plot.measured_vs_predicted([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])
    p = tmp_path / "f.png"
    ax.figure.savefig(p)
    assert p.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot.measured_vs_predicted([1, 2, 3], [1, 2, 3], [1, 2])  # prediction of the wrong length
