"""Self-Contrastive Forward-Forward inputs (SCFF; Chen et al., Nat. Commun. 2025, Fig. 1).

Every image ``x`` makes a positive input ``[x, x]`` and a negative input ``[x, x']`` (concatenated on
channels), ``x'`` another image of the batch: the batch shifted by one random offset ``k ∈ 1..B−1``
(official code, one negative per positive). The encoder's first layer must read both halves with one
shared-weight convolution (``model.self_concat=true``). Augmentation: horizontal flip only, as the
official CIFAR-10 runs. Rows: ``[positives; negatives]``; each row is its own reference (``s = hᵀh``).
"""

from __future__ import annotations

import dataclasses

import kornia.augmentation as K
import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS
from localssl.views.base import Normalize, ViewBatch


@dataclasses.dataclass
class SelfConcatConfig:
    name: str = "self_concat"
    flip_p: float = 0.5


@VIEWS.register("self_concat", SelfConcatConfig)
class SelfConcatViews(nn.Module):
    def __init__(self, cfg: SelfConcatConfig, info: DatasetInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.flip = K.RandomHorizontalFlip(p=cfg.flip_p)
        self.normalize = Normalize(info.mean, info.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        b = images.shape[0]
        if b < 2:
            raise ValueError("self_concat views need at least 2 images per batch (x' is another image)")
        x = self.normalize(self.flip(images.float().div_(255.0)))
        shift = int(torch.randint(1, b, ()))
        other = x.roll(-shift, dims=0)  # row i pairs with image (i + shift) mod B
        stacked = torch.cat([torch.cat([x, x], dim=1), torch.cat([x, other], dim=1)])
        rows = torch.arange(2 * b, device=x.device)
        lab = None if labels is None else torch.cat([labels, labels])
        return ViewBatch(
            x=stacked, pos=rows[:b], pos_ref=rows[:b], neg=rows[b:], neg_ref=rows[b:], labels=lab, n_images=b
        )
