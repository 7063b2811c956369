"""Shared pieces of the *objective* axis: the objective interface, layer descriptions, spatial pooling,
loss outputs.

An objective is built for one layer (its *target*) and the layers that give it references, and is
called as ``objective(h, refs, views)`` with the target activity ``h`` and one tensor per reference
(:class:`Objective`). What a rule or an evaluation may ask of an objective beyond that is declared here
too, each as a Protocol of its own: :class:`ReadoutObjective`, :class:`LabelsConfig`,
:class:`PoolingConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from localssl.views.base import ViewBatch


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


class Objective(Protocol):
    """What a rule calls on an objective: ``objective(h, refs, views) -> LossOut``.

    ``h`` is the target layer's activity (with its graph), ``refs`` one tensor per reference layer named
    at construction (the objective detaches them when no error may flow through them), ``views`` the
    :class:`ViewBatch` saying which rows pair with which. The registered builder is called as
    ``builder(cfg, target: LayerSpec, refs: list[LayerSpec])`` (:class:`ObjectiveBuilder`); make it an
    ``nn.Module`` so that its parameters (a trainable ``B``, a read-out) train and are checkpointed."""

    def __call__(self, h: torch.Tensor, refs: list[torch.Tensor], views: ViewBatch) -> LossOut: ...


class ObjectiveBuilder(Protocol):
    """What ``@OBJECTIVES.register(name, Config)`` registers: usually the objective's class."""

    def __call__(self, cfg: Any, target: LayerSpec, refs: list[LayerSpec]) -> Objective: ...


@runtime_checkable
class ReadoutObjective(Protocol):
    """Optional: an objective ending in a linear read-out of its pooled layer (``cross_entropy``), whose
    ``readout(pool(h))`` are class logits; a run of it can then be scored by its own read-out."""

    pool: nn.Module
    readout: nn.Module


@runtime_checkable
class LabelsConfig(Protocol):
    """Optional, of an objective's config: the number of classes its read-out predicts (``cross_entropy``);
    rules that project the one-hot label onto hidden layers (``drtp``) need it."""

    num_classes: int


@runtime_checkable
class PoolingConfig(Protocol):
    """Optional, of an objective's config: how it pools a layer's map (:func:`resolve_pool_kernel`);
    ``dfa`` with ``rule.error=auto`` projects per-channel errors when it is ``'global'``."""

    pooling: str | list[int]


class _ChannelsLastGrad(torch.autograd.Function):
    """The identity, whose backward hands its gradient on in channels_last memory (the same values).

    Flattening a channels_last map, or averaging it globally, sends back a gradient in NCHW order (or an
    expanded one); the pooling, max-pool and ReLU backward kernels below then run on mixed layouts, 5–7×
    slower on CPU (a 64×32×32×32 bf16 ``avg_pool2d_backward``: 7.9 ms against 1.2 ms; benchmarks/RESULTS.md,
    "Roofline"). Converting the small pooled gradient once keeps the whole backward in one layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def channels_last_grad(h: torch.Tensor) -> torch.Tensor:
    """``h`` itself; if it is a channels_last map with a graph, its gradient arrives in channels_last too."""
    if (
        h.dim() == 4
        and h.requires_grad
        and not h.is_contiguous()
        and h.is_contiguous(memory_format=torch.channels_last)
    ):
        return _ChannelsLastGrad.apply(h)
    return h


class SpatialPool(nn.Module):
    """``AvgPool2d(k, stride=k)`` then flatten (CLAPP++ 2D spatial dependence), or global average.

    ``kernel=None`` means global average pooling ("no 2D spatial dependence"); 2-D inputs (MLPs)
    pass through unchanged; 3-D inputs (N, C, T) (1-D convnets, e.g. on the RHM) are pooled along T.
    A channels_last map gets its gradient back in channels_last (:func:`channels_last_grad`)."""

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
            return channels_last_grad(h).mean(dim=(2, 3))
        if self.kernel == 1:
            return channels_last_grad(h).flatten(1)
        return channels_last_grad(F.avg_pool2d(h, self.kernel, self.kernel)).flatten(1)

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
