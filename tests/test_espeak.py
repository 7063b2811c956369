"""The eSpeak NG speech corpus (localssl.data.espeak, issue 39): phoneme table, determinism, labels
against the audio, manifest and dataset.json, and the one line printed without the extra."""

from __future__ import annotations

import json

import numpy as np
import pytest

from localssl.data import espeak as E

pytestmark = pytest.mark.skipif(not E.espeak_available(), reason=E.EXTRA_MISSING)

TINY_HOURS = 10 * E.CHUNK / E.RATE / 3600  # 10 utterances of 2 s


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("espeak")
    E.make_corpus(root / "espeak-demo", TINY_HOURS, n_speakers=5, seed=3)
    return root


def _phonemes_of_word_list(accent: str) -> set[str]:
    _, events = E.engine().synthesize(" ".join(E.word_list()), accent, 450, 50, 50)  # fastest rate: less audio
    return {name for name, _ in events}


def _speak(args: tuple[str, dict, int, bool]):
    text, speaker, index, noise = args
    if text:
        return E.engine().synthesize(text, speaker["voice"], speaker["rate"], speaker["pitch"], speaker["range"])
    return E.make_utterance(index, 1, speaker, E.word_list(), noise=noise)


def test_every_phoneme_espeak_emits_for_the_word_list_is_mapped():
    """Each accent speaks the whole word list; every phoneme event has a class in the folded TIMIT set."""
    seen = set().union(*E.isolated(_phonemes_of_word_list, list(E.ACCENTS), workers=2))
    for name in sorted(seen):
        assert 0 <= E.phone_index(name) < len(E.PHONES), name
    used = {E.ESPEAK_TO_TIMIT[n.lstrip("',")] for n in seen}
    assert len(used) >= 36, sorted(set(E.PHONES) - used)  # nearly all 39 classes occur
    assert set(E.ESPEAK_TO_TIMIT.values()) <= set(E.PHONES)


def test_same_seed_same_bytes(tiny_corpus, tmp_path):
    E.make_corpus(tmp_path / "again", TINY_HOURS, n_speakers=5, seed=3)
    first = tiny_corpus / "espeak-demo"
    for name in (
        "manifest.json",
        *(f"{s}-{w}.npy" for s in ("train", "test") for w in ("audio", "phones", "speakers")),
    ):
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    E.make_corpus(tmp_path / "other", TINY_HOURS, n_speakers=5, seed=4)
    assert (first / "train-audio.npy").read_bytes() != (tmp_path / "other" / "train-audio.npy").read_bytes()


def test_manifest_counts_hashes_and_closed_set_speakers(tiny_corpus):
    folder = tiny_corpus / "espeak-demo"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["classes"] == E.PHONES and len(m["speakers"]) == 5
    assert (m["splits"]["train"]["utterances"], m["splits"]["test"]["utterances"]) == (8, 2)
    for split in ("train", "test"):
        info = m["splits"][split]
        assert sum(info["phone_frames"].values()) == info["frames"] == info["utterances"] * E.CHUNK // E.HOP
        for name, digest in info["sha256"].items():
            assert E._sha256(folder / name) == digest
    train = E.read_espeak(tiny_corpus, "train", "demo")
    test = E.read_espeak(tiny_corpus, "test", "demo")
    assert set(test.speakers.tolist()) <= set(train.speakers.tolist())  # the same speakers, other utterances
    assert not any(bool((a == b).all()) for a in test.signals for b in train.signals)


