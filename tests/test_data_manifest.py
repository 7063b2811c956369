"""Dataset identity (issue 25): ``dataset_manifest`` and ``check_manifest`` on generated data.

Oracle: the manifest is the same for the same data wherever it lies, and names every change made to it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar_pickles, write_idx
from PIL import Image

from localssl.config import DataConfig
from localssl.data import DatasetError, check_manifest, dataset_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 2 * value % 256, 7)).save(path)


def make_folder(root: Path, unlabeled: bool = False) -> Path:
    for split, n in (("train", 3), ("test", 2)):
        for k, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _png(root / split / cls / f"{i}.png", 10 * k + i)
    if unlabeled:
        _png(root / "unlabeled" / "u.png", 99)
    return root


def _folder(root: Path, **kw) -> DataConfig:
    return DataConfig(name="folder", root=str(root), **kw)


def _difference(recorded: dict, current: dict) -> str:
    with pytest.raises(DatasetError) as err:
        check_manifest(recorded, current, "run runs/x")
    msg = str(err.value)
    assert "run runs/x" in msg and "Fix:" in msg
    return msg


def test_folder_manifest_contents_and_json(tmp_path):
    root = make_folder(tmp_path / "mine", unlabeled=True)
    m = dataset_manifest(_folder(root))
    assert json.loads(json.dumps(m)) == m
    assert m["name"] == "folder" and m["classes"] == ["cat", "dog"]
    assert {s: v["images"] for s, v in m["splits"].items()} == {"unlabeled": 1, "train": 6, "test": 4}
    only = dataset_manifest(_folder(root, pretrain_split="train"))
    assert list(only["splits"]) == ["train", "test"]
    assert not list((tmp_path / "cache").glob("*"))  # nothing was decoded


def test_copied_folder_has_the_same_manifest(tmp_path):
    root = make_folder(tmp_path / "mine")
    recorded = dataset_manifest(_folder(root))
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(root, copy)  # new location and modification times
    for path in copy.rglob("*.png"):
        os.utime(path, ns=(5, 5))
    current = dataset_manifest(_folder(copy))
    assert current == recorded
    check_manifest(recorded, current, "run runs/x")  # no error


def test_added_renamed_and_resized_images_are_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    recorded = dataset_manifest(_folder(root))
    _png(root / "train" / "dog" / "9.png", 1)
    msg = _difference(recorded, dataset_manifest(_folder(root)))
    assert "split 'train': 6 images recorded, 7 now" in msg and "'test'" not in msg
    (root / "train" / "dog" / "9.png").unlink()
    (root / "test" / "cat" / "1.png").rename(root / "test" / "cat" / "renamed.png")
    msg = _difference(recorded, dataset_manifest(_folder(root)))
    assert "split 'test': the same number of images (4) but other files" in msg
    (root / "test" / "cat" / "renamed.png").rename(root / "test" / "cat" / "1.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "train" / "cat" / "0.png", compress_level=0)  # re-encoded
    msg = _difference(recorded, dataset_manifest(_folder(root)))
    assert "split 'train': the same number of images (6) but other files" in msg


def test_changed_classes_and_splits_are_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    recorded = dataset_manifest(_folder(root))
    for split in ("train", "test"):
        (root / split / "dog").rename(root / split / "wolf")
    msg = _difference(recorded, dataset_manifest(_folder(root)))
    assert "classes differ (missing now: ['dog']; new: ['wolf'])" in msg
    _png(root / "unlabeled" / "u.png", 3)
    msg = _difference(recorded, dataset_manifest(_folder(root)))
    assert "split 'unlabeled' is in the current data but was not recorded" in msg


def test_builtin_manifest_hashes_the_decoded_data(tmp_path):
    root = write_cifar_pickles(tmp_path / "data", n_train=10, n_test=4)
    cfg = DataConfig(name="cifar10", root=str(root))
    recorded = dataset_manifest(cfg)
    assert json.loads(json.dumps(recorded)) == recorded
    assert recorded["classes"][0] == "airplane" and {s: v["images"] for s, v in recorded["splits"].items()} == {
        "train": 10,
        "test": 4,
    }
    assert dataset_manifest(cfg) == recorded  # deterministic
    batch = root / "cifar-10-batches-py" / "test_batch"
    content = pickle.loads(batch.read_bytes())
    content[b"data"][0, 0] ^= 1  # one pixel value, same file size
    batch.write_bytes(pickle.dumps(content))
    msg = _difference(recorded, dataset_manifest(cfg))
    assert "split 'test': the same number of images (4) but other pixels or labels" in msg
    assert "'train'" not in msg
    other = dataset_manifest(DataConfig(name="cifar10", root=str(root)), splits=["test"])
    assert "dataset 'cifar10' recorded, 'folder' now" in _difference(
        other, dataset_manifest(_folder(make_folder(tmp_path / "f")))
    )


def test_older_fingerprints_are_not_compared_but_counts_are(tmp_path):
    root = make_folder(tmp_path / "mine")
    current = dataset_manifest(_folder(root))
    older = json.loads(json.dumps(current))
    older["fingerprint_method"] = "something else"
    older["splits"]["train"]["fingerprint"] = "0" * 64
    check_manifest(older, current, "run runs/x")  # fingerprints made otherwise: not comparable
    older["splits"]["train"]["images"] = 5
    assert "split 'train': 5 images recorded, 6 now" in _difference(older, current)
    with pytest.raises(DatasetError, match="recorded for run runs/x is not a dataset manifest"):
        check_manifest({"name": "folder"}, current, "run runs/x")


def test_builtin_mnist_manifest(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8), gz=False)
    m = dataset_manifest(DataConfig(name="mnist", root=str(tmp_path)))
    assert m["classes"] == [str(i) for i in range(10)]
    assert {s: v["images"] for s, v in m["splits"].items()} == {"train": 5, "test": 3}
