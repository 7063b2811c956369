"""Your own images as a dataset: ``data.name=folder data.root=DIR``.

Layout::

    DIR/train/<class>/<image>    labelled images; class names = the sorted folder names
    DIR/test/<class>/<image>     the same class folders as train/
    DIR/unlabeled/...            optional: images directly in it or in subfolders (label -1)

Every file must be an image (hidden files and folders such as ``.DS_Store`` are skipped); anything else is
an error naming the file, so nothing is ever silently left out. Symbolic links are followed: a linked image
or folder of images is read like a real one; a broken link or a loop of links is an error naming it. Each
file is decoded only by the decoder its suffix names and converted to 8-bit RGB by the rules of
:mod:`localssl.data.images` (16-bit samples: the high byte; float in [0, 1]; transparency over black;
anything that cannot be converted faithfully is an error naming the file). Without ``image_size``
every image must share one square size; with it every image is resized to ``image_size × image_size``
(bilinear, aspect ratio not kept). Decoded splits are cached by :func:`~localssl.data.base.cached_decode`,
keyed by the manifest (path, size, mtime) of every file, so an added, changed or corrupt image is read
again. The folder's settings (class count, image size, normalisation, pool kernels) are assembled by
:func:`localssl.data.catalog.data_info`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from localssl.data.base import DatasetError, ImageData, cached_decode, manifest_key, walk_files
from localssl.data.images import image_format, read_image

SPLITS = ("train", "test", "unlabeled")
LAYOUT = "DIR/train/<class>/<image> and DIR/test/<class>/<image> (optional DIR/unlabeled/<image>)"


def _files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder`` (sorted, symbolic links followed); a file that is not an
    image (by suffix: :data:`~localssl.data.images.SUFFIX_FORMATS`) is an error."""
    files = walk_files(folder, skip_hidden=True)
    for path in files:
        image_format(str(path))
    return files


def check_root(root: Path | str | None) -> Path:
    if root is None:
        raise DatasetError(f"data.name=folder needs data.root=DIR, the folder that holds {LAYOUT}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root} is not a folder; data.name=folder expects {LAYOUT}")
    return root


def folder_manifest(root: Path | str | None) -> str:
    """Key of the manifest (path, size, mtime) of every file under the folder: caches derived from
    its images (the probe's features) use it so that a change of any image invalidates them."""
    return manifest_key(check_root(root), "folder")


def folder_pretrain_split(root: Path) -> str:
    """The default pretraining split: ``unlabeled+train`` when ``unlabeled/`` exists (as STL-10's), else ``train``."""
    return "unlabeled+train" if (root / "unlabeled").is_dir() else "train"


def folder_classes(root: Path) -> list[str]:
    """Class names (sorted folder names of ``train/``), checked against ``test/``: both split folders
    exist, hold only class folders, and name the same classes."""
    found = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"{folder} does not exist; data.name=folder expects {LAYOUT}")
        strays = sorted(p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith("."))
        if strays and not strays[0].exists():
            raise DatasetError(f"{strays[0]} is a broken symbolic link; restore its target or remove it")
        if strays:
            raise DatasetError(
                f"{strays[0]} lies directly in {folder}; every {split} image must be in a class folder "
                f"({folder}/<class>/<image>): move it into one"
            )
        found[split] = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found["train"]:
        raise DatasetError(f"{root / 'train'} holds no class folders; data.name=folder expects {LAYOUT}")
    if found["train"] != found["test"]:
        only_train = sorted(set(found["train"]) - set(found["test"]))
        only_test = sorted(set(found["test"]) - set(found["train"]))
        raise DatasetError(
            f"train/ and test/ under {root} hold different class folders (only in train: {only_train or 'none'}; "
            f"only in test: {only_test or 'none'}); give both splits the same class folders"
        )
    return found["train"]


