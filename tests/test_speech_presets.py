"""The audio presets on the synthetic speech task: each loss goes down on a fixed batch, the frame-level
probe runs end to end, and (slow) each preset's frame probe beats random init."""

from __future__ import annotations

import pytest
from conftest import audio_loss_before_after

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain

PRESETS = ["cpc-audio", "clapp-audio", "clapp-audio-eprop"]
TINY = ["data.name=synthetic-speech", "model.width=0.0625", "views.window=3200", "objective.steps=4"]


@pytest.mark.parametrize("preset", PRESETS)
def test_audio_preset_loss_decreases(preset: str) -> None:
    before, after = audio_loss_before_after(preset, TINY)
    assert after < before - 0.02 * abs(before), (before, after)


def test_frame_probe_end_to_end(tmp_path) -> None:
    cfg = load_config(
        "clapp-audio-eprop",
        [
            *TINY,
            "data.train_subset=16",
            "train.epochs=1",
            "train.progress=false",
            f"out_dir={tmp_path}",
            "probe.epochs=2",
            "probe.val_size=16",
        ],
    )
    result = probe(pretrain(cfg))
    assert result["n_test"] == 128 * 100  # every 10 ms frame of the 128 test utterances
    assert result["feature_dim"] == 16 and result["layers"] == [6]  # GRU units at width 1/16
    assert result["test_acc_pct"] > 100 / 8  # above chance even after one short epoch


# The budget of `localssl reproduce speech-synthetic --scale cpu` (numbers: benchmarks/RESULTS.md).
BUDGET = [
    "data.name=synthetic-speech",
    "data.train_subset=256",
    "model.width=0.0625",
    "views.window=6400",
    "train.epochs=6",
    "train.lr=0.001",
    "train.progress=false",
    "probe.epochs=20",
    "probe.val_size=64",
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_audio_probe_beats_random_init(preset: str, tmp_path) -> None:
    rand = probe(
        pretrain(load_config("cpc-audio", [*BUDGET, "rule.name=frozen", "train.epochs=0", f"out_dir={tmp_path}"]))
    )
    got = max(
        probe(run := pretrain(load_config(preset, [*BUDGET, f"out_dir={tmp_path}"])))["test_acc_pct"],
        probe(run, ["probe.layers=5"])["test_acc_pct"],
    )
    assert got > rand["test_acc_pct"] + 2
