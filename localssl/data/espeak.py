"""A speech corpus with real phonetics, generated offline with eSpeak NG: ``localssl data make espeak-SCALE``.

CPC, Greedy InfoMax and CLAPP 2021 (van den Oord et al. 2018; Löwe et al. 2019; Illing et al. 2021,
Table 1) classify LibriSpeech phones per 10 ms frame and speakers per utterance. LibriSpeech with GIM's
aligned phones cannot be downloaded everywhere, so this module synthesises a corpus with the same shape:

* **speech**: phrases of 3–8 words drawn from a word list shipped with the package
  (``assets/espeak_words.txt``, written for localssl), spoken by eSpeak NG (formant synthesis with
  coarticulation and prosody) through its C API (``espeak_Initialize`` with phoneme events,
  ``espeak_SetVoiceByName``, ``espeak_SetParameter``, a synthesis callback) at 22 050 Hz, resampled to 16 kHz;
* **speakers**: ≥ 100 fixed speakers, each an English accent × a voice variant × base pitch × pitch
  range × speaking rate (:func:`make_speakers`);
* **labels**: eSpeak reports the sample where each phoneme starts; every 10 ms frame gets the phoneme at
  its centre, folded by :data:`ESPEAK_TO_TIMIT` into Lee & Hon's 39 TIMIT classes (38 phones and
  silence, :data:`PHONES`), and each utterance its speaker id;
* **utterances**: 2 s (32 000 samples, as ``librispeech`` chunks), phrases joined by 80–300 ms pauses;
  speakers take turns by groups of five utterances, the last of each group a test utterance, so train
  and test hold other utterances of the same speakers (GIM's closed-set speaker task);
* **room and noise** (default on): a short exponentially decaying room response and background noise
  at 10–30 dB SNR, drawn per utterance;
* **deterministic**: utterance ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and every block
  of 25 utterances is spoken by a freshly loaded eSpeak NG in its own process (the library keeps state
  between syntheses); the same seed gives the same bytes (``tests/test_espeak.py``);
* **files**: ``<root>/espeak-SCALE/{train,test}-{audio,phones,speakers}.npy`` and ``manifest.json``
  (counts per class and speaker, sha256 of every file, the generator's versions). A run's
  ``dataset.json`` reuses those hashes (:func:`corpus_fingerprint`) instead of hashing hours of audio.

eSpeak NG is GPL-3.0; localssl (MIT) loads it at run time only, from the optional extra
``pip install 'localssl[speech]'`` (``espeakng-loader``: the library and its data in one wheel).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from localssl.data import espeak_engine
from localssl.data.base import DatasetError
from localssl.data.espeak_engine import ESPEAK_RATE, EXTRA_MISSING, engine, espeak_available
from localssl.data.sequence import SequenceData

HOP = 160
CHUNK = 32000  # 2 s utterances at 16 kHz
RATE = 16000
CORPUS_VERSION = 2  # 2: the breath noise of the +f2/+f3 voice variants seeded (same bytes twice)
TEST_EVERY = 5  # utterance i is a test utterance when i % 5 == 4
WORDS_FILE = Path(__file__).resolve().parent / "assets" / "espeak_words.txt"

# Lee & Hon (1989)'s 39 folded TIMIT classes: 38 phones and silence (h#, pau, epi, closures and q fold into sil).
PHONES = [
    "sil", "iy", "ih", "eh", "ae", "ah", "uw", "uh", "aa", "ey", "ay", "oy", "aw", "ow", "er",
    "l", "r", "w", "y", "m", "n", "ng", "ch", "jh", "dh", "b", "d", "dx", "g", "p", "t", "k",
    "z", "v", "f", "th", "s", "hh", "sh",
]  # fmt: skip

# eSpeak NG's English phoneme mnemonics (stress marks ' and , removed) -> folded TIMIT class. Every
# phoneme the English voices used here emit for the word list is in this table (tests/test_espeak.py).
ESPEAK_TO_TIMIT = {
    # pauses and the glottal stop (TIMIT q folds into silence)
    "_": "sil", "_:": "sil", "_!": "sil", "_|": "sil", "_^_": "sil", "?": "sil",
    # vowels
    "i": "iy", "i:": "iy", "I": "ih", "I#": "ih", "I2": "ih", "IR": "ih", "i@": "ih", "i@3": "ih",
    "E": "eh", "e@": "eh", "a": "ae", "aa": "ae", "a#": "ah", "@": "ah", "@-": "ah", "@2": "ah", "@5": "ah",
    "V": "ah", "u:": "uw", "U": "uh", "U@": "uh", "0": "aa", "A:": "aa", "A@": "aa", "O": "aa", "O:": "aa",
    "O2": "aa", "O@": "aa", "o@": "aa", "eI": "ey", "aI": "ay", "aI2": "ay", "aI3": "ay", "aI@": "ay",
    "OI": "oy", "aU": "aw", "oU": "ow", "3": "er", "3:": "er", "VR": "er", "@L": "l",
    # consonants
    "l": "l", "r": "r", "r-": "r", "w": "w", "w#": "w", "j": "y", ";": "y", "m": "m", "n": "n", "n-": "n",
    "N": "ng", "tS": "ch", "dZ": "jh", "D": "dh", "b": "b", "d": "d", "t#": "dx", "g": "g", "p": "p",
    "t": "t", "t2": "t", "t[": "t", "k": "k", "z": "z", "v": "v", "f": "f", "T": "th", "s": "s",
    "h": "hh", "S": "sh", "Z": "sh",
}  # fmt: skip

ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy", "Annie",
    "Denis", "Gene", "Jacky", "Lee", "Mario", "Michael", "Mike", "Storm", "belinda", "benjamin", "caleb",
    "david", "ed", "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "norbert",
)  # fmt: skip

# Corpus sizes: hours of audio and speakers per scale (``--hours`` overrides the hours).
SCALES: dict[str, dict[str, float]] = {
    "demo": {"hours": 0.2, "speakers": 100},  # the smallest corpus (a quick look, tests at their size)
    "cpu": {"hours": 0.6, "speakers": 100},  # `localssl reproduce speech --scale cpu` on 2 cores
    "gpu": {"hours": 100.0, "speakers": 251},  # about LibriSpeech train-clean-100 (100.6 h, 251 speakers)
}


def phone_index(mnemonic: str) -> int:
    """Class index (into :data:`PHONES`) of an eSpeak phoneme event's name (stress marks ignored)."""
    name = re.sub(r"^[',]+", "", mnemonic)
    if name not in ESPEAK_TO_TIMIT:
        raise DatasetError(f"eSpeak phoneme '{mnemonic}' has no entry in localssl.data.espeak.ESPEAK_TO_TIMIT")
    return PHONES.index(ESPEAK_TO_TIMIT[name])


