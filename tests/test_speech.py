"""Speech data: the synthetic task, GIM's phone-label alignment, and the LibriSpeech on-disk reader."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from localssl.data import DatasetError, dataset_info, load_split
from localssl.data.speech import frame_labels, read_audio, read_librispeech, synthesize_utterance
from localssl.views.time_shift import TimeShiftConfig, TimeShiftViews


def test_synthetic_utterance_is_seeded_and_labelled_per_frame() -> None:
    a, la = synthesize_utterance(np.random.default_rng(3))
    b, lb = synthesize_utterance(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == (16000,) and la.shape == (100,) and set(np.unique(la)) <= set(range(8))
    rng = np.random.default_rng(4)
    sig, lab = map(np.concatenate, zip(*(synthesize_utterance(rng) for _ in range(5))))
    energy = (sig.reshape(-1, 160) ** 2).mean(1)
    assert (lab == 0).any() and energy[lab == 0].mean() < 0.1 * energy[lab > 0].mean()  # "sil": noise only


def test_frame_labels_align_to_the_end() -> None:
    out = frame_labels(160 * 6 + 37, np.array([4, 5, 6, 7]))
    assert out.tolist() == [-1, -1, 4, 5, 6, 7]
    assert frame_labels(160 * 3, np.array([1, 2, 3, 4, 5])).tolist() == [3, 4, 5]


def _wav(path, n: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(-3000, 3000, n).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(16000)
        wf.writeframes(data.tobytes())
    return data


def test_librispeech_layout_and_gim_phone_file(tmp_path) -> None:
    base = tmp_path / "LibriSpeech" / "train-clean-100" / "19" / "198"
    a = _wav(base / "19-198-0000.wav", 40000, 0)
    _wav(base / "19-198-0001.wav", 70000, 1)
    labels = tmp_path / "LibriSpeech100_labels_split"
    labels.mkdir()
    (labels / "train_split.txt").write_text("19-198-0000\n19-198-0001\n")
    (labels / "test_split.txt").write_text("19-198-0001\n")
    phones_0 = np.arange(248) % 41  # 250 frames of audio, 2 fewer labels (aligned to the end, as GIM)
    (labels / "converted_aligned_phones.txt").write_text(
        "19-198-0000 " + " ".join(map(str, phones_0)) + "\n19-198-0001 " + " ".join(["7"] * 430) + "\n"
    )
    train = read_librispeech(tmp_path, "train")
    assert train.signals.shape == (1 + 2, 1, 32000) and train.labels.shape == (3, 200)  # 2 s chunks
    np.testing.assert_array_equal(train.signals[0, 0].numpy(), a[:32000])
    assert train.labels[0, :3].tolist() == [-1, -1, 0] and train.labels[0, 3].item() == 1
    assert len(read_librispeech(tmp_path, "test")) == 2
    with pytest.raises(DatasetError, match="docs/usage.md"):
        read_librispeech(tmp_path / "nowhere", "train")


def test_flac_without_a_decoder_names_the_fix(tmp_path) -> None:
    pytest.importorskip("numpy")
    try:
        import soundfile  # noqa: F401

        pytest.skip("soundfile installed")
    except ImportError:
        pass
    (tmp_path / "x.flac").write_bytes(b"fLaC")
    try:
        import torchaudio  # noqa: F401

        pytest.skip("torchaudio installed")
    except ImportError:
        with pytest.raises(DatasetError, match=r"localssl\[audio\]"):
            read_audio(tmp_path / "x.flac")


def test_time_shift_windows_start_on_frames() -> None:
    info = dataset_info("synthetic-speech")
    views = TimeShiftViews(TimeShiftConfig(window=3200), info)
    data = load_split("synthetic-speech", "test")
    torch.manual_seed(0)
    vb = views(data.signals[:4], data.labels[:4])
    assert vb.x.shape == (4, 1, 3200) and vb.labels.shape == (4, 20)
    for b in range(4):  # find the window's start and check that its labels are the same frames
        sig = (data.signals[b, 0].float() / 32768 - info.mean[0]) / info.std[0]
        starts = [s for s in range(0, 16000 - 3200 + 1, 160) if torch.allclose(sig[s : s + 3200], vb.x[b, 0])]
        assert len(starts) == 1
        assert vb.labels[b].tolist() == data.labels[b, starts[0] // 160 : starts[0] // 160 + 20].tolist()
