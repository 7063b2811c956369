"""What a view generator returns: the network input and which rows are positive/negative pairs.

The common contrastive formalism (CLAPP++ Sec. 3) scores a target activity ``h`` against a reference
activity ``r``: ``s = hᵀ B r``. A :class:`ViewBatch` says, for the stacked input ``x``, which rows play
the positive target and its reference, and which rows play the negative target and its reference:

    s⁺_i = h[pos[i]]ᵀ B r[pos_ref[i]],   s⁻_i = h[neg[i]]ᵀ B r[neg_ref[i]].

SimCLR views: ``pos`` = the other view of the same image, ``neg`` = a view of another image, both
references = the anchor row itself. Forward-Forward style views (identity ``B``, ``r = h``) use the
same row as target and reference.

A view generator is what :class:`ViewGenerator` declares; one whose encoder input is not a whole image
also declares :class:`CustomInputShape`. (A view generator with its own probe features declares
``localssl.evaluate.features.OwnProbeFeatures``, beside the features it returns.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from localssl.data import DatasetInfo


@dataclasses.dataclass
class ViewBatch:
    x: torch.Tensor  # (M, C, H, W) float network input
    pos: torch.Tensor  # (P,) row indices of positive targets
    pos_ref: torch.Tensor  # (P,) row indices of their references
    neg: torch.Tensor  # (Q,) row indices of negative targets
    neg_ref: torch.Tensor  # (Q,) row indices of their references
    labels: torch.Tensor | None = None  # (M,) class label per row, -1 when unknown
    n_images: int = 0  # number of source images in the batch
    grid: tuple[int, int] | None = None  # patch_grid: rows of x are n_images × grid[0] × grid[1] patches

    def to(self, device: torch.device) -> ViewBatch:
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


class ViewGenerator(Protocol):
    """What the trainer calls on a view generator: ``views(images, labels) -> ViewBatch``.

    ``images`` is one batch of the dataset as stored (uint8 ``(N, C, H, W)`` images, or float audio),
    ``labels`` its ``(N,)`` labels or ``None``. The registered builder is called as
    ``builder(cfg, info: DatasetInfo)``; make it an ``nn.Module`` so that ``.to(device)`` moves its buffers."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch: ...


@runtime_checkable
class CustomInputShape(Protocol):
    """Optional, of a view generator's *class* (asked before anything is built): the shape of one row of
    ``ViewBatch.x`` (without batch) when it is not the dataset's ``(C, H, W)``: crops, patches, audio windows."""

    @staticmethod
    def input_shape(cfg: Any, info: DatasetInfo) -> tuple[int, ...]: ...


def encoder_input_shape(views_cls: Any, cfg: Any, info: DatasetInfo) -> tuple[int, ...]:
    """The shape of one encoder input row for view generator class ``views_cls`` and its config ``cfg``:
    its :class:`CustomInputShape` when it declares one, else the dataset's ``(C, H, W)``."""
    if isinstance(views_cls, CustomInputShape):
        return tuple(views_cls.input_shape(cfg, info))
    return (info.channels, info.image_size, info.image_size)


def swap_halves(n_rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Index of the other view for a batch stacked as ``[view1; view2]`` (row i <-> i ± n/2)."""
    half = n_rows // 2
    return (torch.arange(n_rows, device=device) + half) % n_rows


def next_image_negatives(pos: torch.Tensor, n_views: int = 2) -> torch.Tensor:
    """CLAPP++ official negatives: the next row of the swapped batch, ``pos[(i+1) mod M]``.

    With ``[view1; view2]`` stacking and at least two images this is always another image."""
    return pos.roll(-1)


def random_negatives(pos: torch.Tensor, n_images: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A view of a uniformly drawn *other* image (never the anchor's own image)."""
    m = pos.numel()
    image_of = torch.arange(m, device=pos.device) % n_images
    shift = torch.randint(1, n_images, (m,), device=pos.device, generator=generator)
    other_image = (image_of + shift) % n_images
    view = torch.randint(0, m // n_images, (m,), device=pos.device, generator=generator)
    return other_image + view * n_images


class Normalize(nn.Module):
    """uint8 or [0, 1] images -> per-channel standardised float."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std
