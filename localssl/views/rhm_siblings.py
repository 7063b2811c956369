"""Sibling subtrees as positive pairs on the Random Hierarchy Model, made from the training inputs alone.

In the RHM (Cagnetta et al., PRX 2024) a node of level ``λ`` emits an ``s``-tuple of level-``(λ+1)``
features; given the node's feature, its children's subtrees are independent, and synonyms (tuples of
the same feature) have the same statistics with respect to their siblings. So "which subtree sits
next to which" is learnable from the data and only depends on the hidden features — the signal that
lets a layer merge synonyms (CPC-/CLAPP-like prediction of a neighbour, here along the tree).

For a split level ``λ`` (one per batch, drawn from ``depths``), every input gives, for every level-``λ``
node ``j``, a pair of rows: the input with everything masked (zero, "no token") except the subtree of one
child of ``j``, and the same for another child of ``j`` (two children drawn at random per node and batch).
Rows are stacked ``[first children; second children]`` in the order (input, node), so

* positive of a row: the sibling row (same input, same parent) — ``swap_halves``;
* negative of a row: the sibling row of the *same node* in the next input of the batch, so positives and
  negatives carry the same mask pattern and differ only in content.

A row holds one subtree, never a whole input: matching rows cannot be done by remembering which
training inputs exist, only by the co-occurrence statistics of sibling features. No input is ever
drawn from the generator (that would leak hidden features and labels).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from localssl.registry import VIEWS, ConfigError
from localssl.views.base import ViewBatch, swap_halves
from localssl.views.rhm_mask import tree_depth


@dataclasses.dataclass
class RHMSiblingsConfig:
    name: str = "rhm_siblings"
    s: int = 2  # branching factor of the RHM (the input length must be s^L)
    depths: str | int | list[int] = "all"  # parent levels λ in 0..L−1 ('all' = uniform over them)

    def __post_init__(self) -> None:
        if not isinstance(self.s, int) or self.s < 2:
            raise ConfigError(f"views.s must be an integer >= 2, got {self.s!r}")
        if isinstance(self.depths, str) and self.depths != "all":
            raise ConfigError(f"views.depths must be 'all', a level or a list of levels, got '{self.depths}'")


def subtree_masks(length: int, s: int, level: int, children: torch.Tensor) -> torch.Tensor:
    """(K, length) boolean masks: row ``j`` keeps the tokens under child ``children[j]`` of level-``level``
    node ``j`` (``K = s^level`` nodes)."""
    L = tree_depth(length, s)
    span = s ** (L - level - 1)  # tokens under one child
    pos = torch.arange(length, device=children.device)
    first = (torch.arange(s**level, device=children.device) * s + children) * span  # first token of each subtree
    return (pos[None, :] >= first[:, None]) & (pos[None, :] < first[:, None] + span)


@VIEWS.register("rhm_siblings", RHMSiblingsConfig)
class RHMSiblingViews(nn.Module):
    def __init__(self, cfg: RHMSiblingsConfig, info: Any = None) -> None:
        super().__init__()
        self.cfg = cfg

    def levels(self, length: int) -> list[int]:
        L = tree_depth(length, self.cfg.s)
        d = self.cfg.depths
        out = list(range(L)) if d == "all" else [int(d)] if isinstance(d, int) else [int(x) for x in d]
        if not out or min(out) < 0 or max(out) > L - 1:
            raise ConfigError(f"views.depths must lie in 0..L−1 = 0..{L - 1} for inputs of length {length}, got {d}")
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        if x.dim() != 3:
            raise ValueError(f"rhm_siblings views expect one-hot RHM inputs (N, v, s^L), got shape {tuple(x.shape)}")
        b, length = len(x), x.shape[-1]
        if b < 2:
            raise ValueError("rhm_siblings views need at least 2 inputs per batch (negatives come from other inputs)")
        s = self.cfg.s
        levels = self.levels(length)
        level = levels[int(torch.randint(len(levels), ()))]
        k = s**level
        pair = torch.rand(k, s, device=x.device).argsort(-1)[:, :2]  # two distinct children per node
        m_a = subtree_masks(length, s, level, pair[:, 0])  # (K, T)
        m_b = subtree_masks(length, s, level, pair[:, 1])
        rows_a = (x[:, None] * m_a[None, :, None, :]).flatten(0, 1)  # (B·K, v, T), row = input·K + node
        rows_b = (x[:, None] * m_b[None, :, None, :]).flatten(0, 1)
        n = b * k
        pos = swap_halves(2 * n, x.device)
        neg = (pos + k) % n + (pos // n) * n  # same node and child slot, next input
        anchor = torch.arange(2 * n, device=x.device)
        lab = labels.repeat_interleave(k).repeat(2) if labels is not None else None
        # n_images = rows per view, so that batch statistics (LPL, VICReg) see the two views [A; B]
        return ViewBatch(
            x=torch.cat([rows_a, rows_b]), pos=pos, pos_ref=anchor, neg=neg, neg_ref=anchor, labels=lab, n_images=n
        )
