"""Numbers no run can use are refused by the config layer, naming the key, before any run directory exists."""

from __future__ import annotations

import pytest

from localssl.config import load_config
from localssl.registry import ConfigError
from localssl.train import pretrain


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.batch_size=0", "train.batch_size"),
        ("train.batch_size=-5", "train.batch_size"),
        ("train.epochs=-1", "train.epochs"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.lr=nan", "train.lr"),
        ("data.train_subset=0", "data.train_subset"),
        ("probe.batch_size=0", "probe.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
    ],
)
def test_invalid_numbers_are_named(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"{key}=.* is invalid: it must be"):
        load_config("clapp++", [override, f"out_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_valid_edges_are_accepted():
    cfg = load_config("random", ["train.epochs=0", "data.train_subset=1", "train.batch_size=1"])
    assert cfg.train.epochs == 0 and cfg.train.batch_size == 1


def test_missing_data_leaves_no_run_directory(tmp_path):
    cfg = load_config(
        "clapp++", ["data.name=stl10", f"data.root={tmp_path / 'nowhere'}", f"out_dir={tmp_path / 'runs'}"]
    )
    with pytest.raises(RuntimeError, match="stl10 not found"):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()
