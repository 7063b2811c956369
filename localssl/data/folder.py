"""Image-folder layout, as a directory or a zip: ``<split>/<class>/<image>``.

This is the layout of ``cifar10-jpeg.zip`` (``train/<class>/NNNN.jpg``) and of torchvision's
``ImageFolder``. Class folders are sorted alphabetically to give label indices (for CIFAR-10 the
alphabetical order is the official one). Each image is decoded only by the decoder its suffix names
(:func:`localssl.data.images.read_image`).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from localssl.data.base import DatasetError, ImageData
from localssl.data.images import image_format, read_image


def read_image_folder(source: Path, split: str, size: int | None = None, channels: int = 3) -> ImageData:
    """Read ``split/<class>/*`` from a directory or a ``.zip`` into one uint8 tensor. Hidden names are
    skipped; any other file that is not an image (by suffix) is an error naming it."""
    entries: list[tuple[str, str]] = []  # (class, member path)
    if source.suffix == ".zip":
        try:
            zf = zipfile.ZipFile(source)
        except zipfile.BadZipFile as err:
            raise DatasetError(f"{source} is not a valid zip file ({err}); download it again") from err
        with zf:
            for name in zf.namelist():
                parts = name.split("/")
                if len(parts) == 3 and parts[0] == split and parts[2] and not parts[2].startswith("."):
                    image_format(f"{source}:{name}")
                    entries.append((parts[1], name))
            if not entries:
                raise DatasetError(f"{source} holds no images under '{split}/<class>/'")
            return _assemble(entries, lambda m: zf.read(m), size, channels, f"{source}:{split}", f"{source}:")
    root = source / split
    if not root.is_dir():
        raise DatasetError(f"{root} does not exist (expected '{split}/<class>/<image>' under {source})")
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for img in class_dir.iterdir():
            if not img.name.startswith("."):
                image_format(str(img))
                entries.append((class_dir.name, str(img)))
    if not entries:
        raise DatasetError(f"{root} holds no images in class folders")
    return _assemble(entries, lambda m: Path(m).read_bytes(), size, channels, str(root), "")


SAY_DECODE_FROM = 2000  # images: a decode this long (CIFAR-10's 50 000 take 10-60 s) is said, not silent


def _assemble(entries, read, size, channels, where, prefix) -> ImageData:
    """Decode ``(class, member)`` entries (``prefix + member`` names a file in messages) into one ImageData.
    A long decode says so in one line on stderr (and shows a progress bar on a terminal)."""
    entries.sort()
    classes = sorted({c for c, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    arrays, labels = [], []
    long = len(entries) >= SAY_DECODE_FROM
    if long:
        print(f"decoding {len(entries)} images of {where} (once: kept decoded for later runs)", file=sys.stderr)
    for cls, member in tqdm(entries, desc="decoding", unit="img", file=sys.stderr, disable=None if long else True):
        try:
            arrays.append(read_image(read(member), prefix + member, size, channels))
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f"cannot decode {prefix}{member}: {err}; the file is corrupt, download again") from err
        labels.append(index[cls])
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"images under {where} have different sizes {sorted(shapes)[:3]}; pass a size to resize")
    return ImageData(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64), classes)
