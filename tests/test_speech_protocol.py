"""GIM's speech protocol (issue 39): the MFCC baseline against a NumPy/SciPy reference, the new audio
presets (GIM, hinge CPC, (greedy) supervised frame cross-entropy, random init, MFCC), the speaker probe
and the claim check of `localssl reproduce speech`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import audio_loss_before_after

from localssl.build import build
from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.models.audio import MFCCConfig, MFCCLayer
from localssl.train import pretrain

TINY = ["data.name=synthetic-speech", "model.width=0.0625", "views.window=3200", "objective.steps=4"]


def _mfcc_reference(
    x: np.ndarray, n_coeffs: int = 13, n_mels: int = 40, n_fft: int = 512, win: int = 400
) -> np.ndarray:
    """MFCCs written independently with NumPy and scipy.fft: frames every 160 samples around each centre
    (reflect padding), a periodic Hann window of 400 samples centred in 512, |rfft|², HTK mel triangles,
    natural log, orthonormal DCT-II."""
    from scipy.fft import dct

    pad = np.pad(x, n_fft // 2, mode="reflect")
    n_frames = 1 + len(x) // 160
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([pad[t * 160 : t * 160 + n_fft] * window for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, bins)
    freqs = np.arange(n_fft // 2 + 1) * 16000 / n_fft
    mel_points = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), n_mels + 2)
    hz = 700 * (10 ** (mel_points / 2595) - 1)
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        left, centre, right = hz[m], hz[m + 1], hz[m + 2]
        rising = (freqs - left) / (centre - left)
        falling = (right - freqs) / (right - centre)
        fb[m] = np.maximum(0, np.minimum(rising, falling))
    logmel = np.log(power @ fb.T + 1e-10)
    return dct(logmel, type=2, norm="ortho", axis=1)[:, :n_coeffs].T  # (coeffs, frames)


def test_mfcc_matches_an_independent_numpy_scipy_implementation():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1800 * t * (1 + t)) + 0.05 * rng.normal(size=8000)
    ours = MFCCLayer(MFCCConfig())(torch.from_numpy(x).float()[None, None])[0].double().numpy()
    ref = _mfcc_reference(x)
    assert ours.shape == ref.shape == (13, 51)  # one vector per 10 ms (centred frames)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=2e-3)


SUPERVISED = ["data.name=synthetic-speech", "model.width=0.0625", "views.window=3200", "objective.num_classes=8"]


@pytest.mark.parametrize("preset", ["supervised-audio", "greedy-supervised-audio"])
def test_frame_cross_entropy_preset_loss_decreases(preset: str) -> None:
    """(GIM and hinge-loss CPC on audio are cpc-audio's and clapp-audio's loss and rule, tested in
    test_speech_presets.py; here the new objective.)"""
    before, after = audio_loss_before_after(preset, SUPERVISED)
    assert after < before - 0.02 * abs(before), (before, after)


@pytest.mark.slow
def test_supervised_frame_training_learns_above_random_init(tmp_path: Path) -> None:
    """Frame cross-entropy for a few epochs: its GRU probe beats the same encoder at random init."""
    common = [
        "data.train_subset=64",
        "train.progress=false",
        "probe.epochs=5",
        "probe.val_size=32",
        "probe.train_subset=96",
    ]
    sup = load_config("supervised-audio", [*SUPERVISED, *common, "train.epochs=8", "train.lr=5e-3"])
    rnd = load_config("random-audio", [*TINY, *common])
    acc = {name: probe(pretrain(c, tmp_path / name))["test_acc_pct"] for name, c in (("sup", sup), ("rnd", rnd))}
    assert acc["sup"] > acc["rnd"] + 5, acc


def test_mfcc_preset_probes_its_one_fixed_layer(tmp_path: Path) -> None:
    cfg = load_config(
        "mfcc-audio",
        [
            "data.name=synthetic-speech",
            "train.progress=false",
            "probe.epochs=3",
            "probe.val_size=32",
            "probe.train_subset=64",
            "model.width=0.1",
        ],
    )
    comp = build(cfg)
    assert not any(p.requires_grad for p in comp.encoder.parameters())
    result = probe(pretrain(cfg, tmp_path / "mfcc"))
    assert result["layers"] == [1] and result["feature_dim"] == 13 and result["test_acc_pct"] > 100 / 8


def test_speaker_probe_reads_time_averaged_features_per_utterance(tmp_path: Path) -> None:
    from localssl.data import espeak

    if not espeak.espeak_available():
        pytest.skip(espeak.EXTRA_MISSING)
    espeak.make_corpus(tmp_path / "espeak-demo", 20 * espeak.CHUNK / espeak.RATE / 3600, n_speakers=4, seed=1)
    cfg = load_config(
        "random-audio",
        ["data.name=espeak-demo", f"data.root={tmp_path}", "model.width=0.0625", "train.progress=false"],
    )
    run = pretrain(cfg, tmp_path / "run")
    res = probe(run, ["probe.target=speaker", "probe.epochs=2", "probe.val_size=2"])
    assert res["level"] == "utterance" and res["n_test"] == 4 and res["n_val"] == 2 and res["feature_dim"] == 16
    frames = probe(run, ["probe.epochs=1", "probe.val_size=2"])
    assert frames["level"] == "frame" and frames["n_test"] == 4 * espeak.CHUNK // espeak.HOP


def test_claims_are_checked_from_the_means():
    from localssl.experiments.clapp2021.speech import PH, SP, TABLE, check_claims
    from localssl.experiments.engine.grid import Cell, GridResult

    values = {
        "Random init": (20, 30), "MFCC (13 coefficients)": (30, 50), "Greedy supervised": (60, 80),
        "Supervised": (70, 40), "Supervised (speaker labels)": (None, 90), "CPC": (50, 85), "GIM": (50, 85),
        "Hinge-loss CPC": (48, 80),
        "CLAPP": (51, 80), "CLAPP, e-prop": (45, 75), "CLAPP, last conv layer alone": (40, 70),
    }  # fmt: skip
    cells = [
        Cell(row, col, "espeak-cpu", seed, values[row.label][i] + seed, 0.0, 1, 1, Path("."), "kept", "kept", {})
        for row in TABLE.rows
        for i, col in enumerate((PH, SP))
        for seed in range(2)
        if values[row.label][i] is not None
    ]
    result = GridResult(TABLE, TABLE.scale("cpu"), 2, cells, {PH: "p", SP: "s"}, {}, {}, Path("."), 0.0)
    text = check_claims(result)
    assert "| CPC ≥ GIM | 50.5 vs 50.5 (+0.0) | yes (within one std) |" in text
    assert "| GIM ≥ CLAPP | 50.5 vs 51.5 (-1.0) | no |" in text
    assert "phones: supervised 70.5 − mfcc (13 coefficients) 30.5 = 40.0 points (≥ 15 needed): yes." in text
    # speakers: the reference is the encoder trained on speaker labels, not the phone-supervised one (40)
    assert "speakers: supervised (speaker labels) 90.5 − random init 30.5 = 60.0 points (≥ 15 needed): yes." in text
    assert TABLE.rows[[r.label for r in TABLE.rows].index("Supervised (speaker labels)")].datasets == (SP,)


def test_speaker_labels_give_every_frame_its_utterance_speaker(tmp_path: Path) -> None:
    import dataclasses

    from localssl.data.base import DatasetError
    from localssl.data.pretrain import load_pretrain_data
    from localssl.data.sequence import SequenceData

    data = SequenceData(
        torch.zeros(3, 1, 1600, dtype=torch.int16),
        torch.full((3, 10), -1),
        ["sil"],
        speakers=torch.tensor([2, 0, 1]),
        speaker_names=["a", "b", "c"],
    )
    frames = data.speaker_frames()
    assert torch.equal(frames.labels, torch.tensor([2, 0, 1])[:, None].expand(3, 10))
    assert frames.classes == ["a", "b", "c"]
    assert torch.equal(data.labels, torch.full((3, 10), -1))  # the original is untouched
    with pytest.raises(DatasetError, match="records speakers"):
        dataclasses.replace(data, speakers=None).speaker_frames()
    with pytest.raises(ValueError, match="data.labels must be auto or speaker"):
        load_config("supervised-speaker-audio", ["data.labels=phones"])
    cfg = load_config("supervised-speaker-audio", [*TINY[:3], "data.train_subset=4"])  # the toy records no speakers
    with pytest.raises(DatasetError, match="records speakers"):
        load_pretrain_data(cfg)


def _window_ce(labels: torch.Tensor):
    from localssl.objectives.base import LayerSpec
    from localssl.objectives.cross_entropy import FrameCrossEntropyConfig, FrameCrossEntropyObjective
    from localssl.views.base import ViewBatch

    torch.manual_seed(0)
    obj = FrameCrossEntropyObjective(FrameCrossEntropyConfig(num_classes=5, pool="window"), LayerSpec(6, (4, 20)), [])
    h = torch.randn(3, 4, 20, requires_grad=True)
    e = torch.zeros(0, dtype=torch.long)
    return obj, h, obj(h, [], ViewBatch(x=h, pos=e, pos_ref=e, neg=e, neg_ref=e, labels=labels, n_images=3))


def test_window_pooled_cross_entropy_is_gims_speaker_loss() -> None:
    """objective.pool=window: CE of one read-out of the window's time average (GIM's Speaker_Loss), not the
    mean of per-frame losses; its gradient is autodiff's of that formula."""
    y = torch.tensor([2, 0, 4])
    obj, h, out = _window_ce(y[:, None].expand(3, 10))
    ref = torch.nn.functional.cross_entropy(obj.readout(h.mean(-1)), y)
    assert torch.allclose(out.loss, ref, atol=1e-6)
    (g,) = torch.autograd.grad(out.loss, h, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, h)
    assert torch.allclose(g, g_ref, atol=1e-7)
    per_frame = obj.readout(h.detach().transpose(1, 2)).reshape(-1, 5)
    frame = torch.nn.functional.cross_entropy(per_frame, y.repeat_interleave(20))
    assert not torch.allclose(out.loss.detach(), frame)  # not the per-frame loss


