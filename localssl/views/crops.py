"""Crop views of the CLAPP++ theory simulations on MNIST (Delrocq et al. 2026, App. B).

"Images go through only simple data augmentations of cropping a 14×14 patch from the image. Patches
from the same image are used as positive samples." Two layouts:

* ``random`` — two independent random ``size×size`` crops of every image, stacked ``[crop1; crop2]``
  (positive = the other crop, as in the linear-convnet simulation of Fig. 4B);
* ``grid`` — the image's non-overlapping ``size×size`` patches (2×2 patches of 14×14 for MNIST, as in
  the official MLP simulations of Fig. 2, 3A, 3B), the upper half of the grid stacked before the lower
  half; positive = the patch half a grid below (or above), i.e. the vertical neighbour for 2×2.

Negative = the next row of the positives (another image: the official ``(i+1) mod M`` sampling),
reference = the anchor row, so positive and negative share one reference.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS, ConfigError
from localssl.views.base import Normalize, ViewBatch, next_image_negatives, random_negatives, swap_halves


@dataclasses.dataclass
class CropsConfig:
    name: str = "crops"
    size: int = 14
    mode: str = "random"  # random (two random crops per image) | grid (non-overlapping patches)
    negatives: str = "next"  # next (official) | random (a crop of a uniformly drawn other image)

    def __post_init__(self) -> None:
        if self.mode not in ("random", "grid"):
            raise ConfigError(f"views.mode must be 'random' or 'grid', got '{self.mode}'")
        if self.negatives not in ("next", "random"):
            raise ConfigError(f"views.negatives must be 'next' or 'random', got '{self.negatives}'")
        if self.size < 1:
            raise ConfigError(f"views.size must be >= 1, got {self.size}")


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly placed ``size×size`` crop of every image of ``x`` (N, C, H, W)."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (top[:, None] + ar)[:, :, None]  # (N, s, 1)
    cols = (left[:, None] + ar)[:, None, :]  # (N, 1, s)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def grid_patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """Non-overlapping patches ordered (grid row, grid column, image): (g·g·N, C, size, size)."""
    c = x.shape[1]
    p = x.unfold(2, size, size).unfold(3, size, size)  # N, C, gy, gx, s, s
    return p.permute(2, 3, 0, 1, 4, 5).reshape(-1, c, size, size)


@VIEWS.register("crops", CropsConfig)
class CropViews(nn.Module):
    """Crops of the same image are positives; crops of other images are negatives."""

    def __init__(self, cfg: CropsConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.size > info.image_size:
            raise ConfigError(f"views.size={cfg.size} is larger than the {info.image_size}-pixel images")
        if cfg.mode == "grid":
            g = info.image_size // cfg.size
            if g < 2 or g % 2:
                raise ConfigError(
                    f"views.mode=grid pairs each patch with the one half a grid below: {info.image_size}-pixel "
                    f"images give a {g}×{g} grid of {cfg.size}-pixel patches; pick a size giving an even grid "
                    f"(e.g. {info.image_size // 2})"
                )
        self.normalize = Normalize(info.mean, info.std)

    @staticmethod
    def input_shape(cfg: CropsConfig, info: DatasetInfo) -> tuple[int, int, int]:
        """The network sees ``size×size`` crops, not whole images (used by the builder)."""
        return (info.channels, cfg.size, cfg.size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        b = images.shape[0]
        if b < 2:
            raise ValueError("crop views need at least 2 images per batch (negatives come from other images)")
        x = self.normalize(images)
        if self.cfg.mode == "random":
            x = torch.cat([random_crops(x, self.cfg.size), random_crops(x, self.cfg.size)])
        else:
            x = grid_patches(x, self.cfg.size)
        m = x.shape[0]
        pos = swap_halves(m, x.device)
        neg = next_image_negatives(pos) if self.cfg.negatives == "next" else random_negatives(pos, b)
        anchor = torch.arange(m, device=x.device)
        lab = None if labels is None else labels.repeat(m // b)
        return ViewBatch(x=x, pos=pos, pos_ref=anchor, neg=neg, neg_ref=anchor, labels=lab, n_images=b)
