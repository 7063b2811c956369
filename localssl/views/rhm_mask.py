"""Masking split of an RHM input into two complementary views whose only shared cause is a hidden
feature: positive pairs made from the training inputs alone.

In the Random Hierarchy Model (Cagnetta et al., PRX 2024) the ``s`` sibling subtrees under a node of
level ``λ`` are independent given that node's feature. Split every level-``λ`` node's children into two
groups and keep, in view A, the tokens under the first group (the others set to zero, i.e. "no token"),
in view B the complementary tokens: ``x_A + x_B = x``. The two views of one input then depend on each
other only through the level-``λ`` features (for ``λ = 0``: the class), while the views of two different inputs share
nothing. A contrastive loss between them (CLAPP-like, ``s⁺ = z_Aᵀ B z_B``) rewards a layer for
encoding what a subtree says about its parent — the synonym-invariant hidden feature — without ever
drawing a fresh input from the generator (which would leak the hidden features and labels).

``depths`` picks the split level ``λ``: ``'all'`` (uniform over ``0..L−1``), one level, or a list. One
level and one split are drawn per batch, so a positive and its negatives carry the same mask pattern
and differ only in content. With ``[0]`` every layer is trained to predict the other half of the input
(class-level signal reaches every layer, the top one included). Rows are stacked ``[A; B]`` like the
SimCLR views: positive = the other view of the same input, negative = the same view of the next input.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from localssl.registry import VIEWS, ConfigError
from localssl.views.base import ViewBatch, swap_halves


@dataclasses.dataclass
class RHMMaskConfig:
    name: str = "rhm_mask"
    s: int = 2  # branching factor of the RHM (the input length must be s^L)
    depths: str | int | list[int] = "all"  # split levels λ (0 = root: halves share only the class)

    def __post_init__(self) -> None:
        if not isinstance(self.s, int) or self.s < 2:
            raise ConfigError(f"views.s must be an integer >= 2, got {self.s!r}")
        if isinstance(self.depths, str) and self.depths != "all":
            raise ConfigError(f"views.depths must be 'all', a level or a list of levels, got '{self.depths}'")


def tree_depth(length: int, s: int) -> int:
    """``L`` such that ``s^L = length``; a clear error otherwise."""
    depth = round(math.log(length, s)) if length > 1 else 0
    if s**depth != length:
        raise ValueError(f"RHM views need an input length s^L; got length {length} with s={s}")
    return depth


def split_mask(length: int, s: int, level: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (length,) mask of view A: for every node of level ``λ = level``, ``⌊s/2⌋`` of its ``s``
    children (chosen at random per node) send their tokens to view A, the others to view B."""
    L = tree_depth(length, s)
    if not 0 <= level <= L - 1:
        raise ConfigError(f"views.depths must lie in 0..L−1 = 0..{L - 1} for inputs of length {length}, got {level}")
    pos = torch.arange(length, device=device)
    span = s ** (L - level)  # tokens under one level-λ node
    ancestor, child = pos // span, (pos // (span // s)) % s
    ranks = torch.rand(s**level, s, device=device).argsort(-1).argsort(-1)  # random order of each node's children
    return (ranks < s // 2)[ancestor, child]


@VIEWS.register("rhm_mask", RHMMaskConfig)
class RHMMaskViews(nn.Module):
    def __init__(self, cfg: RHMMaskConfig, info: Any = None) -> None:
        super().__init__()
        self.cfg = cfg

    def levels(self, length: int) -> list[int]:
        L = tree_depth(length, self.cfg.s)
        d = self.cfg.depths
        if d == "all":
            return list(range(L))
        return [int(d)] if isinstance(d, int) else [int(x) for x in d]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        if x.dim() != 3:
            raise ValueError(f"rhm_mask views expect one-hot RHM inputs (N, v, s^L), got shape {tuple(x.shape)}")
        b = len(x)
        if b < 2:
            raise ValueError("rhm_mask views need at least 2 inputs per batch (negatives come from other inputs)")
        levels = self.levels(x.shape[-1])
        level = levels[int(torch.randint(len(levels), ()))]
        # one mask for the whole batch: positives and negatives then have the same mask pattern, so the
        # complementarity of the two masks cannot tell a positive from a negative
        mask = split_mask(x.shape[-1], self.cfg.s, level, x.device)[None, None, :]
        views = torch.cat([x * mask, x * ~mask])
        pos = swap_halves(2 * b, x.device)
        neg = (pos + 1) % b + (pos // b) * b  # the same view (same mask) of the next input
        anchor = torch.arange(2 * b, device=x.device)
        lab = labels.repeat(2) if labels is not None else None
        return ViewBatch(x=views, pos=pos, pos_ref=anchor, neg=neg, neg_ref=anchor, labels=lab, n_images=b)
