"""Your own data (issue 17 item 4): ``data.name=folder data.root=DIR`` on generated PNG folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from localssl.cli import main
from localssl.config import load_config
from localssl.data import DATASETS, DatasetError, data_info, load_split
from localssl.data.user_folder import vgg6_pool_kernels
from localssl.evaluate import probe as probe_module
from localssl.registry import ConfigError
from localssl.train import load_pretrain_data, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("circle", "square", "stripe")
ONLINE = ["train.online_probe=true", "train.online_probe_holdout=3"]
TINY = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu", "train.progress=false"]


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def make_folder(root: Path, n_train: int = 4, n_test: int = 2, n_unlabeled: int = 0, size: int = 16) -> Path:
    """3 classes of random ``size``-px RGB images; class k has channel k saturated."""
    rng = np.random.default_rng(0)

    def image(k: int) -> np.ndarray:
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if k >= 0:
            a[:, :, k] = 255
        return a

    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(CLASSES):
            for i in range(n):
                _png(root / split / name / f"{i}.png", image(k))
    for i in range(n_unlabeled):  # directly in unlabeled/ and in a subfolder
        _png(root / "unlabeled" / ("" if i % 2 else "batch1") / f"u{i}.png", image(-1))
    return root


def _tensors(state, prefix=""):
    """(dotted key, tensor) of every tensor in a nested state dict."""
    for k, v in state.items():
        if isinstance(v, dict):
            yield from _tensors(v, f"{prefix}{k}.")
        elif isinstance(v, torch.Tensor):
            yield f"{prefix}{k}", v


def _data(root: Path, *extra: str):
    return load_config("clapp++", ["data.name=folder", f"data.root={root}", *extra]).data


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))


def test_pretrain_and_probe_end_to_end(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "mine", n_unlabeled=4)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        "clapp++",
        [*TINY, "data.name=folder", "data.root=mine", f"out_dir={tmp_path / 'runs'}", "train.epochs=1", *ONLINE],
    )
    cfg.train.max_steps_per_epoch = 2
    assert len(load_pretrain_data(cfg)) == 4 + 3 * 4  # auto: unlabeled + train
    run = pretrain(cfg)
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["root"] == str(root.resolve())  # the probe finds the data from any working directory
    assert len(saved["mean"]) == len(saved["std"]) == 3  # the normalisation the encoder was trained with
    online = torch.load(run / "checkpoint.pt", weights_only=True)["online_probe"]
    heads = {k: v.shape[0] for k, v in _tensors(online) if k.endswith("weight")}
    assert heads and set(heads.values()) == {3}, heads  # online read-outs: the folder's 3 classes
    monkeypatch.chdir(run)
    heads = []
    real = probe_module.train_linear_probe
    monkeypatch.setattr(
        probe_module, "train_linear_probe", lambda fs, c, n, *a, **kw: heads.append(n) or real(fs, c, n, *a, **kw)
    )
    assert main(["probe", str(run), "probe.epochs=2", "probe.val_size=3"]) == 0
    result = json.loads((run / "probe.json").read_text())
    assert heads == [3]  # the folder's class count, not CIFAR's 10
    assert result["n_train"] + result["n_val"] == 12 and result["n_test"] == 6
    assert 0.0 <= result["test_acc_pct"] <= 100.0
    cached = ["probe.epochs=1", "probe.val_size=3", "probe.cache_features=true"]
    assert main(["probe", str(run), *cached]) == 0
    _png(root / "test" / "square" / "0.png", np.zeros((16, 16, 3), np.uint8))  # the data changes
    assert main(["probe", str(run), *cached]) == 2  # not the data the run recorded (dataset.json): refused
    assert "split 'test'" in capsys.readouterr().err
    (run / "dataset.json").unlink()  # the user's way to probe other data anyway (docs/usage.md)
    assert main(["probe", str(run), *cached]) == 0
    assert len(list(run.glob("features-*.pt"))) == 2  # features of the changed data, not the cached ones


def test_settings_come_from_the_data(tmp_path):
    root = make_folder(tmp_path / "mine")
    info = data_info(_data(root))
    train = load_split("folder", "train", root, info)
    x = train.images.numpy().astype(np.float64) / 255
    assert info.num_classes == 3 and train.classes == list(CLASSES) and info.image_size == 16
    assert info.pretrain_split == "train" and info.crop_scale == (0.25, 1.0)
    np.testing.assert_allclose(info.mean, x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(info.std, x.std(axis=(0, 2, 3)), atol=1e-6)
    given = data_info(_data(root, "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "data.image_size=24"))
    assert given.mean == (0.5,) * 3 and given.std == (0.25,) * 3 and given.image_size == 24
    assert load_split("folder", "test", root, given).images.shape == (6, 3, 24, 24)  # resized
    # Table A2's kernels (and MNIST's at 28 px) follow from the rule
    for name in ("cifar10", "stl10", "tinyimagenet", "mnist"):
        assert vgg6_pool_kernels(DATASETS[name].image_size) == DATASETS[name].pool_kernels, name
    assert info.pool_kernels == (2, 2, 2, 1, 1, 1)


def test_changed_and_added_images_are_read_again(tmp_path):
    root = make_folder(tmp_path / "mine")
    info = data_info(_data(root))
    before = load_split("folder", "train", root, info)
    edited = root / "train" / "circle" / "0.png"
    _png(edited, np.full((16, 16, 3), 7, np.uint8))
    os.utime(edited, ns=(1, 1))  # whatever the clock: a new mtime for the same path
    after = load_split("folder", "train", root, info)
    assert not before.images[0].eq(7).all() and after.images[0].eq(7).all()
    _png(root / "train" / "stripe" / "9.png", np.zeros((16, 16, 3), np.uint8))
    assert len(load_split("folder", "train", root, info)) == len(before) + 1


def test_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    load_split("folder", "train", root, data_info(_data(root)))  # cached
    (root / "train" / "square" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"square/1\.png is not a PNG file: its content is no image format"):
        data_info(_data(root))
    whole = (root / "train" / "square" / "0.png").read_bytes()
    (root / "train" / "square" / "1.png").write_bytes(whole[: len(whole) // 2])  # cut short
    with pytest.raises(DatasetError, match=r"square/1\.png as an image \(image file is truncated\)"):
        data_info(_data(root))
    (root / "train" / "square" / "1.png").unlink()
    (root / "test" / "square" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"notes\.txt is not an image"):
        load_split("folder", "test", root, data_info(_data(root)))


def test_empty_class_and_missing_split(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "train" / "zebra").mkdir()
    (root / "test" / "zebra").mkdir()
    with pytest.raises(DatasetError, match=r"train/zebra holds no images"):
        load_split("folder", "train", root, data_info(_data(root)))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(DatasetError, match=r"train holds no class folders"):
        data_info(_data(empty))
    with pytest.raises(DatasetError, match=r"test does not exist"):
        data_info(_data(make_folder(tmp_path / "no-test", n_test=0)))


def test_mismatched_class_sets(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "test" / "square").rename(root / "test" / "squares")
    with pytest.raises(DatasetError, match=r"only in train: \['square'\]; only in test: \['squares'\]"):
        data_info(_data(root))


def test_mixed_sizes_name_two_files_and_the_fix(tmp_path):
    root = make_folder(tmp_path / "mine")
    _png(root / "train" / "stripe" / "big.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"circle/0\.png is 16×16, .*stripe/big\.png is 20×20.*data\.image_size=N"):
        data_info(_data(root))
    assert data_info(_data(root, "data.image_size=16")).image_size == 16  # resized: fine
    (root / "train" / "stripe" / "big.png").unlink()
    for path in (root / "test").rglob("*.png"):  # test/ all 20 px, train/ 16 px
        _png(path, np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"train/circle/0\.png is 16×16, .*test/circle/0\.png is 20×20"):
        load_split("folder", "test", root, data_info(_data(root)))


def test_bad_options_fail_before_anything_is_read(tmp_path):
    with pytest.raises(ConfigError, match="data.name=folder only"):
        load_config("clapp++", ["data.image_size=16"])
    with pytest.raises(ConfigError, match="data.std must be > 0"):
        _data(tmp_path, "data.std=[0.2,0,0.2]")
    with pytest.raises(DatasetError, match="needs data.root=DIR"):
        data_info(load_config("clapp++", ["data.name=folder"]).data)
    with pytest.raises(DatasetError, match="is not a folder"):
        data_info(_data(tmp_path / "nowhere"))


def test_images_too_small_for_vgg6_fail_before_the_run_directory(tmp_path):
    root = make_folder(tmp_path / "mine", n_train=1, n_test=1, size=8)
    cfg = load_config("clapp++", [*TINY, "data.name=folder", f"data.root={root}", f"out_dir={tmp_path / 'runs'}"])
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(3, 8, 8\).*data\.image_size=N"):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()
    assert data_info(_data(root, "data.image_size=16")).pool_kernels == (2, 2, 2, 1, 1, 1)
