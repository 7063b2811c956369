"""Every CLAPP 2021 / CPC / GIM preset trains: its loss on a fixed CIFAR-10 batch (fixed views and
negatives) goes down under the preset's own rule. Whether the learned features beat random init at a
CPU budget is measured by ``localssl reproduce patch-cifar10`` (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.data import load_split

SMALL = ["data.name=cifar10-mini", "views.crop_size=32", "views.resize=null", "objective.steps=1", "model.width=0.0625"]


@pytest.mark.parametrize("preset", ["clapp2021", "clapp2021-asym", "hinge-cpc", "cpc", "gim"])
def test_preset_loss_decreases(preset: str) -> None:
    comp = build(load_config(preset, SMALL))
    params = list(comp.rule.parameters_to_train(comp.encoder))
    opt = torch.optim.Adam(params, lr=3e-3)
    data = load_split("cifar10-mini", "train")
    images, labels = data.images[:32], data.labels[:32]

    def loss_at_fixed_draws(train: bool) -> float:
        torch.manual_seed(0)  # same crops, flips, negatives and pos/neg choices every time
        opt.zero_grad()
        metrics = comp.rule.step(comp.encoder, comp.views(images, labels))
        if train:
            opt.step()
        return sum(float(v) for k, v in metrics.items() if k.startswith("loss"))

    before = loss_at_fixed_draws(train=False)
    for _ in range(12):
        loss_at_fixed_draws(train=True)
    after = loss_at_fixed_draws(train=False)
    assert after < before - 0.02 * abs(before), (before, after)
