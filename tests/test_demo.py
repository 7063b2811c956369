"""``localssl demo`` end to end at a smoke budget (the real budget and its numbers: benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

import localssl.demo as demo
import localssl.demo_figure as demo_figure

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
    shipped=False,  # the shipped encoders' bars: test_demo_cifar_panel_adds_the_shipped_encoders
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
    text = demo_figure.cifar_caveat(rows)
    assert "CLAPP++ (local): -1.0 points, not above random init" in text
    assert "BP-CLAPP++ (backprop): +0.8 points, not above random init" in text
    assert "after 125 steps" in text and "strong floor" in text
    rows["clapp++"] = _row("CLAPP++ (local)", 48.0, 0.4, 125)  # +3.0 > 0.4 + 0.5
    text = demo_figure.cifar_caveat(rows)
    assert "CLAPP++ (local): +3.0 points, above random init" in text and "strong floor" not in text


def _speech_only(data_name: str) -> demo.Budget:
    speech = tuple(o if not o.startswith("data.name=") else f"data.name={data_name}" for o in SMOKE.speech)
    return demo.Budget(speech=speech, speech_toy=SMOKE.speech, seeds=1, tasks=("speech",))


def test_demo_speech_panel_reads_the_espeak_corpus(tmp_path, monkeypatch):
    from localssl.data import espeak

    if not espeak.espeak_available():
        pytest.skip(espeak.EXTRA_MISSING)
    root = tmp_path / "data"
    espeak.make_corpus(root / "espeak-demo", 20 * espeak.CHUNK / espeak.RATE / 3600, n_speakers=4, seed=1)
    monkeypatch.setenv("LOCALSSL_DATA", str(root))
    result = demo.run_demo(out_dir=tmp_path / "out", budget=_speech_only("espeak-demo"), workers=1)
    assert "eSpeak NG corpus" in result["titles"]["speech"] and result["chance"]["speech"] == pytest.approx(100 / 39)
    cfg = (tmp_path / "out" / "runs" / "speech-clapp-seed0" / "config.yaml").read_text()
    assert "name: espeak-demo" in cfg


def test_demo_speech_panel_falls_back_to_the_toy_without_espeak(tmp_path, monkeypatch, capsys):
    from localssl.data import espeak

    monkeypatch.setattr(espeak, "espeak_available", lambda: False)
    monkeypatch.setenv("LOCALSSL_DATA", str(tmp_path / "empty"))
    result = demo.run_demo(out_dir=tmp_path / "out", budget=_speech_only("espeak-demo"), workers=1)
    assert "eSpeak NG absent" in result["titles"]["speech"] and result["chance"]["speech"] == pytest.approx(100 / 8)
    cfg = (tmp_path / "out" / "runs" / "speech-clapp-seed0" / "config.yaml").read_text()
    assert "name: synthetic-speech" in cfg and not (tmp_path / "empty" / "espeak-demo").exists()
    assert "the speech panel uses the synthetic toy" in capsys.readouterr().err


def test_demo_cifar_panel_adds_the_shipped_encoders(tmp_path, monkeypatch):
    """A shipped encoder is probed on the panel's images with the panel's probe settings, beside random init of
    its own network probed the same way, and compared with that random init (not the panel's narrower one)."""
    import localssl
    from localssl.config import load_config
    from localssl.evaluate.export import export_run

    monkeypatch.setenv("LOCALSSL_WEIGHTS", str(tmp_path / "weights"))
    small = [
        "data.name=cifar10-mini",
        "data.train_subset=64",
        "model.width=0.0625",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
    ]
    run = localssl.pretrain(load_config("clapp++", [*small, f"out_dir={tmp_path / 'made'}", "train.progress=false"]))
    export_run(run, ship="tiny_clapp")
    budget = demo.Budget(cifar=SMOKE.cifar, seeds=1, tasks=("cifar",))
    result = demo.run_demo(out_dir=tmp_path / "out", budget=budget, workers=1)
    rows = result["summary"]["cifar"]
    assert list(rows) == ["random", "clapp++", "bp-clapp++", "random-1", "shipped-tiny_clapp"]
    assert rows["shipped-tiny_clapp"]["reference"] == "random-1" and rows["shipped-tiny_clapp"]["steps"] == 2
    runs = tmp_path / "out" / "runs"
    assert "width: 0.0625" in (runs / "cifar-random-1-seed0" / "config.yaml").read_text()  # the shipped network
    assert "width: 0.03125" in (runs / "cifar-random-seed0" / "config.yaml").read_text()  # the panel's own
    shipped_probe = json.loads((runs / "cifar-shipped-tiny_clapp-seed0" / "probe.json").read_text())
    random_probe = json.loads((runs / "cifar-random-1-seed0" / "probe.json").read_text())
    settings = [{k: v for k, v in p["probe"].items() if k != "progress"} for p in (shipped_probe, random_probe)]
    assert settings[0] == settings[1]  # probed the same way (a progress bar aside)
    assert shipped_probe["n_test"] == random_probe["n_test"] == 1000
    assert "CLAPP++ (local) ×1/16 (shipped: 2 steps" in demo_figure.cifar_caveat(rows)
