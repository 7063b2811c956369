"""Patch-grid views (CPC/GIM/CLAPP 2021 vision) and the STL-10 code path on small generated files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.data import dataset_info
from localssl.evaluate.probe import probe
from localssl.registry import ConfigError
from localssl.train import pretrain
from localssl.views.patch_grid import PatchGridConfig, PatchGridViews, Patchify


def test_patches_tile_the_centre_crop() -> None:
    cfg = PatchGridConfig(crop_size=64, patch_size=16, patch_stride=8, mean=0.0, std=1.0)
    info = dataset_info("stl10")
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    patches = Patchify(cfg, info, train=False)(images)
    assert patches.shape == (2 * 49, 1, 16, 16)
    grey = (images.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    crop = grey[:, 16:80, 16:80]
    y, x = 3, 5
    torch.testing.assert_close(patches[1 * 49 + y * 7 + x, 0], crop[1, 8 * y : 8 * y + 16, 8 * x : 8 * x + 16])


def test_images_smaller_than_the_crop_are_refused_not_upscaled() -> None:
    """Views built for STL-10's 96 px given 32-px images: a clear error, not a crop box past the image (which
    some kornia versions resample into an upscale of the whole image, others refuse in their own words)."""
    cfg = PatchGridConfig(crop_size=64, patch_size=16, patch_stride=8, mean=0.0, std=1.0)
    for train in (True, False):
        with pytest.raises(ConfigError, match=r"\(32, 32\) px reached views built for 96-px images.*crop_size=64"):
            Patchify(cfg, dataset_info("stl10"), train=train)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_views_batch_and_encoder_input() -> None:
    cfg = load_config("clapp2021", ["data.name=cifar10", "model.width=0.0625"])
    views = PatchGridViews(cfg.views, dataset_info("cifar10"))
    vb = views(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8), torch.tensor([4, 5, 6]))
    assert vb.x.shape == (3 * 49, 1, 16, 16) and vb.grid == (7, 7)  # CIFAR-10 upsampled to 96, 64 px crop
    assert vb.labels.tolist() == [4] * 49 + [5] * 49 + [6] * 49
    comp = build(cfg)
    assert comp.encoder.layers[0][0].in_channels == 1  # grey patches
    assert comp.layers[-1].shape[1:] == (1, 1)  # 16 px patch after four 2×2 max-pools


def _write_stl10(root, n_unlabeled: int = 16, n_train: int = 20, n_test: int = 10) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("unlabeled", n_unlabeled), ("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # stored column-major
        if split != "unlabeled":
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")


def test_stl10_code_path(tmp_path) -> None:
    """clapp2021 on STL-10 in the official binary format: pretrain, resume, probe."""
    _write_stl10(tmp_path / "data")
    cfg = load_config(
        "clapp2021",
        [
            f"data.root={tmp_path / 'data'}",
            "model.width=0.03125",
            "train.epochs=1",
            "views.crop_size=32",
            "objective.steps=1",
            "train.batch_size=8",
            "train.progress=false",
            f"out_dir={tmp_path / 'runs'}",
            "probe.epochs=2",
        ],
    )
    assert cfg.data.name == "stl10"
    run = pretrain(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_images"] == 16 and summary["global_step"] == 2  # unlabeled only (the paper), batch 8
    result = probe(run)
    assert result["n_test"] == 10 and 0.0 <= result["test_acc_pct"] <= 100.0
    assert result["feature_dim"] == 32  # layer 6 of VGG-6 at width 1/32, averaged over the grid
