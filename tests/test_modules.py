"""Gradient-isolated modules (Greedy InfoMax; CLAPP 2021 Table 3): gradient flows inside a module and
stops between modules."""

from __future__ import annotations

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.registry import ConfigError
from localssl.rules.modules import module_sizes

TINY = ["data.name=cifar10-mini", "views.crop_size=32", "views.resize=null", "objective.steps=1", "model.width=0.0625"]


def test_module_sizes_table_3() -> None:
    assert module_sizes(1, 6) == [6]
    assert module_sizes(2, 6) == [3, 3]
    assert module_sizes(3, 6) == [2, 2, 2]
    assert module_sizes(6, 6) == [1] * 6
    assert module_sizes([3, 1, 1, 1], 6) == [3, 1, 1, 1]
    with pytest.raises(ConfigError, match=r"\[3,1,1,1\]"):
        module_sizes(4, 6)
    with pytest.raises(ConfigError, match="covers 5 layers"):
        module_sizes([2, 3], 6)


def _grads(splits: str, perturb: int | None = None) -> list[torch.Tensor]:
    comp = build(load_config("clapp2021", [*TINY, f"rule.splits={splits}", "objective.either_pos_or_neg=false"]))
    if perturb is not None:  # change the prediction map of the objective on layer `perturb`
        with torch.no_grad():
            for p in comp.rule.objectives[str(perturb)].parameters():
                p.mul_(-3.0)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    views = comp.views(images, torch.zeros(4, dtype=torch.long))
    comp.rule.step(comp.encoder, views)
    return [layer[0].weight.grad.clone() for layer in comp.encoder.layers]


def test_gradient_flows_inside_and_stops_between_modules() -> None:
    base = _grads("[3,1,1,1]")
    assert sorted(
        int(k) for k in build(load_config("clapp2021", [*TINY, "rule.splits=[3,1,1,1]"])).rule.objectives
    ) == [3, 4, 5, 6]
    assert all(g.abs().sum() > 0 for g in base)
    inside = _grads("[3,1,1,1]", perturb=3)  # the first module's objective reaches layers 1-3
    assert all(not torch.allclose(a, b) for a, b in zip(base[:3], inside[:3]))
    torch.testing.assert_close(base[3:], inside[3:])
    above = _grads("[3,1,1,1]", perturb=4)  # layer 4's objective reaches layer 4 only
    torch.testing.assert_close(base[:3], above[:3])
    assert not torch.allclose(base[3], above[3])
    torch.testing.assert_close(base[4:], above[4:])


def test_one_module_is_end_to_end() -> None:
    """splits=1 (CPC, hinge-loss CPC): one objective at the top, every layer reached by its gradient."""
    base, top = _grads("1"), _grads("1", perturb=6)
    assert all(not torch.allclose(a, b) for a, b in zip(base, top))
