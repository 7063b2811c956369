"""RHM inputs as they are, with their labels: the input of supervised rules (backprop, DFA, greedy
supervised) on the Random Hierarchy Model. It defines no positive pairs, so contrastive objectives
cannot use it (use ``rhm_mask``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from localssl.registry import VIEWS
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class RHMPlainConfig:
    name: str = "rhm_plain"


@VIEWS.register("rhm_plain", RHMPlainConfig)
class RHMPlainViews(nn.Module):
    def __init__(self, cfg: RHMPlainConfig, info: Any = None) -> None:
        super().__init__()
        self.cfg = cfg

    @torch.no_grad()
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return ViewBatch(x=x, pos=empty, pos_ref=empty, neg=empty, neg_ref=empty, labels=labels, n_images=len(x))
