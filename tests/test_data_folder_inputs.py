"""Inputs are what they say (issue 25), ``data.name=folder``: every image is read faithfully or named.

Oracles: symbolic links read like the folders they point to; each image mode's decoded pixels against
the values written (16-bit: high byte, float: round(255 v), transparency over black).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from localssl.data import DatasetError
from localssl.data.images import to_rgb8
from localssl.data.user_folder import read_folder_split

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 8


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))


def _rgb(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), (value, value, value)).save(path)


def make_root(tmp_path: Path) -> Path:
    """train/ and test/ with classes a and b, one 8-px RGB PNG each."""
    root = tmp_path / "mine"
    for split in ("train", "test"):
        for k, cls in enumerate("ab"):
            _rgb(root / split / cls / "0.png", 10 + k)
    return root


# ------------------------------------------------------------------------------------------ symlinks
def test_symlinked_folder_in_class_folder_is_read(tmp_path):
    root = make_root(tmp_path)
    outside = tmp_path / "more"
    _rgb(outside / "1.png", 77)
    _rgb(outside / "deeper" / "2.png", 88)
    os.symlink(outside, root / "train" / "a" / "linked")
    train = read_folder_split(root, "train")
    assert len(train) == 4 and train.labels.tolist() == [0, 0, 0, 1]  # 0.png, linked/1.png, linked/deeper/2.png
    assert [int(v) for v in train.images[:3, 0, 0, 0]] == [10, 77, 88]


def test_change_under_a_symlinked_folder_is_read_again(tmp_path):
    root = make_root(tmp_path)
    outside = tmp_path / "more"
    _rgb(outside / "1.png", 77)
    os.symlink(outside, root / "train" / "a" / "linked")
    assert int(read_folder_split(root, "train").images[1, 0, 0, 0]) == 77
    _rgb(outside / "1.png", 99)
    os.utime(outside / "1.png", ns=(1, 1))
    assert int(read_folder_split(root, "train").images[1, 0, 0, 0]) == 99  # not served from the cache


def test_symlink_loop_is_named(tmp_path):
    root = make_root(tmp_path)
    os.symlink(root / "train", root / "train" / "a" / "loop")
    with pytest.raises(DatasetError, match=r"a/loop is a symbolic link to .*/train, and following it leads back"):
        read_folder_split(root, "train")


def test_links_between_class_folders_that_loop_are_named(tmp_path):
    root = make_root(tmp_path)
    os.symlink(root / "train" / "b", root / "train" / "a" / "to_b")
    os.symlink(root / "train" / "a", root / "train" / "b" / "to_a")
    with pytest.raises(DatasetError, match=r"a/to_b/to_a is a symbolic link to .*/train/a, and following it"):
        read_folder_split(root, "train")


@pytest.mark.parametrize("where", ["a/gone.png", "gone"])
def test_broken_symlink_is_named(tmp_path, where):
    root = make_root(tmp_path)
    os.symlink(tmp_path / "nowhere", root / "train" / where)
    with pytest.raises(DatasetError, match=f"{where} is a broken symbolic link"):
        read_folder_split(root, "train")


# ----------------------------------------------------------------------------------------- image modes
def _decoded(tmp_path: Path, name: str, save) -> torch.Tensor:
    """Write one special image into train/a/ (after 0.png) with ``save(path)``; return its decoded pixels."""
    root = make_root(tmp_path)
    save(root / "train" / "a" / name)
    train = read_folder_split(root, "train")
    assert len(train) == 3
    return train.images[1]


def test_16bit_png_keeps_its_high_byte(tmp_path):
    values = np.array([[0, 257 * 10, 65535, 256 * 200 + 255]] * SIZE, np.uint16).repeat(2, axis=1)
    img = _decoded(tmp_path, "x.png", lambda p: Image.fromarray(values).save(p))
    assert Image.open(tmp_path / "mine" / "train" / "a" / "x.png").mode.startswith("I")
    assert img[:, 0, ::2].tolist() == [[0, 10, 255, 200]] * 3


def test_16bit_pgm_keeps_its_high_byte(tmp_path):
    pixels = np.array([[0x1234, 0xFFFF] * (SIZE // 2)] * SIZE, ">u2")
    img = _decoded(tmp_path, "x.pgm", lambda p: p.write_bytes(b"P5\n8 8\n65535\n" + pixels.tobytes()))
    assert img[:, 0, :2].tolist() == [[0x12, 0xFF]] * 3


def test_float_image_in_unit_range_is_scaled(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.2]] * SIZE, np.float32).repeat(2, axis=1)
    img = _decoded(tmp_path, "x.tif", lambda p: Image.fromarray(values).save(p))
    assert img[:, 0, ::2].tolist() == [[0, 128, 255, 51]] * 3


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.full((SIZE, SIZE), 2.0, np.float32), r"32-bit float samples outside \[0, 1\]"),
        (np.full((SIZE, SIZE), np.nan, np.float32), r"32-bit float samples outside \[0, 1\]"),
        (np.full((SIZE, SIZE), 70000, np.int32), "32-bit integer samples"),
    ],
)
def test_image_without_a_defined_range_is_refused_by_name(tmp_path, array, match):
    root = make_root(tmp_path)
    Image.fromarray(array).save(root / "train" / "b" / "x.tif")
    with pytest.raises(DatasetError, match=r"b/x\.tif: " + match):
        read_folder_split(root, "train")


def test_transparency_is_composited_over_black(tmp_path):
    gray = np.full((SIZE, SIZE), 200, np.uint8)
    alpha = np.array([[0, 255, 128, 255]] * SIZE, np.uint8).repeat(2, axis=1)
    img = _decoded(tmp_path, "x.png", lambda p: Image.fromarray(np.stack([gray, alpha], -1), "LA").save(p))
    assert img[:, 0, ::2].tolist() == [[0, 200, 100, 200]] * 3


def test_palette_transparency_is_composited_over_black(tmp_path):
    def save(path: Path) -> None:
        img = Image.new("P", (SIZE, SIZE), 0)
        img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # 0: red (transparent), 1: green
        img.paste(1, (0, 0, SIZE // 2, SIZE))
        img.save(path, transparency=0)

    img = _decoded(tmp_path, "x.png", save)
    assert img[:, 0, 0].tolist() == [0, 255, 0] and img[:, 0, -1].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("mode", "color", "rgb"),
    [("1", 1, [255, 255, 255]), ("L", 42, [42, 42, 42]), ("CMYK", (0, 255, 255, 0), [255, 0, 0])],
)
def test_8bit_modes_convert_as_pillow_does(tmp_path, mode, color, rgb):
    img = _decoded(tmp_path, "x.tif", lambda p: Image.new(mode, (SIZE, SIZE), color).save(p))
    assert img[:, 0, 0].tolist() == rgb


def test_mode_I_is_16bit_only_from_png_or_pgm():
    """Older Pillow opens 16-bit PNGs as mode ``I``: read as 16-bit; from another format it is refused."""
    img = Image.fromarray(np.array([[0, 65535, 256 * 7]], np.int32))
    img.format = "PNG"
    assert np.asarray(to_rgb8(img, "x.png"))[0, :, 0].tolist() == [0, 255, 7]
    img.format = "TIFF"
    with pytest.raises(DatasetError, match="x.tif: 32-bit integer samples"):
        to_rgb8(img, "x.tif")


def test_unsupported_mode_is_refused_by_name():
    with pytest.raises(DatasetError, match="x.tif: image mode HSV is not supported"):
        to_rgb8(Image.new("HSV", (2, 2)), "x.tif")
