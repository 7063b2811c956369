from __future__ import annotations

import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

from localssl.cli import main
from localssl.config import load_config
from localssl.experiments.curves import ACCURACY_PANEL, curves_figure, read_curves, run_label
from localssl.train import pretrain
from localssl.train.fast_path import auto_precision

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


def _lines(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def test_plot_compares_runs_of_two_rules_with_and_without_the_online_probe(cifar_root, tmp_path):
    """Oracle: the runs' own CSV rows. Every run is in the figure's one legend once; each loss column has a
    panel and the online probe an accuracy panel; each line has one point per logged row, with markers; the
    y axes use no offset; labels name only settings the user gave that differ among the runs."""
    common = [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.log_every=2"]
    a = pretrain(load_config("clapp++", [*common, "train.online_probe=true"]))
    b = pretrain(load_config("bp-clapp++", [*common, "train.lr=0.001", "train.precision=fp32"]))
    assert run_label(a) == (
        "clapp++ model.width=0.0625 train.epochs=1 train.batch_size=8 train.log_every=2 train.online_probe=True"
    )
    assert "train.lr=0.001" in run_label(b) and "precision_requested" not in run_label(b)
    assert "channels_last" not in run_label(b)  # resolved from the fp32 the user gave, not given itself
    steps, losses = read_curves(a)["loss_l1"]
    assert steps == [2.0, 4.0, 6.0, 7.0] and len(losses) == 4  # 60 images / 8 = 7 steps, a row every 2

    fig = curves_figure([a, b])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    # fp32 is the user's where `auto` would choose otherwise here (a bf16 CPU), else what `auto` chose anyway
    fp32 = " train.precision=fp32" if auto_precision(torch.device("cpu")) != "fp32" else ""
    assert legend == ["clapp++ train.online_probe=True", f"bp-clapp++ train.lr=0.001{fp32}"]  # shared: the title
    assert "model.width=0.0625" in fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"loss_l{i}" for i in range(1, 7)] + [ACCURACY_PANEL]
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(_lines(panels["loss_l6"])) == set(legend)  # the backprop run (only loss_l6) is drawn and named
    assert set(_lines(panels["loss_l1"])) == {legend[0]}
    for line in _lines(panels["loss_l6"]).values():
        assert len(line.get_xdata()) == 4 and line.get_marker() not in (None, "None", "")
    first, second = _lines(panels["loss_l6"]).values()
    assert (first.get_linestyle(), first.get_marker()) != (second.get_linestyle(), second.get_marker())
    accuracy = _lines(panels[ACCURACY_PANEL])
    assert list(accuracy) == [legend[0]] and list(accuracy[legend[0]].get_xdata()) == [7.0]  # one epoch: one point
    for ax in fig.axes[:7]:
        assert ax.yaxis.get_major_formatter().get_useOffset() is False
    plt.close(fig)

    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_plot_of_a_run_with_one_logged_row_draws_points(cifar_root, tmp_path):
    run = pretrain(
        load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.log_every=100"])
    )
    again = tmp_path / "again" / run.name
    shutil.copytree(run, again)
    fig = curves_figure([run, again])  # two runs with the same settings and folder name: told apart by path
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 2 and len(set(labels)) == 2
    line = fig.axes[0].get_lines()[0]
    assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "")
    plt.close(fig)
