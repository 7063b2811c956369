"""Supervised cross-entropy through a linear read-out: the ``supervised`` (backprop, top layer) and
``greedy-supervised`` (local, every layer) baselines of CLAPP 2021 Table 1.

``L = CE(W pool(h) + b, y)`` with the labels carried by the :class:`ViewBatch`; rows labelled -1
(unlabelled) are ignored.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from localssl.objectives.base import LayerSpec, LossOut, SpatialPool, resolve_pool_kernel
from localssl.registry import OBJECTIVES, ConfigError
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class CrossEntropyConfig:
    name: str = "cross_entropy"
    num_classes: int = 10
    pooling: str | list[int] = "paper"


@OBJECTIVES.register("cross_entropy", CrossEntropyConfig)
class CrossEntropyObjective(nn.Module):
    def __init__(self, cfg: CrossEntropyConfig, target: LayerSpec, refs: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool = SpatialPool(resolve_pool_kernel(cfg.pooling, target))
        self.readout = nn.Linear(self.pool.out_dim(target.shape), cfg.num_classes)

    def forward(self, h: torch.Tensor, refs: list[torch.Tensor], views: ViewBatch) -> LossOut:
        if views.labels is None:
            raise ConfigError("objective cross_entropy needs labelled views (data with labels)")
        logits = self.readout(self.pool(h))
        labels = views.labels
        mask = labels >= 0
        if not bool(mask.any()):
            raise ConfigError("objective cross_entropy got a batch without labels (unlabelled split?)")
        loss = F.cross_entropy(logits[mask], labels[mask])
        acc = (logits.detach()[mask].argmax(1) == labels[mask]).float().mean()
        return LossOut(loss, {"acc": acc})


@dataclasses.dataclass
class FrameCrossEntropyConfig:
    name: str = "frame_cross_entropy"
    num_classes: int = 39
    pool: str = "frame"  # frame: one read-out per labelled frame | window: one per window (GIM's speaker loss)

    def __post_init__(self) -> None:
        if self.pool not in ("frame", "window"):
            raise ConfigError(f"objective.pool must be frame or window, got '{self.pool}'")


@OBJECTIVES.register("frame_cross_entropy", FrameCrossEntropyConfig)
class FrameCrossEntropyObjective(nn.Module):
    """Supervised phone classification per 10 ms frame (the "supervised" and "greedy supervised" rows of
    CLAPP 2021 Table 1 on speech): a layer's ``(B, C, T)`` output is average-pooled in time to the label
    rate (one vector per labelled frame, as the frame probe), a linear read-out gives each frame's class
    scores, and frames labelled -1 are ignored.

    ``pool=window`` is GIM's supervised speaker loss (``loss_supervised_speaker.py``): the output averaged
    over the whole window, ``L = CE(W mean_t h[:, :, t] + b, y)`` with one label per window (every frame of
    the window must carry it, as ``data.labels=speaker`` gives)."""

    def __init__(self, cfg: FrameCrossEntropyConfig, target: LayerSpec, refs: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        if len(target.shape) != 2:
            raise ConfigError(f"objective frame_cross_entropy needs (C, T) layer outputs (audio), got {target.shape}")
        self.readout = nn.Linear(target.shape[0], cfg.num_classes)

    def forward(self, h: torch.Tensor, refs: list[torch.Tensor], views: ViewBatch) -> LossOut:
        if views.labels is None:
            raise ConfigError("objective frame_cross_entropy needs labelled views (frame labels)")
        labels = views.labels
        if self.cfg.pool == "window":
            if not bool((labels == labels[:, :1]).all()):
                raise ConfigError(
                    "objective.pool=window needs one label per window (data.labels=speaker); frame labels vary "
                    "inside a window: use objective.pool=frame"
                )
            labels = labels[:, :1]
        logits = self.readout(F.adaptive_avg_pool1d(h, labels.shape[1]).transpose(1, 2))  # (B, frames, K)
        mask = labels >= 0
        if not bool(mask.any()):
            raise ConfigError("objective frame_cross_entropy got a batch without labels")
        loss = F.cross_entropy(logits[mask], labels[mask])
        acc = (logits.detach()[mask].argmax(1) == labels[mask]).float().mean()
        return LossOut(loss, {"acc": acc})
