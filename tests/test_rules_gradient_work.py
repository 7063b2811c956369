"""Throughput by construction: which gradients a rule's backward really computes (inspected per op).

A dispatch mode records every ``convolution_backward`` (its ``output_mask`` says whether the input
gradient is computed) and every matrix product run during backward (grad mode off)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from localssl.build import build
from localssl.config import load_config

SMALL = ["model.width=0.0625", "train.device=cpu"]


class BackwardOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.conv_masks: dict[tuple[int, ...], list[list[bool]]] = {}
        self.backward_mm_shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution_backward.default:
            self.conv_masks.setdefault(tuple(args[2].shape), []).append(list(args[-1]))
        elif func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.mm.out) and not (
            torch.is_grad_enabled()
        ):  # mm.out: a dense B's gradient into its kept buffer (objectives/kept.py)
            self.backward_mm_shapes.append(tuple(out.shape))
        return out


def _run(preset: str, *extra: str):
    comp = build(load_config(preset, [*SMALL, *extra]))
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    views = comp.views(imgs, torch.zeros(4, dtype=torch.long))
    with BackwardOps() as ops:
        comp.rule.step(comp.encoder, views)
    weights = [tuple(layer[0].weight.shape) for layer in comp.encoder.layers]
    return comp, ops, weights


@pytest.mark.parametrize("preset", ["clapp++", "clapp++dfb", "clapp++both"])
@pytest.mark.parametrize("streaming", [True, False])
def test_local_rules_compute_no_input_gradient_anywhere(preset, streaming):
    _, ops, weights = _run(preset, f"rule.streaming={streaming}")
    for w in weights:
        assert ops.conv_masks[w] == [[False, True, True]], f"layer with weight {w}: {ops.conv_masks[w]}"


def test_backprop_computes_no_input_gradient_for_layer_one_only():
    _, ops, weights = _run("bp-clapp++")
    assert ops.conv_masks[weights[0]] == [[False, True, True]]
    for w in weights[1:]:
        assert ops.conv_masks[w] == [[True, True, True]]


def test_trainable_B_gets_exactly_its_weight_gradient_and_fixed_B_none():
    comp, ops, _ = _run("clapp++")
    b_shapes = [tuple(o.B[0].matrix().shape) for o in comp.rule.objectives.values()]
    assert sorted(ops.backward_mm_shapes) == sorted(b_shapes)  # dB only: the reference is detached, no dr
    comp, ops, _ = _run("clapp++", "objective.B=fixed")
    assert ops.backward_mm_shapes == []  # a frozen B does no weight-gradient (nor any other) matmul
    assert all(p.grad is None for o in comp.rule.objectives.values() for p in o.parameters())
