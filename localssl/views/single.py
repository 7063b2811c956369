"""One augmented view per image (random resized crop + horizontal flip) with its label: the input of
supervised baselines. Contrastive objectives cannot use it (it defines no positive pairs)."""

from __future__ import annotations

import dataclasses

import kornia.augmentation as K
import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS
from localssl.views.base import Normalize, ViewBatch


@dataclasses.dataclass
class SingleViewConfig:
    name: str = "single"
    crop_scale: tuple[float, float] | str = "auto"  # auto: the dataset's SimCLR crop scale
    flip_p: float = 0.5
    augment: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_scale, list):
            self.crop_scale = tuple(self.crop_scale)


@VIEWS.register("single", SingleViewConfig)
class SingleView(nn.Module):
    def __init__(self, cfg: SingleViewConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg = cfg
        scale = info.crop_scale if cfg.crop_scale == "auto" else tuple(cfg.crop_scale)
        size = info.image_size
        self.augment = (
            nn.Sequential(K.RandomResizedCrop((size, size), scale=scale), K.RandomHorizontalFlip(p=cfg.flip_p))
            if cfg.augment
            else nn.Identity()
        )
        self.normalize = Normalize(info.mean, info.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        x = self.normalize(self.augment(images.float().div_(255.0)).clamp_(0, 1))
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return ViewBatch(x=x, pos=empty, pos_ref=empty, neg=empty, neg_ref=empty, labels=labels, n_images=len(x))
