from __future__ import annotations

import math

import pytest
import torch

from localssl.config import load_config, save_config
from localssl.schedule import check_schedule, learning_rate
from localssl.train import Trainer, resume

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false"]


def test_constant_is_the_base_rate():
    assert learning_rate("constant", 2e-4, 123, 1000) == 2e-4


def test_cosine_warmup_then_decay_at_chosen_steps():
    lr, total, warm, floor = 1e-3, 100, 10, 1e-5
    # warmup: linear, reaching lr at the last warmup step
    assert learning_rate("cosine", lr, 0, total, warm, floor) == pytest.approx(lr / 10)
    assert learning_rate("cosine", lr, 4, total, warm, floor) == pytest.approx(lr / 2)
    assert learning_rate("cosine", lr, 9, total, warm, floor) == pytest.approx(lr)
    # decay: lr at its start, the midpoint halfway between lr and min_lr, min_lr at the end
    assert learning_rate("cosine", lr, 10, total, warm, floor) == pytest.approx(lr)
    assert learning_rate("cosine", lr, 55, total, warm, floor) == pytest.approx((lr + floor) / 2)
    assert learning_rate("cosine", lr, 100, total, warm, floor) == pytest.approx(floor)
    s = 31
    expected = floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
    assert learning_rate("cosine", lr, s, total, warm, floor) == pytest.approx(expected)


def test_bad_schedule_is_named():
    with pytest.raises(ValueError, match="train.schedule must be one of constant, cosine"):
        check_schedule("linear", 0, 10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        check_schedule("cosine", 11, 10)
    with pytest.raises(ValueError, match="needs train.schedule=cosine"):
        check_schedule("constant", 1, 10)


def test_trainer_sets_the_scheduled_rate_and_resumes_exactly(cifar_root, tmp_path):
    over = [*TINY, f"data.root={cifar_root}", "train.epochs=2", "train.lr=1e-3"]
    over += ["train.schedule=cosine", "train.warmup_epochs=0.5", "train.min_lr=1e-5"]
    cfg = load_config("clapp++", over)
    (tmp_path / "full").mkdir()
    full = Trainer(cfg, tmp_path / "full")
    n = full.steps_per_epoch()
    full.global_step = 2
    full.apply_schedule(n)
    expected = learning_rate("cosine", 1e-3, 2, 2 * n, round(0.5 * n), 1e-5)
    assert full.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    full.global_step = 0
    full.fit()
    # the same run stopped after epoch 1 and resumed: the schedule depends on global_step only
    half_dir = tmp_path / "half"
    half_dir.mkdir()
    save_config(cfg, half_dir / "config.yaml")
    half = Trainer(cfg, half_dir)
    half.train_epoch()
    half.epoch += 1
    half.save_checkpoint()
    resume(half_dir)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(half_dir / "checkpoint.pt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 2 * n
    for name, tensor in a["encoder"].items():
        assert torch.equal(tensor, b["encoder"][name]), name
