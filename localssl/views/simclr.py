"""SimCLR views (Chen et al. 2020), as used by CLAPP++ (Delrocq et al. 2026, App. B).

Two augmentations of every image, made in one batched call on the training device with per-sample
randomness (``kornia.augmentation``): RandomResizedCrop(scale), horizontal flip, ColorJitter(0.8, 0.8,
0.8, 0.2) with p=0.8, grayscale p=0.2, Gaussian blur (kernel ≈ 10% of the image, σ∈[0.1, 2]) p=0.5,
then per-channel normalisation. The batch is stacked ``[view1; view2]`` (2B rows).
"""

from __future__ import annotations

import dataclasses

import kornia.augmentation as K
import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS, ConfigError
from localssl.views.base import Normalize, ViewBatch, next_image_negatives, random_negatives, swap_halves


@dataclasses.dataclass
class SimCLRConfig:
    name: str = "simclr"
    crop_scale: tuple[float, float] | str = "auto"  # auto: (0.25, 1) CIFAR-10, (0.08, 1) otherwise
    jitter_strength: float = 1.0
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float | str = "auto"  # auto: 0.5 where the official code blurs, else 0
    flip_p: float = 0.5
    negatives: str = "next"  # next (official CLAPP++) | random (another image, uniformly)

    def __post_init__(self) -> None:
        if self.negatives not in ("next", "random"):
            raise ConfigError(f"views.negatives must be 'next' or 'random', got '{self.negatives}'")
        if isinstance(self.crop_scale, list):
            self.crop_scale = tuple(self.crop_scale)


@VIEWS.register("simclr", SimCLRConfig)
class SimCLRViews(nn.Module):
    """Two SimCLR augmentations per image; positive = other view, negative = another image."""

    def __init__(self, cfg: SimCLRConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg = cfg
        size = info.image_size
        scale = info.crop_scale if cfg.crop_scale == "auto" else tuple(cfg.crop_scale)
        blur_p = (0.5 if info.blur else 0.0) if cfg.blur_p == "auto" else float(cfg.blur_p)
        s = cfg.jitter_strength
        ops: list[nn.Module] = [
            K.RandomResizedCrop((size, size), scale=scale),
            K.RandomHorizontalFlip(p=cfg.flip_p),
        ]
        if info.channels == 3:
            ops.append(K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=cfg.jitter_p))
            ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
        if blur_p > 0:
            k = max(3, int(0.1 * size) | 1)  # odd kernel ≈ 10% of the image, as torchvision's SimCLR
            ops.append(K.RandomGaussianBlur((k, k), sigma=(0.1, 2.0), p=blur_p))
        self.augment = nn.Sequential(*ops)
        self.normalize = Normalize(info.mean, info.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        b = images.shape[0]
        if b < 2:
            raise ValueError("SimCLR views need at least 2 images per batch (negatives come from other images)")
        x = images.float().div_(255.0)
        x = self.augment(torch.cat([x, x]))
        x = self.normalize(x.clamp_(0.0, 1.0))
        pos = swap_halves(2 * b, x.device)
        neg = next_image_negatives(pos) if self.cfg.negatives == "next" else random_negatives(pos, b)
        anchor = torch.arange(2 * b, device=x.device)
        lab = None if labels is None else torch.cat([labels, labels])
        return ViewBatch(x=x, pos=pos, pos_ref=anchor, neg=neg, neg_ref=anchor, labels=lab, n_images=b)