def word_list() -> list[str]:
    """The words phrases are drawn from (``assets/espeak_words.txt``; ``#`` lines are comments)."""
    lines = WORDS_FILE.read_text().splitlines()
    return [w for line in lines if not line.startswith("#") for w in line.split()]


# ------------------------------------------------------------------------------------- the corpus
def make_speakers(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct speakers: accent × voice variant × base pitch (0–100) × pitch range × rate (words/min)."""
    rng = np.random.default_rng([seed, 10**6])
    out: list[dict[str, Any]] = []
    seen = set()
    while len(out) < n:
        s = {
            "voice": f"{ACCENTS[rng.integers(len(ACCENTS))]}+{VARIANTS[rng.integers(len(VARIANTS))]}",
            "pitch": int(rng.integers(20, 81)),
            "range": int(rng.integers(15, 91)),
            "rate": int(rng.integers(130, 211)),
        }
        key = tuple(s.values())
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _resample(audio: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(audio.astype(np.float64), 320, 441)  # 22 050 -> 16 000 Hz


def _room_and_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A simple room: the direct sound plus an exponentially decaying noise tail (RT60 0.1–0.5 s, 10–40 %
    of the energy), then white and low-pass background noise at 10–30 dB SNR."""
    from scipy.signal import fftconvolve, lfilter

    rt60 = rng.uniform(0.1, 0.5)
    n = int(rt60 * RATE)
    tail = rng.normal(size=n) * np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
    tail *= np.sqrt(rng.uniform(0.1, 0.4) / (tail**2).sum())
    h = np.concatenate([[1.0], np.zeros(int(rng.integers(40, 160))), tail])
    y = fftconvolve(x, h)[: len(x)]
    noise = rng.normal(size=len(x))
    noise = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.95)], noise)  # from white to rumbling
    snr_db = rng.uniform(10, 30)
    noise *= np.sqrt((y**2).mean() / ((noise**2).mean() * 10 ** (snr_db / 10)))
    return y + noise


def sample_labels_of(events: list[tuple[str, int]], n: int) -> np.ndarray:
    """Class per 16 kHz sample of ``n`` samples from eSpeak's ``[(phoneme, start sample at 22 050 Hz)]``: each
    phoneme lasts until the next one starts; before the first one, silence."""
    lab = np.zeros(n, dtype=np.int64)
    starts = [round(s * RATE / ESPEAK_RATE) for _, s in events]
    for (name, _), a, b in zip(events, starts, [*starts[1:], n]):
        lab[a:b] = phone_index(name)
    return lab


