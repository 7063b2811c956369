"""Nothing read from disk runs code (issue 25): planted files in place of each reader's input.

Oracle: a planted pickle whose ``__reduce__`` calls ``os.mkdir(marker)``; the marker must not exist
afterwards. A planted image of another format must never reach that format's decoder (the EPS decoder's
Ghostscript call is replaced by a recorder).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import jpeg_bytes, write_idx
from PIL import EpsImagePlugin, Image

from localssl.data import DatasetError, load_split
from localssl.data.base import cache_dir, manifest_key
from localssl.data.cifar_pickle import ALLOWED_GLOBALS
from localssl.data.speech import read_audio

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


class Planted:
    """Unpickling this calls ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _plant_cifar(root: Path, marker: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": Planted(marker)}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder / "data_batch_1"


def test_the_planted_batch_does_run_code_with_plain_pickle(tmp_path):
    """The exploit is real: a plain unpickle creates the marker (so the refusals below mean something)."""
    marker = tmp_path / "ran"
    planted = _plant_cifar(tmp_path / "data", marker)
    pickle.loads(planted.read_bytes())
    assert marker.is_dir()


def test_planted_cifar_batch_is_refused_by_name(tmp_path):
    marker = tmp_path / "ran"
    planted = _plant_cifar(tmp_path / "data", marker)
    with pytest.raises(DatasetError) as err:
        load_split("cifar10", "train", tmp_path / "data")
    msg = str(err.value)
    assert not marker.exists()  # the planted call never ran
    assert str(planted) in msg and "mkdir" in msg and "delete this file" in msg and "download CIFAR-10" in msg


def test_planted_cifar_batch_in_default_data_folder(tmp_path, monkeypatch):
    """No data path given: the default ``./data`` lookup finds the planted batch, which still never runs."""
    marker = tmp_path / "ran"
    _plant_cifar(tmp_path / "data", marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCALSSL_DATA", raising=False)
    with pytest.raises(DatasetError, match="data_batch_1 is not a CIFAR-10 batch"):
        load_split("cifar10", "train")
    assert not marker.exists()


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING), as the official CIFAR-10 files (cPickle, protocol 2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _official_batch(data: np.ndarray, labels: list[int]) -> bytes:
    buf = io.BytesIO()
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data, b"filenames": [b"a.png"]}
    _Py2Pickler(buf, protocol=2).dump(batch)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")  # numpy 1's name


def test_official_cifar_layout_loads(tmp_path):
    """A batch as the official files are written (Python 2 strings, numpy 1's module name) needs exactly
    ``_reconstruct``, ``ndarray`` and ``dtype``, and loads."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    blob = _official_batch(data, [3, 1, 4, 1])
    found = {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    assert found == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    assert {tuple(g.rsplit(".", 1)) for g in found} <= set(ALLOWED_GLOBALS)
    (folder / "test_batch").write_bytes(blob)
    test = load_split("cifar10", "test", tmp_path)
    assert torch.equal(test.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.labels.tolist() == [3, 1, 4, 1]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_repickled_cifar_loads(tmp_path, protocol):
    """Python 3 re-pickles (numpy integer labels; protocol 5 rebuilds arrays with ``_frombuffer``)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = {b"data": data, b"labels": list(np.array([7, 9]))}
    blob = pickle.dumps(batch, protocol=protocol)
    if protocol == 2:  # Python 3 writes bytes as _codecs.encode(...) below protocol 3: not the CIFAR format
        (folder / "test_batch").write_bytes(blob)
        with pytest.raises(DatasetError, match=r"_codecs\.encode"):
            load_split("cifar10", "test", tmp_path)
        return
    (folder / "test_batch").write_bytes(blob)
    test = load_split("cifar10", "test", tmp_path)
    assert torch.equal(test.images.flatten(1), torch.from_numpy(data)) and test.labels.tolist() == [7, 9]


def test_cifar_batch_of_wrong_shape_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"test_batch: 'data' is uint8 \(2, 100\)"):
        load_split("cifar10", "test", tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(DatasetError, match="class numbers 0..9"):
        load_split("cifar10", "test", tmp_path)


def test_planted_pickle_in_mnist_and_stl10_files_is_only_bytes(tmp_path):
    """MNIST (IDX) and STL-10 (raw uint8) files are read as bytes: a pickle there is a format error."""
    marker = tmp_path / "ran"
    blob = pickle.dumps(Planted(marker))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(blob)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="bad magic number"):
        load_split("mnist", "train", tmp_path)
    stl = tmp_path / "stl10_binary"
    stl.mkdir()
    (stl / "unlabeled_X.bin").write_bytes(blob)
    with pytest.raises(DatasetError, match="not a multiple"):
        load_split("stl10", "unlabeled", tmp_path)
    assert not marker.exists()


