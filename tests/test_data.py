"""Readers on small generated files in each official on-disk format."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import jpeg_bytes, write_idx
from PIL import Image

from localssl.data import DatasetError, dataset_info, load_split


def test_cifar_pickles(cifar_root):
    train = load_split("cifar10", "train", cifar_root)
    test = load_split("cifar10", "test", cifar_root)
    assert train.images.shape == (60, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 3, 32, 32)
    assert train.labels.dtype == torch.int64 and int(train.labels.max()) < 10
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"


def test_cifar_pickle_pixel_layout(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((5, 3072), dtype=np.uint8)
    data[:, 0] = 200  # red channel, pixel (0, 0)
    data[:, 1024 + 33] = 100  # green channel, pixel (1, 1)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": [0] * 5}))
    img = load_split("cifar10", "train", tmp_path).images[0]
    assert img[0, 0, 0] == 200 and img[1, 1, 1] == 100 and img.sum() == 300


def test_cifar_zip_and_folder(cifar_zip_root, tmp_path):
    train = load_split("cifar10", "train", cifar_zip_root)
    assert train.images.shape == (9, 3, 32, 32)
    assert train.classes == ["airplane", "automobile", "bird"]
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # the same layout as a plain directory
    folder = tmp_path / "folder" / "cifar10"
    for cls in ("cat", "dog"):
        (folder / "test" / cls).mkdir(parents=True)
        (folder / "test" / cls / "0.jpg").write_bytes(jpeg_bytes(np.full((32, 32, 3), 128, np.uint8)))
    test = load_split("cifar10", "test", tmp_path / "folder")
    assert test.images.shape == (2, 3, 32, 32) and test.labels.tolist() == [0, 1]
    assert abs(int(test.images.float().mean()) - 128) <= 2


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", images, gz)
    write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", labels, gz)
    data = load_split("mnist", "test", tmp_path)
    assert data.images.shape == (7, 1, 28, 28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == labels.tolist()


def test_mnist_corrupt(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 10)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="truncated"):
        load_split("mnist", "train", tmp_path)


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    img = np.zeros((3, 96, 96), dtype=np.uint8)
    img[0, 10, 20] = 255  # channel 0, row 10, column 20
    # official files are column-major per channel: write the transposed image
    (folder / "train_X.bin").write_bytes(np.stack([img.transpose(0, 2, 1)] * 2).tobytes())
    (folder / "train_y.bin").write_bytes(bytes([1, 10]))
    (folder / "unlabeled_X.bin").write_bytes(np.stack([img.transpose(0, 2, 1)] * 3).tobytes())
    train = load_split("stl10", "train", tmp_path)
    assert train.images.shape == (2, 3, 96, 96)
    assert train.images[0, 0, 10, 20] == 255 and train.images[0].sum() == 255
    assert train.labels.tolist() == [0, 9]
    both = load_split("stl10", "unlabeled+train", tmp_path)
    assert len(both) == 5 and both.labels.tolist() == [-1, -1, -1, 0, 9]
    (folder / "train_y.bin").write_bytes(bytes([1]))
    with pytest.raises(DatasetError, match="does not match"):
        load_split("stl10", "train", tmp_path)


def test_tinyimagenet_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (base).mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for j in range(2):
            (d / f"{w}_{j}.JPEG").write_bytes(jpeg_bytes(np.full((64, 64, 3), 40 + 100 * k, np.uint8)))
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for j, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        (base / "val" / "images" / f"val_{j}.JPEG").write_bytes(jpeg_bytes(np.zeros((64, 64, 3), np.uint8)))
        lines.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    train = load_split("tinyimagenet", "train", tmp_path)
    assert train.images.shape == (4, 3, 64, 64) and train.labels.tolist() == [0, 0, 1, 1]
    assert int(train.images[2].float().mean()) > 100
    test = load_split("tinyimagenet", "test", tmp_path)
    assert test.labels.tolist() == [1, 0, 1]
    again = load_split("tinyimagenet", "train", tmp_path)  # served from the decode cache
    assert torch.equal(again.images, train.images)


def test_missing_dataset_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_split("stl10", "train", tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "localssl data download stl10" in msg


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="known datasets"):
        dataset_info("imagenet22k")


def test_shipped_subset():
    train = load_split("cifar10-mini", "train")
    test = load_split("cifar10-mini", "test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(train.labels).tolist() == [400] * 10


def test_download_prints_commands_offline(tmp_path):
    from localssl.data.download import manual_instructions

    text = manual_instructions("stl10", tmp_path)
    assert "stl10_binary.tar.gz" in text and "tar xzf" in text


def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path, format="PNG")


def test_decode_cache_keyed_by_every_file(tmp_path, monkeypatch):
    """An added, a changed and a corrupt image deep in the folder are never served stale from the cache."""
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    split = tmp_path / "cifar10" / "train"
    _png(split / "cat" / "0.png", 10)
    _png(split / "dog" / "0.png", 20)
    first = load_split("cifar10", "train", tmp_path)
    assert first.labels.tolist() == [0, 1] and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    _png(split / "dog" / "1.png", 30)  # added: neither the split folder's nor the source's mtime changes
    added = load_split("cifar10", "train", tmp_path)
    assert added.labels.tolist() == [0, 1, 1] and int(added.images[2, 0, 0, 0]) == 30
    changed_file = split / "cat" / "0.png"
    _png(changed_file, 90)
    os.utime(changed_file, ns=(1, 1))  # a new mtime (and content) for the same path and size
    changed = load_split("cifar10", "train", tmp_path)
    assert int(changed.images[0, 0, 0, 0]) == 90
    (split / "dog" / "1.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"dog/1\.png"):
        load_split("cifar10", "train", tmp_path)
    assert not list((tmp_path / "cache").glob("*.tmp"))  # writes are atomic: no partial file left