def frame_labels_of(events: list[tuple[str, int]], n: int) -> np.ndarray:
    """One class per 10 ms frame (the class at the frame's centre sample) of ``n`` samples at 16 kHz."""
    return sample_labels_of(events, n)[HOP // 2 :: HOP][: n // HOP]


def make_utterance(
    index: int, seed: int, speaker: dict[str, Any], words: list[str], noise: bool = True, length: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Utterance ``index``: int16 audio ``(length,)`` at 16 kHz and one phone class per 10 ms ``(length // HOP,)``."""
    rng = np.random.default_rng([seed, index])
    eng = engine()
    pieces: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    total = 0
    while total < length:
        text = " ".join(words[i] for i in rng.integers(len(words), size=int(rng.integers(3, 9))))
        noise_seed = (seed * 1_000_003 + index) * 64 + len(pieces)  # this piece's breath noise (rand())
        audio22, events = eng.synthesize(
            text, speaker["voice"], speaker["rate"], speaker["pitch"], speaker["range"], noise_seed
        )
        audio = _resample(audio22)
        lab = sample_labels_of(events, len(audio))
        pause = int(rng.integers(80, 301)) * RATE // 1000
        pieces += [audio, np.zeros(pause)]
        labels += [lab, np.zeros(pause, dtype=np.int64)]
        total += len(audio) + pause
    x = np.concatenate(pieces)[:length]
    sample_labels = np.concatenate(labels)[:length]
    x = x / (np.sqrt((x**2).mean()) + 1e-9)
    if noise:
        x = _room_and_noise(x, rng)
    x *= 10 ** (rng.uniform(-26, -16) / 20) * 32768 / (np.sqrt((x**2).mean()) + 1e-9)  # -26..-16 dBFS
    audio16 = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return audio16, sample_labels[HOP // 2 :: HOP][: length // HOP]


def speaker_of(index: int, n_speakers: int) -> int:
    """Speakers take turns by groups of five utterances, the last of each group a test utterance: every
    speaker has train and test utterances (a closed set, as GIM's speaker task)."""
    return (index // TEST_EVERY) % n_speakers


def split_of(index: int) -> str:
    return "test" if index % TEST_EVERY == TEST_EVERY - 1 else "train"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_dir(root: Path, scale: str) -> Path:
    return Path(root) / f"espeak-{scale}"


BLOCK = 25  # utterances per worker process: each block starts from a freshly loaded eSpeak NG


def _make_block(args: tuple[int, int, int, list[dict[str, Any]], bool]) -> tuple[list, list, str]:
    """Utterances ``start .. stop-1`` in a fresh process (see :func:`isolated`)."""
    start, stop, seed, speakers, noise = args
    words = word_list()
    out = [make_utterance(i, seed, speakers[speaker_of(i, len(speakers))], words, noise) for i in range(start, stop)]
    return [a for a, _ in out], [p for _, p in out], engine().version


def isolated(fn: Callable, items: list, workers: int = 1) -> Iterator:
    """``fn(item)`` for each item, in order, each call in a new forked process that loads eSpeak NG afresh.

    eSpeak NG keeps state inside the library between syntheses (the same text twice in one process
    gives a few samples' difference), and a library loaded once cannot be reset; a process that never
    synthesised, forked per call, makes every call start from the same state. The calling process must
    not have loaded the library itself (:func:`engine`)."""
    import multiprocessing

    if espeak_engine.loaded():
        raise RuntimeError("eSpeak NG is loaded in this process already: its state would leak into the workers")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, workers), maxtasksperchild=1) as pool:
        yield from pool.imap(fn, items, chunksize=1)


def make_corpus(
    out: Path,
    hours: float,
    n_speakers: int = 100,
    seed: int = 0,
    noise: bool = True,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a corpus of ``hours`` of 2 s utterances into ``out`` (see the module docstring); returns its
    manifest. Blocks of :data:`BLOCK` utterances are made in ``workers`` forked processes (default: up to 2),
    each from a freshly loaded eSpeak NG, so the bytes do not depend on ``workers``.
    ``progress(done, total)`` is called after every block."""
    if not espeak_available():
        raise DatasetError(EXTRA_MISSING)
    import os

    import scipy

    n = max(TEST_EVERY, round(hours * 3600 * RATE / CHUNK))
    speakers = make_speakers(n_speakers, seed)
    words = word_list()
    workers = workers or min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    blocks = [(s, min(s + BLOCK, n), seed, speakers, noise) for s in range(0, n, BLOCK)]
    data: dict[str, dict[str, list]] = {s: {"audio": [], "phones": [], "speakers": []} for s in ("train", "test")}
    versions = set()
    for (start, stop, *_), (audios, phones, version) in zip(blocks, isolated(_make_block, blocks, workers)):
        versions.add(version)
        for i, audio, ph in zip(range(start, stop), audios, phones):
            part = data[split_of(i)]
            part["audio"].append(audio)
            part["phones"].append(ph.astype(np.int8))
            part["speakers"].append(speaker_of(i, n_speakers))
        if progress is not None:
            progress(stop, n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, Any] = {}
    for split, part in data.items():
        arrays = {
            "audio": np.stack(part["audio"]),
            "phones": np.stack(part["phones"]),
            "speakers": np.array(part["speakers"], dtype=np.int16),
        }
        files = {}
        for what, arr in arrays.items():
            path = out / f"{split}-{what}.npy"
            np.save(path, arr)
            files[path.name] = _sha256(path)
        counts = np.bincount(arrays["phones"].reshape(-1), minlength=len(PHONES))
        splits[split] = {
            "utterances": len(arrays["audio"]),
            "hours": round(arrays["audio"].size / RATE / 3600, 4),
            "frames": int(arrays["phones"].size),
            "phone_frames": {p: int(c) for p, c in zip(PHONES, counts)},
            "speaker_utterances": np.bincount(arrays["speakers"], minlength=n_speakers).tolist(),
            "sha256": files,
        }
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "seed": seed,
        "hours": hours,
        "noise": noise,
        "sample_rate": RATE,
        "utterance_samples": CHUNK,
        "hop": HOP,
        "classes": PHONES,
        "speakers": speakers,
        "splits": splits,
        "generator": {
            "espeak_ng": ", ".join(sorted(versions)),
            "espeakng_loader": _dist_version("espeakng-loader"),
            "scipy": scipy.__version__,
            "words": len(words),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    audio_h = n * CHUNK / RATE / 3600
    speed = {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "workers": workers,
        "audio_hours": round(audio_h, 4),
        "audio_hours_per_cpu_minute": round(audio_h / (cpu / 60), 3),
    }
    (out / "generation.json").write_text(json.dumps(speed, indent=1) + "\n")  # timings: not part of the hashes
    return manifest


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the generation's workers)."""
    import resource

    usage = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def ensure_corpus(root: Path, scale: str, hours: float | None = None, seed: int = 0, noise: bool = True) -> Path:
    """The corpus ``espeak-SCALE`` under ``root``, generated first if its manifest is missing."""
    import os
    import shutil

    out = corpus_dir(root, scale)
    if not (out / "manifest.json").exists():
        spec = SCALES[scale]
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        make_corpus(tmp, spec["hours"] if hours is None else hours, int(spec["speakers"]), seed, noise)
        if out.exists():  # an interrupted generation (no manifest), or another process finished first
            if (out / "manifest.json").exists():
                shutil.rmtree(tmp)
                return out
            shutil.rmtree(out)
        tmp.rename(out)
    return out


# ------------------------------------------------------------------------------------- reading
def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.exists():
        scale = folder.name.removeprefix("espeak-")
        raise DatasetError(f"{path} is missing: generate the corpus with `localssl data make espeak-{scale}`")
    return json.loads(path.read_text())


def read_espeak(root: Path, split: str, scale: str) -> SequenceData:
    """Split ``train`` or ``test`` of ``<root>/espeak-SCALE``: utterances, frame phones, speaker ids."""
    if split not in ("train", "test"):
        raise DatasetError(f"espeak-{scale} has splits 'train' and 'test', not '{split}'")
    folder = corpus_dir(root, scale)
    manifest = read_manifest(folder)
    audio = np.load(folder / f"{split}-audio.npy")
    phones = np.load(folder / f"{split}-phones.npy").astype(np.int64)
    speakers = np.load(folder / f"{split}-speakers.npy").astype(np.int64)
    return SequenceData(
        torch.from_numpy(audio).unsqueeze(1),
        torch.from_numpy(phones),
        list(manifest["classes"]),
        speakers=torch.from_numpy(speakers),
        speaker_names=[s["voice"] + f" p{s['pitch']} r{s['range']} w{s['rate']}" for s in manifest["speakers"]],
    )


def corpus_fingerprint(root: Path, split: str, scale: str) -> dict[str, Any]:
    """``{"images", "fingerprint", "classes"}`` of a split from the corpus manifest's sha256 (no audio is
    re-hashed): what :func:`localssl.data.manifest.dataset_manifest` records in a run's ``dataset.json``."""
    manifest = read_manifest(corpus_dir(root, scale))
    info = manifest["splits"][split]
    blob = json.dumps(info["sha256"], sort_keys=True).encode()
    return {
        "images": info["utterances"],
        "fingerprint": hashlib.sha256(blob).hexdigest(),
        "classes": manifest["classes"],
    }
