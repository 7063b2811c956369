"""Frozen-encoder features: every layer's output pooled with the dataset's kernels and concatenated
(CLAPP++ App. B: "read-out concatenated representations from multiple layers"), and the features of a
probe's train, validation and test splits (:class:`FeatureSet`)."""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import SpatialPool
from localssl.views.readout import LayerReadout


@dataclasses.dataclass
class FeatureSet:
    train: list[torch.Tensor]  # one or more (augmented) copies, (n_train, D)
    train_y: torch.Tensor
    val: torch.Tensor
    val_y: torch.Tensor
    test: torch.Tensor
    test_y: torch.Tensor


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``'all'`` or ``'4,5,6'`` (1-based) -> sorted 0-based indices."""
    if spec == "all":
        return list(range(n_layers))
    try:
        idx = sorted({int(s) - 1 for s in str(spec).split(",") if s.strip()})
    except ValueError as err:
        raise ValueError(f"probe.layers must be 'all' or comma-separated layer numbers, got '{spec}'") from err
    if not idx or idx[0] < 0 or idx[-1] >= n_layers:
        raise ValueError(f"probe.layers={spec}: layers are numbered 1..{n_layers}")
    return idx


class FeatureExtractor(LayerReadout):
    """uint8 images -> concatenated pooled features of the chosen layers."""

    def __init__(
        self,
        encoder: LayeredEncoder,
        normalize: nn.Module,
        kernels: list[int | None],
        layers: list[int],
    ) -> None:
        super().__init__(encoder, normalize, layers)
        self.pools = nn.ModuleList(SpatialPool(k) for k in kernels)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hs = self.encoder(self.normalize(images))
        return torch.cat([self.pools[i](hs[i]).flatten(1) for i in self.layers], dim=1)


@runtime_checkable
class OwnProbeFeatures(Protocol):
    """Optional, of a view generator: the probe's features of a frozen encoder when they are not the pooled
    layer outputs of whole images (``patch_grid``: encode the patches, average over the grid). ``layers``
    are 0-based; the extractor takes uint8 images (used by ``localssl probe``)."""

    def feature_extractor(self, encoder: LayeredEncoder, layers: list[int]) -> LayerReadout: ...
