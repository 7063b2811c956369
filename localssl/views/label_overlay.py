"""Supervised Forward-Forward inputs (Hinton 2022, Sec. 3.3): the label written into the image.

The one-hot code of a label replaces the first ``num_classes`` pixels of the image's top row (all
channels, "on" = full intensity, "off" = black, in [0, 1] pixel space before per-channel
normalisation). The positive input carries the correct label, the negative input the same image with
a label drawn uniformly among the wrong ones. Rows: ``[positives; negatives]``; each row is its own
reference (goodness ``s = hᵀh``). Augmentation: random resized crop + horizontal flip, as the single
view of the supervised baselines, applied before the label is written.
"""

from __future__ import annotations

import dataclasses

import kornia.augmentation as K
import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS, ConfigError
from localssl.views.base import Normalize, ViewBatch


@dataclasses.dataclass
class LabelOverlayConfig:
    name: str = "label_overlay"
    crop_scale: tuple[float, float] | str = "auto"  # auto: the dataset's SimCLR crop scale
    flip_p: float = 0.5
    augment: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_scale, list):
            self.crop_scale = tuple(self.crop_scale)


def overlay_labels(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Write the one-hot code of ``labels`` over the first ``num_classes`` pixels of row 0 (in place)."""
    if x.shape[-1] < num_classes:
        raise ValueError(f"images {x.shape[-1]} pixels wide cannot hold a {num_classes}-class label code")
    code = torch.nn.functional.one_hot(labels, num_classes).to(x.dtype)
    x[:, :, 0, :num_classes] = code[:, None, :]
    return x


def wrong_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A label drawn uniformly among the ``num_classes − 1`` wrong ones."""
    shift = torch.randint(1, num_classes, labels.shape, device=labels.device)
    return (labels + shift) % num_classes


@VIEWS.register("label_overlay", LabelOverlayConfig)
class LabelOverlayViews(nn.Module):
    def __init__(self, cfg: LabelOverlayConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = info.num_classes
        size = info.image_size
        scale = info.crop_scale if cfg.crop_scale == "auto" else tuple(cfg.crop_scale)
        self.augment = (
            nn.Sequential(K.RandomResizedCrop((size, size), scale=scale), K.RandomHorizontalFlip(p=cfg.flip_p))
            if cfg.augment
            else nn.Identity()
        )
        self.normalize = Normalize(info.mean, info.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        if labels is None or bool((labels < 0).any()):
            raise ConfigError("views label_overlay (supervised Forward-Forward) needs every image labelled")
        b = images.shape[0]
        x = self.augment(images.float().div_(255.0)).clamp_(0, 1)
        pos = overlay_labels(x.clone(), labels, self.num_classes)
        neg = overlay_labels(x, wrong_labels(labels, self.num_classes), self.num_classes)
        x = self.normalize(torch.cat([pos, neg]))
        rows = torch.arange(2 * b, device=x.device)
        return ViewBatch(
            x=x,
            pos=rows[:b],
            pos_ref=rows[:b],
            neg=rows[b:],
            neg_ref=rows[b:],
            labels=torch.cat([labels, labels]),
            n_images=b,
        )
