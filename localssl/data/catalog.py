"""What the library knows about each dataset: reader, shape, splits and the paper's settings.

``pool_kernels`` are CLAPP++ Table A2 (per VGG-6 layer, applied after the layer's max-pool); MNIST's,
which no paper gives, follow Table A2's rule (:func:`~localssl.data.user_folder.vgg6_pool_kernels`);
``crop_scale``/``blur`` are the SimCLR view settings of the official CLAPP++ code; ``weight_decay``
is the paper's AdamW value.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from localssl.data import espeak
from localssl.data.base import DatasetError, ImageData, cached_decode
from localssl.data.folder import read_image_folder
from localssl.data.readers import read_cifar10, read_mnist, read_stl10, read_tinyimagenet
from localssl.data.sequence import SequenceData
from localssl.data.speech import read_librispeech, read_synthetic_speech
from localssl.data.user_folder import (
    LAYOUT,
    check_root,
    folder_classes,
    folder_pretrain_split,
    read_folder_split,
    train_stats,
    vgg6_pool_kernels,
)

ASSETS = Path(__file__).resolve().parent / "assets"


def read_cifar10_mini(root: Path, split: str) -> ImageData:
    """The CIFAR-10 subset shipped with the package (4000 train / 1000 test JPEGs, 10 classes
    balanced, drawn with seed 0 from the CIFAR-10 JPEG copy); ``root`` is ignored."""
    if split not in ("train", "test"):
        raise DatasetError(f"cifar10-mini has splits 'train' and 'test', not '{split}'")
    source = ASSETS / "cifar10-mini.zip"
    return cached_decode(source, split, lambda: read_image_folder(source, split, size=32))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    reader: Callable[[Path, str], ImageData | SequenceData]
    image_size: int
    channels: int
    num_classes: int
    pretrain_split: str  # split(s) used for self-supervised pretraining, '+'-joined
    probe_train_split: str
    test_split: str
    pool_kernels: tuple[int, ...]  # VGG-6 per-layer AvgPool kernels (CLAPP++ Table A2)
    crop_scale: tuple[float, float]
    blur: bool
    weight_decay: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    urls: tuple[str, ...]
    kind: str = "image"  # image (ImageData) | sequence (SequenceData: audio with frame labels)
    # (root, split) -> {"images", "fingerprint"} from files the data set ships with its own hashes (a run's
    # dataset.json then reuses them instead of hashing the decoded arrays); None: hash the arrays
    fingerprint: Callable[[Path, str], dict] | None = None


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10",
        read_cifar10,
        32,
        3,
        10,
        "train",
        "train",
        "test",
        (4, 4, 4, 2, 2, 1),
        (0.25, 1.0),
        True,
        0.0,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    ),
    "cifar10-mini": DatasetInfo(
        "cifar10-mini",
        read_cifar10_mini,
        32,
        3,
        10,
        "train",
        "train",
        "test",
        (4, 4, 4, 2, 2, 1),
        (0.25, 1.0),
        True,
        0.0,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        (),
    ),
    "stl10": DatasetInfo(
        "stl10",
        read_stl10,
        96,
        3,
        10,
        "unlabeled",  # pretraining on the unlabeled split only: CLAPP++ App. B and both official codes
        "train",
        "test",
        (12, 12, 12, 6, 6, 3),
        (0.08, 1.0),
        True,
        0.0,
        (0.4313, 0.4156, 0.3663),  # the official codes' values (train+unlabeled), zihan-wu/local-SSL and
        (0.2683, 0.2610, 0.2687),  # EPFL-LCN/pub-illing2021-neurips (labelled train: 0.4467/0.4398/0.4066)
        ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
    ),
    "tinyimagenet": DatasetInfo(
        "tinyimagenet",
        read_tinyimagenet,
        64,
        3,
        200,
        "train",
        "train",
        "test",
        (8, 8, 8, 4, 4, 2),
        (0.08, 1.0),
        True,
        1e-5,
        (0.4802, 0.4481, 0.3975),
        (0.2302, 0.2265, 0.2262),
        ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
    ),
    "mnist": DatasetInfo(
        "mnist",
        read_mnist,
        28,
        1,
        10,
        "train",
        "train",
        "test",
        vgg6_pool_kernels(28),  # no paper gives MNIST kernels: Table A2's rule, each dividing its layer (4-7-7-7-3-1)
        (0.25, 1.0),
        False,
        0.0,
        (0.1307,),
        (0.3081,),
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        ),
    ),
    # Audio: image_size is the training window in samples (GIM: 20480 = 1.28 s), mean/std the waveform's
    # (GIM's constants for int32 samples, here in units of full scale).
    "librispeech": DatasetInfo(
        "librispeech",
        read_librispeech,
        20480,
        1,
        41,
        "train",
        "train",
        "test",
        (),
        (1.0, 1.0),
        False,
        0.0,
        (-1456218.75 / 2**31,),
        (135303504.0 / 2**31,),
        ("http://www.openslr.org/resources/12/train-clean-100.tar.gz",),
        kind="sequence",
    ),
    "synthetic-speech": DatasetInfo(
        "synthetic-speech",
        read_synthetic_speech,
        10240,
        1,
        8,
        "train",
        "train",
        "test",
        (),
        (1.0, 1.0),
        False,
        0.0,
        (0.0,),
        (0.1,),
        (),
        kind="sequence",
    ),
}


def _espeak_info(scale: str) -> DatasetInfo:
    """``espeak-SCALE``: the eSpeak NG corpus (:mod:`localssl.data.espeak`; ``localssl data make espeak-SCALE``),
    39 folded TIMIT classes per 10 ms, GIM's 1.28 s training window, waveforms at -26..-16 dBFS."""
    return DatasetInfo(
        f"espeak-{scale}",
        functools.partial(espeak.read_espeak, scale=scale),
        20480,
        1,
        len(espeak.PHONES),
        "train",
        "train",
        "test",
        (),
        (1.0, 1.0),
        False,
        0.0,
        (0.0,),
        (0.1,),
        (),
        kind="sequence",
        fingerprint=functools.partial(espeak.corpus_fingerprint, scale=scale),
    )


