"""Shared pieces of the *objective* axis: layer descriptions, spatial pooling, loss outputs.

An objective is built for one layer (its *target*) and the layers that give it references, and is
called as ``objective(h, refs, views)`` with the target activity ``h`` and one tensor per reference.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A layer as an objective sees it: index, output shape (without batch), dataset pool kernel.

    ``autoregressive`` marks CPC's context network g_ar (the GRU of the audio model): rules that know
    it (``modules``) give its loss the layer's output as the context and its input as the target."""

    index: int
    shape: tuple[int, ...]
    pool_kernel: int | None = None  # the dataset's CLAPP++ kernel for this layer (Table A2)
    input_shape: tuple[int, ...] | None = None  # shape of the layer's input (without batch)
    autoregressive: bool = False


@dataclasses.dataclass
class LossOut:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # detached scalars


class SpatialPool(nn.Module):
    """``AvgPool2d(k, stride=k)`` then flatten (CLAPP++ 2D spatial dependence), or global average.

    ``kernel=None`` means global average pooling ("no 2D spatial dependence"); 2-D inputs (MLPs)
    pass through unchanged; 3-D inputs (N, C, T) (1-D convnets, e.g. on the RHM) are pooled along T."""

    def __init__(self, kernel: int | None) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:
            return h
        if h.dim() == 3:
            if self.kernel is None:
                return h.mean(dim=2)
            return (h if self.kernel == 1 else F.avg_pool1d(h, self.kernel, self.kernel)).flatten(1)
        if h.dim() != 4:
            raise ValueError(f"SpatialPool expects (N, C, H, W), (N, C, T) or (N, D), got shape {tuple(h.shape)}")
        if self.kernel is None:
            return h.mean(dim=(2, 3))
        if self.kernel == 1:
            return h.flatten(1)
        return F.avg_pool2d(h, self.kernel, self.kernel).flatten(1)

    def out_dim(self, shape: tuple[int, ...]) -> int:
        if len(shape) == 1:
            return shape[0]
        if len(shape) == 2:
            c, length = shape
            if self.kernel is None:
                return c
            if length % self.kernel:
                raise ValueError(f"pool kernel {self.kernel} does not divide the length {length} of the feature map")
            return c * (length // self.kernel)
        c, hgt, wid = shape
        if self.kernel is None:
            return c
        if hgt % self.kernel or wid % self.kernel:
            raise ValueError(
                f"pool kernel {self.kernel} does not divide the {hgt}×{wid} feature map; "
                "pick objective.pooling=global or kernels that divide each layer's output"
            )
        return c * (hgt // self.kernel) * (wid // self.kernel)

    def extra_repr(self) -> str:
        return f"kernel={'global' if self.kernel is None else self.kernel}"


def resolve_pool_kernel(pooling: str | list[int], layer: LayerSpec) -> int | None:
    """``'paper'``: the dataset's kernel for the layer; ``'global'``: global average;
    ``'none'``: no pooling (kernel 1); a list: one kernel per layer (0 = global)."""
    if isinstance(pooling, (list, tuple)):
        k = int(pooling[layer.index])
        return None if k == 0 else k
    if pooling == "paper":
        return layer.pool_kernel
    if pooling == "global":
        return None
    if pooling == "none":
        return 1
    raise ValueError(f"objective.pooling must be 'paper', 'global', 'none' or a list of kernels, got {pooling!r}")
