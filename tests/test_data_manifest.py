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
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing was decoded (only the files' bytes hashed)


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


# ---------------------------------------------------------------------------------------- content (issue 36)
def _bmp(path: Path, value: int) -> None:
    """An uncompressed image: another value gives another file of exactly the same size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path, format="BMP")


def _bmp_folder(root: Path) -> Path:
    for split, n in (("train", 2), ("test", 1)):
        for k, cls in enumerate(("cat", "dog")):
            for i in range(n):
                _bmp(root / split / cls / f"{i}.bmp", 40 * k + i)
    return root


def test_a_folder_with_the_same_names_and_sizes_but_other_pixels_is_refused(tmp_path):
    root = _bmp_folder(tmp_path / "mine")
    recorded = dataset_manifest(_folder(root))
    other = tmp_path / "other"
    shutil.copytree(root, other)
    size = (other / "train" / "cat" / "0.bmp").stat().st_size
    _bmp(other / "train" / "cat" / "0.bmp", 200)  # other pixels, the same name and byte size
    assert (other / "train" / "cat" / "0.bmp").stat().st_size == size
    msg = _difference(recorded, dataset_manifest(_folder(other)))
    assert "split 'train': the same number of images (4) but other files" in msg and "'test'" not in msg


def test_a_folder_with_two_class_folders_swapped_is_refused(tmp_path):
    root = _bmp_folder(tmp_path / "mine")
    recorded = dataset_manifest(_folder(root))
    other = tmp_path / "other"
    shutil.copytree(root, other)
    for split in ("train", "test"):  # the images of cat now labelled dog and the other way round
        (other / split / "cat").rename(other / split / "tmp")
        (other / split / "dog").rename(other / split / "cat")
        (other / split / "tmp").rename(other / split / "dog")
    msg = _difference(recorded, dataset_manifest(_folder(other)))
    assert "split 'train'" in msg and "split 'test'" in msg


def test_file_digests_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    from localssl.data import manifest as manifest_module

    root = _bmp_folder(tmp_path / "mine")
    first = dataset_manifest(_folder(root))
    read: list[Path] = []
    digest = manifest_module._digest_file
    monkeypatch.setattr(manifest_module, "_digest_file", lambda p: read.append(p) or digest(p))
    assert dataset_manifest(_folder(root)) == first and read == []  # an unchanged folder: no image read again
    changed = root / "train" / "dog" / "1.bmp"
    _bmp(changed, 7)
    os.utime(changed, ns=(1, 1))
    assert dataset_manifest(_folder(root)) != first
    assert read == [changed]  # only the changed file
    for cache in (tmp_path / "cache" / "file-digests-v1").glob("*.json"):
        cache.write_text("{not json")  # a broken cache costs a re-hash, never a wrong answer
    read.clear()
    again = dataset_manifest(_folder(root))
    assert again == dataset_manifest(_folder(root)) and len(read) == 6  # every file hashed again, once


def _changed_pixel_or_label(name: str, tmp_path: Path, change: str) -> tuple[DataConfig, Path]:
    """A small copy of source ``name``, and the same data with one pixel (or one label) changed, same sizes."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        root = write_cifar_pickles(tmp_path / name, n_train=10, n_test=4)
        batch = root / "cifar-10-batches-py" / "data_batch_1"
        content = pickle.loads(batch.read_bytes())
        if change == "pixel":
            content[b"data"][0, 0] ^= 1
        else:
            content[b"labels"][0] = (int(content[b"labels"][0]) + 1) % 10
        other = tmp_path / f"{name}-other"
        shutil.copytree(root, other)
        (other / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(content))
        return DataConfig(name=name, root=str(root)), other
    if name == "mnist":
        raw = tmp_path / name / "MNIST" / "raw"
        raw.mkdir(parents=True)
        images = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in (("train", 5), ("t10k", 3))}
        labels = {p: rng.integers(0, 9, len(images[p])).astype(np.uint8) for p in images}
        for prefix in images:
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images[prefix], gz=False)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[prefix], gz=False)
        other = tmp_path / f"{name}-other"
        shutil.copytree(tmp_path / name, other)
        if change == "pixel":
            images["train"][0, 0, 0] ^= 1
            write_idx(other / "MNIST" / "raw" / "train-images-idx3-ubyte", images["train"], gz=False)
        else:
            labels["train"][0] += 1
            write_idx(other / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels["train"], gz=False)
        return DataConfig(name=name, root=str(tmp_path / name)), other
    root = _bmp_folder(tmp_path / name)
    other = tmp_path / f"{name}-other"
    shutil.copytree(root, other)
    if change == "pixel":
        _bmp(other / "train" / "cat" / "0.bmp", 201)
    else:  # one image moved to the other class (same names: dog/0.bmp exists, so cat/0.bmp becomes dog/2.bmp)
        (other / "train" / "cat" / "1.bmp").rename(other / "train" / "dog" / "1x.bmp")
        (other / "train" / "dog" / "0.bmp").rename(other / "train" / "cat" / "1.bmp")
        (other / "train" / "dog" / "1x.bmp").rename(other / "train" / "dog" / "0.bmp")
    return _folder(root), other


@pytest.mark.parametrize("change", ["pixel", "label"])
@pytest.mark.parametrize("name", ["folder", "cifar10", "mnist"])
def test_every_source_refuses_other_pixels_or_labels_of_the_same_size(tmp_path, name, change):
    """The class: for each source, a copy whose files keep their names and sizes but hold one other pixel or
    one other label is other data."""
    cfg, other = _changed_pixel_or_label(name, tmp_path, change)
    recorded = dataset_manifest(cfg)
    copy = tmp_path / f"{name}-copy"
    shutil.copytree(cfg.root, copy)
    check_manifest(recorded, dataset_manifest(DataConfig(name=cfg.name, root=str(copy))), "run runs/x")  # a copy
    msg = _difference(recorded, dataset_manifest(DataConfig(name=cfg.name, root=str(other))))
    assert "split 'train': the same number of images" in msg
