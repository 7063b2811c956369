"""Speech data: LibriSpeech on disk with Greedy InfoMax's aligned phone labels, and a synthetic task.

LibriSpeech (Panayotov et al. 2015) as GIM/CLAPP use it (Löwe et al. 2019; Illing et al. 2021, App. B.2),
under the data root::

    LibriSpeech/train-clean-100/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   (or .wav)
    LibriSpeech100_labels_split/train_split.txt          one utterance id per line
    LibriSpeech100_labels_split/test_split.txt
    LibriSpeech100_labels_split/converted_aligned_phones.txt   "<id> p1 p2 ..." one phone (0..40) per 10 ms

The phone sequences are slightly shorter than the audio; as GIM, they are aligned to its *end*
(earlier frames get label -1). Utterances are cut into 2 s chunks (the 1.28 s training window is cropped
from them). FLAC needs ``soundfile`` (``pip install 'localssl[audio]'``) or ``torchaudio``; 16-bit WAV
is read with the standard library.

``synthetic-speech`` is generated in code (no download): vowel-like harmonic sounds with the formants of
seven vowels plus silence, random durations (60–160 ms), random "speakers" (pitch 90–220 Hz, formant
scale 0.9–1.15) and background noise, with one label per 10 ms frame.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import torch

from localssl.data.base import DatasetError
from localssl.data.sequence import SequenceData, chunk

HOP = 160  # 10 ms at 16 kHz: one label frame, and the GIM encoder's total stride
CHUNK = 32000  # 2 s chunks held in memory
N_PHONES = 41  # GIM's converted phone set

# ----------------------------------------------------------------------------------- synthetic task
VOWELS = {  # first two formants (Hz), Peterson & Barney (1952) adult male averages
    "a": (730, 1090),
    "i": (270, 2290),
    "u": (300, 870),
    "e": (530, 1840),
    "o": (570, 840),
    "ae": (660, 1720),
    "er": (490, 1350),
}
SYNTH_CLASSES = ["sil", *VOWELS]
SYNTH_SIZES = {"train": 512, "test": 128}
SYNTH_LENGTH = 16000  # 1 s per utterance


def synthesize_utterance(rng: np.random.Generator, length: int = SYNTH_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """One utterance: float waveform ``(length,)`` and frame labels ``(length // HOP,)``."""
    f0, scale = rng.uniform(90, 220), rng.uniform(0.9, 1.15)
    signal = np.zeros(length)
    sample_label = np.zeros(length, dtype=np.int64)
    pos = 0
    while pos < length:
        dur = int(rng.integers(6, 17)) * HOP
        cls = int(rng.integers(len(SYNTH_CLASSES)))
        end = min(pos + dur, length)
        sample_label[pos:end] = cls
        if cls > 0:
            period = round(16000 / (f0 * rng.uniform(0.95, 1.05)))  # whole samples: one period, tiled
            pitch = 16000 / period
            harm = np.arange(1, int(4000 // pitch) + 1)
            formants = np.array(VOWELS[SYNTH_CLASSES[cls]]) * scale
            amp = sum(np.exp(-0.5 * ((harm * pitch - f) / bw) ** 2) for f, bw in zip(formants, (90.0, 120.0)))
            amp = amp + 0.02 / harm
            phase = rng.uniform(0, 2 * np.pi, len(harm))
            t = np.arange(period) / 16000.0
            one = (amp[:, None] * np.sin(2 * np.pi * pitch * harm[:, None] * t[None] + phase[:, None])).sum(0)
            n = end - pos
            ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 160.0)
            signal[pos:end] = np.resize(one, n) * ramp * rng.uniform(0.5, 1.0)
        pos = end
    rms = np.sqrt(np.mean(signal**2)) + 1e-8
    signal = 0.1 * signal / rms + rng.normal(0, rng.uniform(0.005, 0.03), length)
    labels = sample_label[HOP // 2 :: HOP][: length // HOP]
    return signal, labels


@functools.lru_cache(maxsize=2)
def _synthetic_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng({"train": 0, "test": 1}[split])
    sigs, labs = zip(*(synthesize_utterance(rng) for _ in range(SYNTH_SIZES[split])))
    return np.clip(np.stack(sigs) * 32767, -32768, 32767).astype(np.int16), np.stack(labs)


def read_synthetic_speech(root: Path, split: str) -> SequenceData:
    """The synthetic speech task (``root`` is ignored): 512 train / 128 test utterances of 1 s, seeded
    (generated once per process)."""
    if split not in SYNTH_SIZES:
        raise DatasetError(f"synthetic-speech has splits 'train' and 'test', not '{split}'")
    audio, labels = _synthetic_split(split)
    return SequenceData(
        torch.from_numpy(audio.copy()).unsqueeze(1), torch.from_numpy(labels.copy()), list(SYNTH_CLASSES)
    )


# ------------------------------------------------------------------------------------- LibriSpeech
def read_audio(path: Path) -> np.ndarray:
    """Mono 16 kHz int16 samples of a WAV (standard library) or FLAC (soundfile, else torchaudio) file.

    Decoding runs no code from the file: WAV is parsed by the standard library, FLAC by libsndfile, or by
    torchaudio told the format, so its backend (ffmpeg) does not pick a demuxer by content."""
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as wf:
                if wf.getsampwidth() != 2 or wf.getnchannels() != 1 or wf.getframerate() != 16000:
                    raise DatasetError(f"{path}: expected 16-bit mono 16 kHz WAV")
                return np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2").copy()
        except (wave.Error, EOFError) as err:
            raise DatasetError(
                f"{path} is not a PCM WAV file ({err}); replace it with a 16-bit mono WAV or remove it"
            ) from err
    try:
        import soundfile  # type: ignore[import-not-found]

        data, rate = soundfile.read(str(path), dtype="int16")
    except ImportError:
        try:
            import torchaudio  # type: ignore[import-not-found]
        except ImportError as err:
            raise DatasetError(
                f"reading {path.suffix} files needs soundfile or torchaudio: pip install 'localssl[audio]' "
                "(or convert the corpus to 16-bit WAV)"
            ) from err
        wav, rate = torchaudio.load(str(path), format=path.suffix.lower().lstrip("."))  # the suffix's decoder only
        data = (wav[0].numpy() * 32768).clip(-32768, 32767).astype(np.int16)
    if rate != 16000:
        raise DatasetError(f"{path}: sample rate {rate}, LibriSpeech is 16 kHz")
    return np.asarray(data, dtype=np.int16).reshape(-1)


def read_phone_labels(path: Path) -> dict[str, np.ndarray]:
    """GIM's ``converted_aligned_phones.txt``: ``<speaker>-<chapter>-<utt> p1 p2 ...`` per line."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = np.array([int(p) for p in parts[1:]], dtype=np.int64)
    return out


def frame_labels(n_samples: int, phones: np.ndarray | None) -> np.ndarray:
    """One label per 10 ms frame, the phone sequence aligned to the end (GIM), -1 where none."""
    n = n_samples // HOP
    out = np.full(n, -1, dtype=np.int64)
    if phones is not None and len(phones):
        m = min(n, len(phones))
        out[n - m :] = phones[len(phones) - m :]
    return out


def read_librispeech(root: Path, split: str, subset: str = "train-clean-100") -> SequenceData:
    """Utterances listed in GIM's ``<split>_split.txt`` (``train`` or ``test``) as 2 s chunks with phones."""
    if split not in ("train", "test"):
        raise DatasetError(f"librispeech has splits 'train' and 'test' (GIM's split files), not '{split}'")
    audio_dir = root / "LibriSpeech" / subset
    label_dir = root / "LibriSpeech100_labels_split"
    split_file, phone_file = label_dir / f"{split}_split.txt", label_dir / "converted_aligned_phones.txt"
    for p in (audio_dir, split_file, phone_file):
        if not p.exists():
            raise DatasetError(
                f"{p} is missing. LibriSpeech needs {audio_dir} (openslr.org/12, train-clean-100) and GIM's "
                f"split and phone files in {label_dir}; see docs/usage.md 'Speech: CPC and CLAPP on LibriSpeech'."
            )
    phones = read_phone_labels(phone_file)
    sigs, labs = [], []
    for uid in split_file.read_text().split():
        speaker, chapter, _ = uid.split("-")
        folder = audio_dir / speaker / chapter
        path = next((folder / f"{uid}{ext}" for ext in (".flac", ".wav") if (folder / f"{uid}{ext}").exists()), None)
        if path is None:
            raise DatasetError(f"{folder / uid}.flac (or .wav) listed in {split_file} does not exist")
        audio = torch.from_numpy(read_audio(path))
        s, lab = chunk(audio, torch.from_numpy(frame_labels(len(audio), phones.get(uid))), CHUNK, HOP)
        sigs.append(s)
        labs.append(lab)
    if not sigs or sum(len(s) for s in sigs) == 0:
        raise DatasetError(f"no utterance of {split_file} is at least {CHUNK} samples long")
    return SequenceData(torch.cat(sigs), torch.cat(labs), [str(i) for i in range(N_PHONES)])
