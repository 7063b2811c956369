"""Defaults work for every image size VGG-6 accepts (issue 25): folder data of 16..96 px, built with the
default settings, pooled and read out as the probe does.

Oracle: each layer's kernel divides its output side (no border dropped) and pools it to a grid no finer
than CLAPP++ Table A2's 8-4-4-4-2-2; the probe's feature width is the closed form sum of C·(side/k)².
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localssl.build import build
from localssl.config import load_config
from localssl.data import DATASETS, load_split
from localssl.data.user_folder import VGG6_GRID, vgg6_pool_kernels
from localssl.evaluate.features import FeatureExtractor
from localssl.views.simclr import Normalize

pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(root: Path, size: int) -> Path:
    rng = np.random.default_rng(size)
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                path = root / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return root


@pytest.mark.parametrize("size", [16, 28, 32, 40, 48, 64, 96])
def test_default_pooling_fits_every_size(tmp_path, monkeypatch, size):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "mine", size)
    cfg = load_config("clapp++", ["data.name=folder", f"data.root={root}", "model.width=0.0625", "train.device=cpu"])
    comp = build(cfg)  # the objectives pool each layer with the dataset's kernels: a kernel must divide the map
    info = comp.info
    shapes = comp.encoder.output_shapes((3, size, size))
    kernels = info.pool_kernels
    assert all(s[-1] % k == 0 and s[-1] // k <= g for s, k, g in zip(shapes, kernels, VGG6_GRID, strict=True))
    extractor = FeatureExtractor(comp.encoder, Normalize(info.mean, info.std), list(kernels), list(range(6)))
    train = load_split("folder", "train", root, info)
    features = extractor.extract(train.images)
    assert features.shape == (4, sum(c * (s // k) ** 2 for (c, s, _), k in zip(shapes, kernels)))


def test_rule_gives_table_a2_and_divides_mnist():
    for name in ("cifar10", "stl10", "tinyimagenet"):  # Table A2 (32, 96, 64 px)
        assert vgg6_pool_kernels(DATASETS[name].image_size) == DATASETS[name].pool_kernels
    assert DATASETS["mnist"].pool_kernels == vgg6_pool_kernels(28) == (4, 7, 7, 7, 3, 1)
    assert vgg6_pool_kernels(40) == (5, 5, 5, 5, 5, 1) and vgg6_pool_kernels(48) == (6, 6, 6, 3, 3, 3)