DATASETS.update({f"espeak-{scale}": _espeak_info(scale) for scale in espeak.SCALES})

FOLDER = "folder"  # your own images (data.name=folder data.root=DIR): settings from the files, see data_info


class DataOptions(Protocol):
    """The ``data`` section of a run config (:class:`localssl.config.DataConfig`) as seen here."""

    name: str
    root: str | None
    image_size: int | None
    mean: Sequence[float] | None
    std: Sequence[float] | None


def dataset_info(name: str) -> DatasetInfo:
    if name == FOLDER:
        raise DatasetError(
            "data.name=folder reads your own images from data.root (nothing to download); its settings come "
            "from the files: use localssl.data.data_info(cfg.data)"
        )
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset '{name}'; known datasets: {', '.join(sorted(DATASETS))}, "
            f"or {FOLDER} for your own images ({LAYOUT})"
        )
    return DATASETS[name]


def data_info(data: DataOptions) -> DatasetInfo:
    """The settings of a run's dataset: the catalog's for a named dataset, else (``data.name=folder``)
    from the images under ``data.root``:

    - classes: the sorted class folders of ``train/`` (``test/`` must have the same ones);
    - image size: the images' common square size, or ``data.image_size`` (then every image is resized);
    - normalisation: per-channel mean and std of the train images in [0, 1], or ``data.mean``/``data.std``;
    - pretraining split: ``unlabeled+train`` when ``unlabeled/`` exists, else ``train`` (as STL-10's);
    - VGG-6 pool kernels: :func:`~localssl.data.user_folder.vgg6_pool_kernels` (Table A2's rule);
    - crop scale (0.25, 1) up to 32 px (CIFAR-10's), else (0.08, 1); blur on; weight decay 0 (the paper's).
    """
    if data.name != FOLDER:
        return dataset_info(data.name)
    root = check_root(data.root)
    classes = folder_classes(root)
    size, mean, std = data.image_size, data.mean, data.std
    if size is None or mean is None or std is None:
        size, train_mean, train_std = train_stats(root, data.image_size)
        mean = train_mean if mean is None else mean
        std = train_std if std is None else std
    return DatasetInfo(
        FOLDER,
        functools.partial(read_folder_split, image_size=data.image_size, expect=size),
        size,
        3,
        len(classes),
        folder_pretrain_split(root),
        "train",
        "test",
        vgg6_pool_kernels(size),
        (0.25, 1.0) if size <= 32 else (0.08, 1.0),
        True,
        0.0,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        (),
    )


def load_split(
    name: str, split: str, root: str | Path | None = None, info: DatasetInfo | None = None
) -> ImageData | SequenceData:
    """Load ``split`` (``'train'``, ``'test'``, ``'unlabeled'``, or ``'a+b'``) of dataset ``name``
    (``info``: the dataset's settings, needed for ``folder``: ``data_info(cfg.data)``)."""
    from localssl.config import default_data_root

    info = info if info is not None else dataset_info(name)
    root_path = Path(root).expanduser() if root else default_data_root()
    parts = [info.reader(root_path, s) for s in split.split("+")]
    return parts[0] if len(parts) == 1 else type(parts[0]).concat(parts)
