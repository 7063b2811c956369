"""``rule.recompute_chunks``: the same gradients as plain streaming, with one chunk's graph alive at a time."""

from __future__ import annotations

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.memory import SavedTensorMeter
from localssl.registry import ConfigError

SMALL = ["model.width=0.0625", "train.device=cpu", "rule.streaming=true"]


def _step(preset: str, chunks: int):
    comp = build(load_config(preset, [*SMALL, f"rule.recompute_chunks={chunks}"]))
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    views = comp.views(torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8))
    params = list(comp.rule.parameters_to_train(comp.encoder))
    with SavedTensorMeter(params) as saved:
        metrics = comp.rule.step(comp.encoder, views)
    return [p.grad.clone() for p in params], metrics, saved.peak_bytes


@pytest.mark.parametrize("preset", ["clapp++", "clapp++dfb", "clapp++both"])
def test_recompute_in_chunks_gives_the_streaming_gradients(preset):
    """The chunked pass recomputes exactly the activations of the no-grad pass, so dL/dW is the sum
    over chunks of the same per-sample terms: equal up to float summation order."""
    ref, ref_metrics, ref_saved = _step(preset, 1)
    got, metrics, saved = _step(preset, 4)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for key in ref_metrics:
        torch.testing.assert_close(metrics[key], ref_metrics[key])
    assert saved < 0.5 * ref_saved  # a quarter of the batch's graph of one layer (+ small objective tensors)


def test_recompute_needs_streaming():
    with pytest.raises(ConfigError, match="rule.streaming=true"):
        build(load_config("clapp++dfb", ["model.width=0.0625", "rule.recompute_chunks=2"]))
    with pytest.raises(ConfigError, match="recompute_chunks"):
        load_config("clapp++", ["rule.recompute_chunks=0"])
