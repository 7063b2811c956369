"""``localssl demo`` end to end at a smoke budget (the real budget and its numbers: benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

import localssl.demo as demo

SMOKE = demo.Budget(
    speech=(
        "data.name=synthetic-speech",
        "data.train_subset=8",
        "model.width=0.03125",
        "views.window=6400",
        "train.epochs=1",
        "probe.layers=6",
        "probe.epochs=1",
        "probe.val_size=8",
        "probe.train_subset=8",
    ),
    cifar=(
        "data.name=cifar10-mini",
        "model.width=0.03125",
        "data.train_subset=64",
        "train.epochs=1",
        "probe.epochs=1",
        "probe.train_subset=100",
        "probe.val_size=50",
    ),
    seeds=2,
)


def test_demo_smoke_writes_figure_table_and_seed_spread(tmp_path, capsys):
    result = demo.run_demo(out_dir=tmp_path, budget=SMOKE, workers=1)
    summary = result["summary"]
    assert list(summary) == ["speech", "cifar"]
    assert list(summary["speech"]) == ["random", "clapp", "hinge-cpc", "cpc"]
    assert list(summary["cifar"]) == ["random", "clapp++", "bp-clapp++"]
    runs = result["runs"]
    assert len(runs) == 2 * (4 + 3)
    by = {(r["task"], r["method"], r["seed"]): r for r in runs}
    # the random-init rows are untrained, the others trained for the budget's epochs
    assert by["speech", "random", 0]["epochs"] == 0 and by["speech", "clapp", 1]["epochs"] == 1
    assert by["cifar", "random", 0]["epochs"] == 0 and by["cifar", "bp-clapp++", 0]["epochs"] == 1
    for task, rows in summary.items():
        for key, s in rows.items():
            accs = [by[task, key, seed]["test_acc_pct"] for seed in (0, 1)]
            assert s["test"] == accs
            assert s["test_mean"] == pytest.approx(sum(accs) / 2)
            assert s["test_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)  # sample std of two values
    # seeds are really different runs: the seed draws the pretraining subset and the initial weights
    cfg0 = (tmp_path / "runs" / "speech-clapp-seed0" / "config.yaml").read_text()
    cfg1 = (tmp_path / "runs" / "speech-clapp-seed1" / "config.yaml").read_text()
    assert "seed: 0" in cfg0 and "seed: 1" in cfg1
    assert json.loads((tmp_path / "demo.json").read_text())["summary"] == json.loads(json.dumps(summary))
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    out = capsys.readouterr()
    for label in (
        "random init",
        "CLAPP (local)",
        "CLAPP loss, end-to-end BP",
        "CPC (end-to-end BP)",
        "CLAPP++ (local)",
    ):
        assert label in out.out
    assert "mean ± std over 2 seed(s)" in out.out and "CPU-minutes" in out.out
    assert "[14/14]" in out.err  # a progress line per finished run


def test_demo_rerun_replaces_its_own_run_folders(tmp_path):
    tiny = demo.Budget(speech=SMOKE.speech, seeds=1, tasks=("speech",))
    demo.run_demo(out_dir=tmp_path, budget=tiny, workers=1)
    first = (tmp_path / "runs" / "speech-clapp-seed0" / "checkpoint.pt").stat().st_mtime_ns
    result = demo.run_demo(out_dir=tmp_path, budget=tiny, workers=1)
    assert (tmp_path / "runs" / "speech-clapp-seed0" / "checkpoint.pt").stat().st_mtime_ns > first
    assert list(result["summary"]) == ["speech"]


def _row(label: str, mean: float, std: float, steps: int) -> dict:
    return {"label": label, "test_mean": mean, "test_std": std, "test": [mean], "val_mean": mean, "steps": steps}


def test_cifar_caveat_states_the_measured_gap_and_verdict():
    rows = {
        "random": _row("random init", 45.0, 0.5, 0),
        "clapp++": _row("CLAPP++ (local)", 44.0, 0.4, 125),
        "bp-clapp++": _row("BP-CLAPP++ (backprop)", 45.8, 0.6, 125),  # +0.8 is within 0.6 + 0.5: not above
    }
    text = demo.cifar_caveat(rows)
    assert "CLAPP++ (local): -1.0 points, not above random init" in text
    assert "BP-CLAPP++ (backprop): +0.8 points, not above random init" in text
    assert "after 125 steps" in text and "strong floor" in text
    rows["clapp++"] = _row("CLAPP++ (local)", 48.0, 0.4, 125)  # +3.0 > 0.4 + 0.5
    text = demo.cifar_caveat(rows)
    assert "CLAPP++ (local): +3.0 points, above random init" in text and "strong floor" not in text
