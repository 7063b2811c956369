from __future__ import annotations

from localssl.cli import main
from localssl.config import load_config
from localssl.experiments.curves import read_curves, run_label
from localssl.train import pretrain

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


def test_plot_labels_runs_by_preset_and_overrides(cifar_root, tmp_path):
    common = [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.log_every=2"]
    a = pretrain(load_config("clapp++", common))
    b = pretrain(load_config("bp-clapp++", [*common, "train.lr=0.001"]))
    assert run_label(a) == "clapp++ model.width=0.0625 train.epochs=1 train.batch_size=8 train.log_every=2"
    assert run_label(b).startswith("bp-clapp++ ") and "train.lr=0.001" in run_label(b)
    curves = read_curves(a)
    steps, losses = curves["loss_l1"]
    assert steps == [2.0, 4.0, 6.0, 7.0] and len(losses) == 4  # 60 images / 8 = 7 steps, a row every 2
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main(["plot", str(tmp_path / "missing")]) == 2
