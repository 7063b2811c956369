"""Readers for the official on-disk formats of CIFAR-10, MNIST, STL-10 and Tiny ImageNet.

Each reader takes the data root and a split and returns an :class:`ImageData` (uint8, NCHW). A
missing or corrupt file raises :class:`DatasetError` naming the path and the download command. Nothing
read executes code: CIFAR-10's pickles go through :mod:`localssl.data.cifar_pickle`'s restricted
unpickler, MNIST and STL-10 are raw bytes, images are decoded only by the decoder their suffix names
(:mod:`localssl.data.images`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from localssl.data.base import DatasetError, ImageData, cached_decode
from localssl.data.cifar_pickle import load_cifar_batch
from localssl.data.folder import read_image_folder
from localssl.data.images import read_image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _missing(name: str, root: Path, looked: list[Path]) -> DatasetError:
    where = ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in looked)
    return DatasetError(
        f"{name} not found under data root {root} (looked for {where}); "
        f"fix: `localssl data download {name} --root {root}` (prints the URL when offline), "
        f"or point data.root / $LOCALSSL_DATA at the folder that holds it"
    )


# --------------------------------------------------------------------------------------- CIFAR-10
def read_cifar10(root: Path, split: str) -> ImageData:
    """CIFAR-10 from ``cifar-10-batches-py/`` (official pickles) or an image folder/zip
    (``cifar10-jpeg.zip``, ``cifar10-jpeg/``, ``cifar10/`` with ``train/<class>/*.jpg``)."""
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR-10 has splits 'train' and 'test', not '{split}'")
    pickles = root / "cifar-10-batches-py"
    if pickles.is_dir():
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        images, labels = [], []
        for fname in files:
            path = pickles / fname
            if not path.is_file():
                raise _missing("cifar10", root, [path])
            batch_images, batch_labels = load_cifar_batch(path)
            images.append(batch_images)
            labels.extend(batch_labels)
        return ImageData(
            torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64), list(CIFAR10_CLASSES)
        )
    candidates = [root / "cifar10-jpeg.zip", root / "cifar10-jpeg", root / "cifar10"]
    for cand in candidates:
        if cand.exists():
            return cached_decode(cand, split, lambda c=cand: read_image_folder(c, split, size=32))
    raise _missing("cifar10", root, [pickles, *candidates])


# ------------------------------------------------------------------------------------------ MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path} is corrupt ({err}); download MNIST again") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number); download MNIST again")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated ({body.size} bytes for shape {dims}); download MNIST again")
    return body.reshape(dims)


def read_mnist(root: Path, split: str) -> ImageData:
    """MNIST IDX files (``.gz`` or plain) in ``MNIST/raw/``, ``MNIST/`` or the root itself."""
    if split not in ("train", "test"):
        raise DatasetError(f"MNIST has splits 'train' and 'test', not '{split}'")
    prefix = "train" if split == "train" else "t10k"
    looked = []
    for folder in (root / "MNIST" / "raw", root / "MNIST", root / "mnist", root):
        for suffix in (".gz", ""):
            img = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            lab = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
            looked.append(img)
            if img.exists() and lab.exists():
                images = _read_idx(img)
                labels = _read_idx(lab)
                if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                    raise DatasetError(f"{img}: shapes {images.shape} / {labels.shape} do not match")
                return ImageData(
                    torch.from_numpy(images.copy()).unsqueeze(1),
                    torch.from_numpy(labels.astype(np.int64)),
                    [str(i) for i in range(10)],
                )
    raise _missing("mnist", root, looked)


# ----------------------------------------------------------------------------------------- STL-10
def read_stl10(root: Path, split: str) -> ImageData:
    """STL-10 official binaries in ``stl10_binary/``: ``{train,test,unlabeled}_X.bin`` (uint8,
    column-major 3×96×96 per image) and ``{train,test}_y.bin`` (labels 1..10)."""
    if split not in ("train", "test", "unlabeled"):
        raise DatasetError(f"STL-10 has splits 'train', 'test', 'unlabeled', not '{split}'")
    folder = root / "stl10_binary"
    xpath = folder / f"{split}_X.bin"
    if not xpath.exists():
        raise _missing("stl10", root, [xpath])
    raw = np.fromfile(xpath, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DatasetError(f"{xpath} has {raw.size} bytes, not a multiple of 3*96*96; download STL-10 again")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major
    if split == "unlabeled":
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        ypath = folder / f"{split}_y.bin"
        if not ypath.exists():
            raise _missing("stl10", root, [ypath])
        labels = np.fromfile(ypath, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images) or labels.min() < 0 or labels.max() > 9:
            raise DatasetError(f"{ypath} does not match {xpath} (labels must be 1..10, one per image)")
    return ImageData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), list(STL10_CLASSES))


# ---------------------------------------------------------------------------------- Tiny ImageNet
def read_tinyimagenet(root: Path, split: str) -> ImageData:
    """Tiny ImageNet (``tiny-imagenet-200/``): ``train/<wnid>/images/*.JPEG`` and
    ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``. Split ``test`` is the labelled
    validation set (the official test set has no labels)."""
    if split not in ("train", "test", "val"):
        raise DatasetError(f"Tiny ImageNet has splits 'train' and 'test' (= official val), not '{split}'")
    base = root / "tiny-imagenet-200"
    wnids_path = base / "wnids.txt"
    if not wnids_path.exists():
        raise _missing("tinyimagenet", root, [wnids_path])
    wnids = sorted(w.strip() for w in wnids_path.read_text().split() if w.strip())
    index = {w: i for i, w in enumerate(wnids)}
    source = base / ("train" if split == "train" else "val")
    return cached_decode(source, split, lambda: _decode_tiny(base, split, index, wnids))


def _decode_tiny(base: Path, split: str, index: dict[str, int], wnids: list[str]) -> ImageData:
    files: list[tuple[Path, int]] = []
    if split == "train":
        for wnid in wnids:
            folder = base / "train" / wnid / "images"
            if not folder.is_dir():
                raise DatasetError(f"{folder} is missing; the Tiny ImageNet copy is incomplete, download again")
            files.extend((p, index[wnid]) for p in sorted(folder.glob("*.JPEG")))
    else:
        ann = base / "val" / "val_annotations.txt"
        if not ann.exists():
            raise DatasetError(f"{ann} is missing; the Tiny ImageNet copy is incomplete, download again")
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                files.append((base / "val" / "images" / parts[0], index[parts[1]]))
    arrays = []
    for path, _ in files:
        try:
            arrays.append(read_image(path, str(path), 64))
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f"cannot decode {path}: {err}; download Tiny ImageNet again") from err
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    return ImageData(torch.from_numpy(np.stack(arrays)), labels, wnids)