def test_planted_decode_cache_is_not_unpickled(tmp_path, monkeypatch):
    """A decode-cache ``.npz`` holding a pickled object is refused (``allow_pickle=False``) and rebuilt."""
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "ran"
    source = tmp_path / "cifar10"
    for cls in ("cat", "dog"):
        (source / "test" / cls).mkdir(parents=True)
        (source / "test" / cls / "0.jpg").write_bytes(jpeg_bytes(np.full((32, 32, 3), 100, np.uint8)))
    planted = cache_dir() / f"cifar10-test-{manifest_key(source, 'test')}.npz"
    planted.parent.mkdir(parents=True)
    np.savez(planted, images=np.array([Planted(marker)], dtype=object), labels=np.zeros(1), classes=np.array(["x"]))
    data = load_split("cifar10", "test", tmp_path)
    assert data.classes == ["cat", "dog"] and not marker.exists()


def test_planted_wav_is_a_named_format_error(tmp_path):
    marker = tmp_path / "ran"
    planted = tmp_path / "19-198-0000.wav"
    planted.write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(DatasetError, match=f"{planted} is not a PCM WAV file"):
        read_audio(planted)
    assert not marker.exists()


def test_flac_through_torchaudio_names_the_format(tmp_path, monkeypatch):
    """torchaudio (ffmpeg) is told the suffix's format, so it does not pick a demuxer by content."""
    calls: list[dict] = []
    fake = types.ModuleType("torchaudio")
    fake.load = lambda path, **kw: calls.append(kw) or (torch.zeros(1, 320), 16000)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import fails: the torchaudio path
    monkeypatch.setitem(sys.modules, "torchaudio", fake)
    assert read_audio(tmp_path / "x.flac").shape == (320,)
    assert calls == [{"format": "flac"}]


# ------------------------------------------------------------------------------------ image decoders
@pytest.fixture
def ghostscript_calls(monkeypatch):
    """Record calls into Pillow's EPS decoder (Ghostscript) instead of running it."""
    calls: list[object] = []

    def fake(*args, **kwargs):
        calls.append(args)
        return Image.new("RGB", (16, 16)).im

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fake)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    return calls


def _folder_with(tmp_path: Path, name: str, blob: bytes) -> Path:
    split = tmp_path / "cifar10" / "test"
    for cls in ("cat", "dog"):
        (split / cls).mkdir(parents=True, exist_ok=True)
        (split / cls / "0.jpg").write_bytes(jpeg_bytes(np.full((32, 32, 3), 100, np.uint8)))
    (split / "dog" / name).write_bytes(blob)
    return split / "dog" / name


def test_postscript_named_png_never_reaches_ghostscript(tmp_path, monkeypatch, ghostscript_calls):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    planted = _folder_with(tmp_path, "1.png", EPS)
    with pytest.raises(DatasetError) as err:
        load_split("cifar10", "test", tmp_path)
    assert not ghostscript_calls
    assert f"{planted} is not a PNG file: its content is PostScript/EPS" in str(err.value)


def test_user_folder_postscript_png_is_refused(tmp_path, monkeypatch, ghostscript_calls):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    from localssl.config import load_config
    from localssl.data import data_info

    root = tmp_path / "mine"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (16, 16), (9, 9, 9)).save(root / split / cls / "0.png")
    (root / "train" / "b" / "1.png").write_bytes(EPS)
    cfg = load_config("clapp++", ["data.name=folder", f"data.root={root}"])
    with pytest.raises(DatasetError, match=r"b/1\.png is not a PNG file: its content is PostScript/EPS"):
        data_info(cfg.data)
    assert not ghostscript_calls


@pytest.mark.parametrize(
    ("name", "fmt", "real"),
    [("1.png", "JPEG", "JPEG"), ("1.jpg", "PNG", "PNG"), ("1.bmp", "GIF", "GIF"), ("1.tif", "PNG", "PNG")],
)
def test_image_of_another_format_is_refused_by_name(tmp_path, monkeypatch, name, fmt, real):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (50, 60, 70)).save(buf, format=fmt)
    planted = _folder_with(tmp_path, name, buf.getvalue())
    with pytest.raises(DatasetError, match="its content is " + real) as err:
        load_split("cifar10", "test", tmp_path)
    assert str(planted) in str(err.value) and "Fix:" in str(err.value)


def test_zip_member_and_tinyimagenet_use_the_suffix_decoder(tmp_path, monkeypatch, ghostscript_calls):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    zroot = tmp_path / "z"
    zroot.mkdir()
    with zipfile.ZipFile(zroot / "cifar10-jpeg.zip", "w") as zf:
        zf.writestr("train/cat/0000.jpg", jpeg_bytes(np.zeros((32, 32, 3), np.uint8)))
        zf.writestr("train/dog/0000.jpg", EPS)
    with pytest.raises(DatasetError, match=r"cifar10-jpeg\.zip:train/dog/0000\.jpg is not a JPEG file"):
        load_split("cifar10", "train", zroot)
    base = tmp_path / "t" / "tiny-imagenet-200"
    (base / "train" / "n0" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("n0\n")
    (base / "train" / "n0" / "images" / "n0_0.JPEG").write_bytes(EPS)
    with pytest.raises(DatasetError, match=r"n0_0\.JPEG is not a JPEG file: its content is PostScript/EPS"):
        load_split("tinyimagenet", "train", tmp_path / "t")
    assert not ghostscript_calls