def list_split(root: Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes and ``(image path, label)`` of ``split`` (label -1 for ``unlabeled``), with the
    layout checked: every class folder holds an image, an ``unlabeled/`` folder holds one."""
    if split not in SPLITS:
        raise DatasetError(f"data.name=folder has splits {', '.join(SPLITS)} (join them with '+'), not '{split}'")
    classes = folder_classes(root)
    if split == "unlabeled":
        folder = root / "unlabeled"
        if not folder.is_dir():
            raise DatasetError(
                f"{folder} does not exist; create it with your unlabeled images, or pretrain on the labelled "
                "images with data.pretrain_split=train"
            )
        files = [(p, -1) for p in _files(folder)]
        if not files:
            raise DatasetError(f"{folder} holds no images; add some, or remove the empty folder")
        return classes, files
    files = []
    for label, name in enumerate(classes):
        class_files = _files(root / split / name)
        if not class_files:
            raise DatasetError(
                f"class folder {root / split / name} holds no images; add images or remove the folder "
                "(from train/ and test/ both)"
            )
        files.extend((p, label) for p in class_files)
    return classes, files


def _decode_files(files: list[tuple[Path, int]], classes: list[str], image_size: int | None) -> ImageData:
    arrays, first = [], None
    for path, _ in files:
        try:
            arr = read_image(path, str(path), image_size)
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f"cannot read {path} as an image ({err}); replace or remove the file") from err
        if first is None:
            first = (path, arr.shape)
            if arr.shape[1] != arr.shape[2]:
                raise DatasetError(
                    f"{path} is {arr.shape[2]}×{arr.shape[1]} pixels, not square; pass data.image_size=N to resize "
                    "every image to N×N"
                )
        elif arr.shape != first[1]:
            raise DatasetError(
                f"images differ in size: {first[0]} is {first[1][2]}×{first[1][1]}, {path} is "
                f"{arr.shape[2]}×{arr.shape[1]}; pass data.image_size=N to resize every image to N×N"
            )
        arrays.append(arr)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageData(torch.from_numpy(np.stack(arrays)), labels, classes)


def read_folder_split(root: Path, split: str, image_size: int | None = None, expect: int | None = None) -> ImageData:
    """Read ``split`` of the folder at ``root`` (decoded once, then from the manifest-keyed cache).

    ``expect``: the image size of the train split; a split whose images have another size (without
    ``image_size``) is an error naming one image of each.
    """
    root = check_root(root)
    classes, files = list_split(root, split)
    tag = f"folder-{image_size}px" if image_size else "folder"
    data = cached_decode(root / split, tag, lambda: _decode_files(files, classes, image_size))
    if data.classes != classes or len(data) != len(files):  # a cache written for another listing
        data = _decode_files(files, classes, image_size)
    if expect is not None and data.images.shape[-1] != expect:
        _, train_files = list_split(root, "train")
        side = data.images.shape[-1]
        raise DatasetError(
            f"images differ in size: {train_files[0][0]} is {expect}×{expect}, {files[0][0]} is {side}×{side}; "
            "pass data.image_size=N to resize every image to N×N"
        )
    return data


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 ``images`` (N, C, H, W) in [0, 1],
    over every pixel of every image (how the CIFAR-10 constants are computed)."""
    s = torch.zeros(images.shape[1], dtype=torch.float64)
    ss = torch.zeros_like(s)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        ss += (x * x).sum(dim=(0, 2, 3))
    n = images.numel() / images.shape[1]
    mean = s / n
    std = (ss / n - mean * mean).clamp_min(0).sqrt()
    if (std == 0).any():
        raise DatasetError("the train images have a constant colour channel (std 0); set data.mean and data.std")
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


_STATS: dict[tuple, tuple[int, tuple[float, ...], tuple[float, ...]]] = {}


def train_stats(root: Path, image_size: int | None) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(image size, mean, std) of the train split, remembered per manifest for this process."""
    key = (str(root.resolve()), manifest_key(root / "train", "stats"), image_size)
    if key not in _STATS:
        train = read_folder_split(root, "train", image_size)
        _STATS[key] = (int(train.images.shape[-1]), *channel_stats(train.images))
    return _STATS[key]


VGG6_GRID = (8, 4, 4, 4, 2, 2)  # CLAPP++ Table A2: each layer's output pooled to this many cells a side


def vgg6_layer_sides(size: int) -> tuple[int, ...]:
    """Side of each VGG-6 layer's output (after its max-pool) for ``size``-pixel square images."""
    return (size, size // 2, size // 2, size // 4, size // 8, size // 16)


def vgg6_pool_kernels(size: int) -> tuple[int, ...]:
    """Per-layer AvgPool kernels of VGG-6 for ``size``-pixel images, each dividing its layer's output.

    CLAPP++ Table A2 uses ``S/8, S/8, S/8, S/16, S/16, S/32`` for S = 32, 64, 96 px (4-4-4-2-2-1,
    8-8-8-4-4-2, 12-12-12-6-6-3), i.e. each layer's output pooled to an 8-4-4-4-2-2 grid. For any size,
    each layer is pooled to the finest grid that is not finer than Table A2's and tiles its output
    exactly (the largest divisor of the side that is at most the paper's grid), so no border pixel is
    dropped and no layer gives more features than the paper's: Table A2's kernels at 32, 64 and 96 px,
    4-7-7-7-3-1 at 28 px, 5-5-5-5-5-1 at 40 px, 6-6-6-3-3-3 at 48 px, 2-2-2-1-1-1 at 16 px.
    """
    kernels = []
    for side, grid in zip(vgg6_layer_sides(size), VGG6_GRID):
        side = max(side, 1)
        cells = max(g for g in range(1, min(grid, side) + 1) if side % g == 0)
        kernels.append(side // cells)
    return tuple(kernels)
