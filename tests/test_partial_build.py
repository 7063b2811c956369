"""Building only some layers (:mod:`localssl.partial_build`), as a layer-parallel stage does.

Oracle: the whole build of the same config and seed. The layers a stage builds hold the whole build's tensors
bitwise and the global generator ends where the whole build leaves it (so everything drawn afterwards is the
same too); the other layers are ``meta`` tensors from the moment they are constructed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.partial_build import build_layer, only_layers, real_numel
from localssl.registry import OBJECTIVES


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return module.state_dict()


@pytest.mark.parametrize("preset", ["clapp++", "clapp++nospatial", "scff", "lpl", "ff", "clapp2021", "hinge-cpc"])
def test_a_stage_builds_its_layers_with_the_whole_builds_weights(preset, monkeypatch):
    cfg = load_config(preset, ["model.width=0.125"])
    whole = build(cfg)
    after_whole = torch.get_rng_state()
    n = len(whole.encoder)
    built_on: dict[int, str] = {}  # objective of layer i (0-based): the device it was constructed on
    entry = OBJECTIVES.get(cfg.objective.name)

    def spy(objective_cfg, target, refs):
        obj = original(objective_cfg, target, refs)
        built_on[target.index] = next(obj.parameters()).device.type if list(obj.parameters()) else "none"  # at once
        return obj

    original = entry.builder
    monkeypatch.setitem(OBJECTIVES._entries, entry.name, dataclasses.replace(entry, builder=spy))
    for own in (range(0, 2), range(2, n)):
        built_on.clear()
        with only_layers(own):
            part = build(cfg)
        assert torch.equal(torch.get_rng_state(), after_whole), "the generator did not end where the whole build's did"
        for mine, ref in ((part.encoder, whole.encoder), (part.rule, whole.rule)):
            ref_state = _state(ref)
            for k, v in _state(mine).items():
                if v.device.type != "meta":
                    assert torch.equal(v, ref_state[k]), k
        for i, layer in enumerate(part.encoder.layers):
            assert (real_numel(layer) > 0) == (i in own), (i, own)
        for i, device in built_on.items():
            assert device in (("cpu", "none") if i in own else ("meta", "none")), (i, own, device)
        assert real_numel(part.encoder) + real_numel(part.rule) > 0


def test_a_builder_that_cannot_run_on_meta_is_built_then_freed_with_the_same_draws():
    def reads_a_value() -> torch.nn.Linear:
        layer = torch.nn.Linear(8, 8)
        float(layer.weight.detach().sum())  # cannot run on meta
        return layer

    torch.manual_seed(0)
    first = torch.nn.Linear(8, 8).weight.detach().clone()
    reads_a_value()
    then = torch.rand(3)
    torch.manual_seed(0)
    with only_layers([0]):
        kept = build_layer(0, lambda: torch.nn.Linear(8, 8))
        skipped = build_layer(1, reads_a_value)
    assert torch.equal(kept.weight, first) and skipped.weight.device.type == "meta"
    assert torch.equal(torch.rand(3), then)