def test_silence_is_quiet_and_phones_are_where_espeak_put_them():
    """Clean audio (no room, no noise): frames labelled silence carry far less energy than speech frames,
    and fricative frames (s, sh, f, z, th) have more zero crossings than vowel frames."""
    speaker = {"voice": "en-us+m3", "pitch": 50, "range": 50, "rate": 170}
    [(audio, labels)] = E.isolated(_speak, [("", speaker, 0, False)])
    frames = audio[: len(labels) * E.HOP].reshape(len(labels), E.HOP).astype(np.float64)
    energy_db = 10 * np.log10((frames**2).mean(1) + 1.0)
    silence = labels == E.PHONES.index("sil")
    assert silence.sum() >= 5 and (~silence).sum() >= 100
    assert np.median(energy_db[silence]) < np.median(energy_db[~silence]) - 25
    zcr = (np.diff(np.sign(frames), axis=1) != 0).mean(1)
    fric = np.isin(labels, [E.PHONES.index(p) for p in ("s", "sh", "f", "z", "th")])
    vowel = np.isin(labels, [E.PHONES.index(p) for p in ("iy", "ih", "eh", "ae", "ah", "aa", "ey", "ay", "ow")])
    assert fric.sum() >= 5 and vowel.sum() >= 20
    assert np.median(zcr[fric]) > 2 * np.median(zcr[vowel])


def test_label_starts_follow_the_phoneme_events():
    """Frame labels switch class at eSpeak's reported phoneme starts (22 050 -> 16 000 Hz, 10 ms frames)."""
    speaker = {"voice": "en-us", "pitch": 50, "range": 50, "rate": 170}
    [(audio22, events)] = E.isolated(_speak, [("see", speaker, 0, False)])
    starts = [round(s * E.RATE / E.ESPEAK_RATE) for _, s in events]
    names = [E.phone_index(n) for n, _ in events]
    assert names[:2] == [E.PHONES.index("s"), E.PHONES.index("iy")]
    lab = E.frame_labels_of(events, len(E._resample(audio22)))
    for cls, a, b in zip(names, starts, [*starts[1:], len(lab) * E.HOP]):
        inside = range(-(-a // E.HOP), b // E.HOP)  # frames whose every sample lies in the phoneme
        assert all(lab[f] == cls for f in inside if (f * E.HOP + E.HOP // 2) < b)
    assert lab[0] == E.PHONES.index("sil") and starts[0] > 0


def test_dataset_json_reuses_the_corpus_hashes(tiny_corpus):
    from localssl.config import load_config
    from localssl.data.manifest import SHIPPED_FINGERPRINT, dataset_manifest

    cfg = load_config("cpc-audio", ["data.name=espeak-demo", f"data.root={tiny_corpus}"])
    man = dataset_manifest(cfg.data)
    assert man["fingerprint_method"] == SHIPPED_FINGERPRINT and man["classes"] == E.PHONES
    assert man["splits"]["train"] == {
        k: v for k, v in E.corpus_fingerprint(tiny_corpus, "train", "demo").items() if k != "classes"
    }


def test_data_make_without_the_extra_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    from localssl import cli

    monkeypatch.setattr(E, "espeak_available", lambda: False)
    assert cli.main(["data", "make", "espeak-demo", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'localssl[speech]'" in err


_SYNTH = """
import hashlib, sys
from localssl.data.espeak_engine import engine
for seed in sys.argv[1:]:
    audio, _ = engine().synthesize("the quick brown fox", "en-us+f2", 175, 50, 50, int(seed))
    print(hashlib.sha256(audio.tobytes()).hexdigest())
"""


def test_breath_noise_is_seeded(tmp_path):
    """eSpeak NG seeds its random generator from the clock when it starts and draws the breath noise of voice
    variants such as ``+f2`` from it: each synthesis seeds it (``noise_seed``), so a fresh process gives the same
    bytes for the same seed, and other bytes for another."""
    import subprocess
    import sys

    if not E.espeak_available():
        pytest.skip(E.EXTRA_MISSING)
    script = tmp_path / "synth.py"
    script.write_text(_SYNTH)

    def digests(*seeds: int) -> list[str]:
        done = subprocess.run(
            [sys.executable, str(script), *map(str, seeds)], capture_output=True, text=True, check=True
        )
        return done.stdout.split()

    # eSpeak NG also keeps state from one synthesis to the next in a process (the same seed twice gives other
    # bytes), which is why the generator makes each block in a fresh process: compare calls at the same position
    first, then_8 = digests(7, 8)
    again, then_7 = digests(7, 7)
    assert first == again  # a fresh process, the same seed: the same bytes
    assert then_8 != then_7  # the same position, another seed: other bytes
