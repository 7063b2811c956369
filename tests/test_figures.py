"""Figures keep their titles whole (issue 41 item 4: the smoke-scale figures cut their titles): every figure of
the package is saved through ``localssl.utils.save_figure``, which wraps a title wider than its figure or panel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from localssl.utils import save_figure

LONG = "CLAPP++ Table A3 on CIFAR-10, scale 'smoke', " + "a setting=value " * 12 + "and the end"


def test_save_figure_wraps_titles_wider_than_their_figure_or_panel(tmp_path):
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.5))
    fig.suptitle(LONG, fontsize=10)
    axes[0].set_title(LONG, fontsize=9)
    axes[1].set_title("short")
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure is closed: measure it on a canvas of its own
    suptitle = fig._suptitle
    assert "\n" in suptitle.get_text() and " ".join(suptitle.get_text().split()) == " ".join(LONG.split())
    assert suptitle.get_window_extent(renderer).width <= fig.bbox.width
    assert axes[0].title.get_window_extent(renderer).width <= axes[0].bbox.width * 1.05
    assert axes[1].title.get_text() == "short"  # one that fits is left as it is


def test_every_figure_of_the_package_is_saved_through_save_figure():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "localssl"
    direct = [p.relative_to(root) for p in root.rglob("*.py") if ".savefig(" in p.read_text() and p.name != "utils.py"]
    assert direct == [], direct


def test_save_figure_keeps_a_wrapped_titles_line_breaks(tmp_path):
    """A panel title of two lines (a short name, then a long budget) wider than its panel: each line is wrapped on
    its own, so the name keeps its line and the budget starts one."""
    fig, ax = plt.subplots(figsize=(3, 2.5))
    budget = "budget: " + "a setting=value " * 8
    ax.set_title(f"Table A3, scale smoke\n{budget}", fontsize=9)
    save_figure(fig, tmp_path / "f.png")
    lines = ax.title.get_text().split("\n")
    assert lines[0] == "Table A3, scale smoke" and lines[1].startswith("budget:") and len(lines) > 2
    assert " ".join(ax.title.get_text().split()) == " ".join(f"Table A3, scale smoke {budget}".split())
