"""``localssl demo`` end to end at a toy budget (the real budget is stated in the README)."""

from __future__ import annotations

import json

import localssl.demo as demo


def test_demo_writes_table_plot_and_untrained_random_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        demo,
        "DEMO_SUBSET",
        [
            "model.width=0.03125",
            "data.train_subset=64",
            "probe.epochs=2",
            "probe.train_subset=200",
            "probe.val_size=50",
        ],
    )
    monkeypatch.setattr(demo, "EPOCHS_SUBSET", 1)
    results = demo.run_demo(out_dir=tmp_path)
    assert set(results) == {"random", "clapp++", "bp-clapp++"}
    assert results["random"]["epochs"] == 0 and results["clapp++"]["epochs"] == 1
    for r in results.values():
        assert 0.0 <= r["test_acc"] <= 1.0
    assert json.loads((tmp_path / "demo.json").read_text()).keys() == results.keys()
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert "CLAPP++ (local)" in capsys.readouterr().out