def test_window_pooling_refuses_frame_labels() -> None:
    from localssl.objectives.cross_entropy import FrameCrossEntropyConfig
    from localssl.registry import ConfigError

    with pytest.raises(ConfigError, match="one label per window"):
        _window_ce(torch.tensor([[1, 1, 2, 2, 3], [0] * 5, [4] * 5]))
    with pytest.raises(ConfigError, match="frame or window"):
        FrameCrossEntropyConfig(pool="utterance")


def test_speaker_supervised_preset_trains_on_one_speaker_per_window(tmp_path: Path) -> None:
    """The speaker-supervised preset on a small eSpeak NG corpus: windows labelled by speaker go through the
    window-pooled loss (no refusal) and a few Adam steps on one batch lower it."""
    from localssl.data import espeak
    from localssl.data.pretrain import load_pretrain_data

    if not espeak.espeak_available():
        pytest.skip(espeak.EXTRA_MISSING)
    espeak.make_corpus(tmp_path / "espeak-demo", 24 * espeak.CHUNK / espeak.RATE / 3600, n_speakers=4, seed=3)
    overrides = [f"data.root={tmp_path}", "data.name=espeak-demo", "model.width=0.0625", "views.window=3200"]
    cfg = load_config("supervised-speaker-audio", overrides)
    data = load_pretrain_data(cfg)
    assert cfg.objective.pool == "window" and bool((data.labels == data.speakers[:, None]).all())
    before, after = audio_loss_before_after("supervised-speaker-audio", overrides, data=data)
    assert after < before - 0.1, (before, after)
