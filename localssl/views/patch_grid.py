"""Patch-grid views of CPC/Greedy InfoMax and CLAPP (2021) for images (Illing et al. 2021, App. B.1;
Löwe et al. 2019; van den Oord et al. 2018).

An image is made a "sequence" by cutting it into overlapping patches: a random 64×64 crop (centre crop
for evaluation) of the grey image, random horizontal flip, then 16×16 patches with stride 8 — a 7×7
grid. Every patch is encoded *separately* (the encoder's batch is ``n_images · 7 · 7`` patches) and
each layer's output is average-pooled to one vector per patch. The ``predictive`` objective then lets
the context at grid row ``y`` predict the rows below it (``ViewBatch.grid`` tells it the layout).

Images smaller than 96 px (CIFAR-10) are first upsampled to 96 px so that the 64 px crop covers the
same 2/3 of the image as on STL-10 (96 → 64); the official code pretrained on STL-10 only.
"""

from __future__ import annotations

import dataclasses

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from localssl.data import DatasetInfo
from localssl.models.base import LayeredEncoder
from localssl.registry import VIEWS, ConfigError
from localssl.views.base import ViewBatch
from localssl.views.readout import LayerReadout

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as torchvision's Grayscale
STL10_GREY = (0.4120, 0.2570)  # mean/std of grey STL-10 train+unlabeled (official GIM/CLAPP code)


@dataclasses.dataclass
class PatchGridConfig:
    name: str = "patch_grid"
    crop_size: int = 64
    patch_size: int = 16
    patch_stride: int = 8
    resize: int | str | None = "auto"  # auto: upsample images smaller than 96 px to 96 px; None: never
    flip_p: float = 0.5
    grayscale: bool = True
    mean: float | str = "auto"  # auto: official STL-10 grey value, else the luminance of the dataset mean
    std: float | str = "auto"

    def __post_init__(self) -> None:
        if self.patch_size > self.crop_size:
            raise ConfigError(f"views.patch_size ({self.patch_size}) exceeds views.crop_size ({self.crop_size})")
        if (self.crop_size - self.patch_size) % self.patch_stride:
            raise ConfigError(
                f"views.crop_size - views.patch_size ({self.crop_size} - {self.patch_size}) must be a multiple of "
                f"views.patch_stride ({self.patch_stride}) so that the patches tile the crop"
            )

    @property
    def grid_side(self) -> int:
        return (self.crop_size - self.patch_size) // self.patch_stride + 1


def _resize_to(cfg: PatchGridConfig, info: DatasetInfo) -> int | None:
    if cfg.resize == "auto":
        return 96 if info.image_size < 96 else None
    return None if cfg.resize is None else int(cfg.resize)


def _norm_stats(cfg: PatchGridConfig, info: DatasetInfo) -> tuple[list[float], list[float]]:
    if cfg.grayscale:
        if info.name == "stl10":
            mean, std = STL10_GREY
        else:
            w = LUMA if info.channels == 3 else (1.0,)
            mean = sum(a * b for a, b in zip(w, info.mean))
            std = sum(a * b for a, b in zip(w, info.std))
        mean = mean if cfg.mean == "auto" else float(cfg.mean)
        std = std if cfg.std == "auto" else float(cfg.std)
        return [mean], [std]
    if cfg.mean != "auto" or cfg.std != "auto":
        raise ConfigError("views.mean/views.std can only be set with views.grayscale=true")
    return list(info.mean), list(info.std)


class Patchify(nn.Module):
    """uint8 images -> normalised (n · rows · cols, C, p, p) patches; random crop + flip when
    ``train``, centre crop otherwise."""

    def __init__(self, cfg: PatchGridConfig, info: DatasetInfo, train: bool) -> None:
        super().__init__()
        self.cfg, self.train_mode = cfg, train
        self.size = _resize_to(cfg, info)
        side = self.size or info.image_size
        if side < cfg.crop_size:
            raise ConfigError(
                f"{info.name} images are {side} px, smaller than views.crop_size={cfg.crop_size}; "
                f"lower views.crop_size or set views.resize to at least {cfg.crop_size}"
            )
        self.side = side
        ops: list[nn.Module] = [K.RandomCrop((cfg.crop_size, cfg.crop_size)) if train else K.CenterCrop(cfg.crop_size)]
        if train and cfg.flip_p > 0:
            ops.append(K.RandomHorizontalFlip(p=cfg.flip_p))
        self.augment = nn.Sequential(*ops)
        mean, std = _norm_stats(cfg, info)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if self.cfg.grayscale and x.shape[1] == 3:
            x = (x * self.luma).sum(1, keepdim=True)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if min(x.shape[-2:]) < self.cfg.crop_size:  # some kornia versions would upscale the whole image silently
            raise ConfigError(
                f"images of {tuple(x.shape[-2:])} px reached views built for {self.side}-px images: smaller than "
                f"views.crop_size={self.cfg.crop_size}; give images of the dataset's size, or set views.resize"
            )
        x = (self.augment(x) - self.mean) / self.std
        p, s = self.cfg.patch_size, self.cfg.patch_stride
        patches = x.unfold(2, p, s).unfold(3, p, s)  # n, C, rows, cols, p, p
        return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], p, p)


class PatchGridFeatures(LayerReadout):
    """Probe features as in GIM/CLAPP: centre crop, encode every patch, average each chosen layer over
    the patch and then over the grid (``AdaptiveAvgPool2d(1)`` of the official classifier)."""

    def __init__(self, encoder: LayeredEncoder, patchify: Patchify, layers: list[int], n_patches: int) -> None:
        super().__init__(encoder, patchify, layers)
        self.n_patches = n_patches

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hs = self.encoder(self.normalize(images))
        feats = []
        for i in self.layers:
            h = hs[i].mean(dim=(2, 3)) if hs[i].dim() == 4 else hs[i]
            feats.append(h.view(len(images), self.n_patches, -1).mean(1))
        return torch.cat(feats, dim=1)


@VIEWS.register("patch_grid", PatchGridConfig)
class PatchGridViews(nn.Module):
    """One augmented view per image, cut into a grid of overlapping patches (one row of x per patch)."""

    def __init__(self, cfg: PatchGridConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg, self.info = cfg, info
        self.patchify = Patchify(cfg, info, train=True)

    @staticmethod
    def input_shape(cfg: PatchGridConfig, info: DatasetInfo) -> tuple[int, int, int]:
        return (1 if cfg.grayscale else info.channels, cfg.patch_size, cfg.patch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        b = images.shape[0]
        if b < 2:
            raise ValueError("patch_grid views need at least 2 images per batch (negatives come from other images)")
        x = self.patchify(images)
        side = self.cfg.grid_side
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        lab = None if labels is None else labels.repeat_interleave(side * side)
        return ViewBatch(
            x=x, pos=empty, pos_ref=empty, neg=empty, neg_ref=empty, labels=lab, n_images=b, grid=(side, side)
        )

    def feature_extractor(self, encoder: LayeredEncoder, layers: list[int]) -> LayerReadout:
        """The probe's features for this view (used by ``localssl probe``)."""
        patchify = Patchify(self.cfg, self.info, train=False)
        return PatchGridFeatures(encoder, patchify, layers, self.cfg.grid_side**2)
