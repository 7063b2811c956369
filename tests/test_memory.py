"""Memory meters: the allocator peak sees a known allocation; saved-tensor accounting is exact."""

from __future__ import annotations

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.memory import MB, AllocatorPeak, SavedTensorMeter, cpu_peak_supported, optimizer_state_bytes


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize("mb", [32, 96])
def test_cpu_allocator_peak_sees_a_transient_tensor(mb):
    with AllocatorPeak("cpu") as m:
        x = torch.ones(mb * MB // 4)  # written: its pages are resident
        del x
    assert abs(m.peak_bytes / MB - mb) < 0.1 * mb + 4


def test_saved_tensor_meter_counts_conv_relu_exactly_and_frees_after_backward():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 16, 16)
    with SavedTensorMeter(conv.parameters()) as m:
        y = torch.relu(conv(x))  # conv saves its input; relu saves its output; weights excluded
        during = m.live_bytes
        y.sum().backward()
    assert during == x.numel() * 4 + y.numel() * 4
    assert m.peak_bytes == during and m.live_bytes == 0


def test_saved_tensor_meter_counts_a_shared_storage_once():
    a = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter() as m:
        b = a * 2
        c = b * b  # b saved twice (both operands): one storage
        during = m.live_bytes
        c.sum().backward()
    assert during == 1000 * 4


def _saved_peak(preset: str, streaming: bool) -> int:
    comp = build(load_config(preset, ["model.width=0.0625", "train.device=cpu", f"rule.streaming={streaming}"]))
    g = torch.Generator().manual_seed(0)
    views = comp.views(torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8))
    params = list(comp.rule.parameters_to_train(comp.encoder))
    with SavedTensorMeter(params) as m:
        comp.rule.step(comp.encoder, views)
    assert m.live_bytes == 0  # every graph was freed
    return m.peak_bytes


def test_streaming_keeps_one_layers_activations_instead_of_all():
    """Summed loss: every layer's saved tensors are alive at once (the sum); streaming: one layer's
    (the largest). VGG-6 at 32 px: layer 2 holds about half of the total."""
    streamed, summed = _saved_peak("clapp++", True), _saved_peak("clapp++", False)
    assert streamed < 0.7 * summed, (streamed, summed)
    # DFB streaming pays a no-grad forward (saves nothing) and then streams like 'same'
    assert abs(_saved_peak("clapp++dfb", True) - streamed) < 0.05 * streamed


def test_optimizer_state_bytes_of_adamw_are_two_moments():
    p = torch.nn.Parameter(torch.randn(1000))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones_like(p)
    opt.step()
    assert optimizer_state_bytes([opt]) == 2 * 1000 * 4 + 4  # exp_avg, exp_avg_sq, scalar step
