from __future__ import annotations

import builtins

import pytest

from localssl.config import load_config
from localssl.registry import ConfigError
from localssl.train import pretrain

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


def test_missing_tensorboard_is_named_before_anything_is_written(cifar_root, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = load_config(
        "clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path / 'runs'}", "train.tensorboard=true"]
    )
    with pytest.raises(ConfigError, match=r"pip install 'localssl\[tensorboard\]'"):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()


def test_tensorboard_gets_the_logged_scalars(cifar_root, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.tensorboard=true", "train.log_every=2"]
    run = pretrain(load_config("clapp++", over))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss_l1", "step/lr", "epoch/loss_l1", "epoch/images_per_s"} <= tags
    assert [e.step for e in events.Scalars("step/loss_l1")] == [2, 4, 6, 7]
