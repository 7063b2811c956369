"""What a view generator returns: the network input and which rows are positive/negative pairs.

The common contrastive formalism (CLAPP++ Sec. 3) scores a target activity ``h`` against a reference
activity ``r``: ``s = hᵀ B r``. A :class:`ViewBatch` says, for the stacked input ``x``, which rows play
the positive target and its reference, and which rows play the negative target and its reference:

    s⁺_i = h[pos[i]]ᵀ B r[pos_ref[i]],   s⁻_i = h[neg[i]]ᵀ B r[neg_ref[i]].

SimCLR views: ``pos`` = the other view of the same image, ``neg`` = a view of another image, both
references = the anchor row itself. Forward-Forward style views (identity ``B``, ``r = h``) use the
same row as target and reference.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


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
