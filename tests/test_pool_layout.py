"""The pooled layer losses hand their gradient back in channels_last (objectives/base.py, channels_last_grad).

A channels_last map flattened or averaged globally used to send its gradient back in NCHW order (or
expanded), so the pooling, max-pool and ReLU backward kernels ran on mixed layouts (5–7× slower on CPU).
Checked here: every backward kernel of a VGG layer under a pooled loss sees a channels_last gradient, and
the layer's weight gradient is bit for bit the one of the plain NCHW-gradient formulation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from localssl.objectives.base import SpatialPool

BACKWARD_KERNELS = ("avg_pool2d_backward", "max_pool2d_with_indices_backward", "threshold_backward")


class GradLayouts(TorchDispatchMode):
    """Records, for each backward kernel above, whether its incoming gradient was channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in BACKWARD_KERNELS:
            g = args[0]
            self.seen.append((name, g.is_contiguous(memory_format=torch.channels_last)))
        return func(*args, **(kwargs or {}))


def plain_pool(h: torch.Tensor, kernel: int | None) -> torch.Tensor:
    """The former formulation: its gradient comes back in NCHW order (or expanded)."""
    if kernel is None:
        return h.mean(dim=(2, 3))
    return (h if kernel == 1 else F.avg_pool2d(h, kernel, kernel)).flatten(1)


def layer_grads(pool, dtype: torch.dtype, record: GradLayouts | None = None) -> torch.Tensor:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(6, 4, 8, 8).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
        h = F.max_pool2d(F.relu(conv(x)), 2)
        loss = pool(h).float().square().sum()
    if record is None:
        loss.backward()
    else:
        with record:
            loss.backward()
    return conv.weight.grad


@pytest.mark.parametrize("kernel", [None, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_backward_kernel_sees_channels_last_and_the_gradient_is_unchanged(kernel, dtype):
    record = GradLayouts()
    new = layer_grads(SpatialPool(kernel), dtype, record)
    names = [n for n, _ in record.seen]
    assert "max_pool2d_with_indices_backward" in names and "threshold_backward" in names
    assert all(cl for _, cl in record.seen), record.seen
    old = layer_grads(lambda h: plain_pool(h, kernel), dtype)
    assert torch.equal(new, old)


@pytest.mark.parametrize("kernel", [None, 1, 2])
def test_the_former_formulation_mixed_layouts(kernel):
    """The check above can fail: the plain pools hand the next backward kernel an NCHW (or expanded) gradient."""
    record = GradLayouts()
    layer_grads(lambda h: plain_pool(h, kernel), torch.float32, record)
    assert not all(cl for _, cl in record.seen)
