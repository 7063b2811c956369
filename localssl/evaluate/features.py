"""Frozen-encoder features: every layer's output pooled with the dataset's kernels and concatenated
(CLAPP++ App. B: "read-out concatenated representations from multiple layers")."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from tqdm import tqdm

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import SpatialPool


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


class FeatureExtractor(nn.Module):
    """uint8 images -> concatenated pooled features of the chosen layers."""

    def __init__(
        self,
        encoder: LayeredEncoder,
        normalize: nn.Module,
        kernels: list[int | None],
        layers: list[int],
    ) -> None:
        super().__init__()
        self.encoder, self.normalize, self.layers = encoder, normalize, layers
        self.pools = nn.ModuleList(SpatialPool(k) for k in kernels)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hs = self.encoder(self.normalize(images))
        return torch.cat([self.pools[i](hs[i]).flatten(1) for i in self.layers], dim=1)

    @torch.no_grad()
    def extract(
        self,
        images: torch.Tensor,
        batch_size: int = 256,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = False,
        desc: str = "features",
    ) -> torch.Tensor:
        """Features of all ``images`` (kept on CPU); ``transform`` maps a float [0,1] batch to an
        augmented float [0,1] batch (e.g. crop + flip for the augmented probe). The output is allocated
        once and filled batch by batch (no list of batches and concatenated copy: half the peak memory);
        ``progress`` shows a bar on stderr."""
        self.eval()
        device = next(self.encoder.parameters()).device
        out: torch.Tensor | None = None
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=not progress, file=sys.stderr):
            x = images[start : start + batch_size].to(device)
            if transform is not None:
                x = transform(x.float().div_(255.0)).clamp_(0, 1)
            z = self.forward(x)
            if out is None:
                out = torch.empty(len(images), z.shape[1], dtype=dtype)
            out[start : start + len(z)] = z.to("cpu", dtype)
        if out is None:
            raise ValueError("no images to extract features from (an empty split?)")
        return out

    @torch.no_grad()
    def layer_dims(self, images: torch.Tensor) -> list[int]:
        """Width of each chosen layer's block in :meth:`forward`'s concatenated features, in order."""
        chosen = self.layers
        try:
            dims = []
            for i in chosen:
                self.layers = [i]
                dims.append(int(self.forward(images).shape[1]))
        finally:
            self.layers = chosen
        return dims


@runtime_checkable
class OwnProbeFeatures(Protocol):
    """Optional, of a view generator: the probe's features of a frozen encoder when they are not the pooled
    layer outputs of whole images (``patch_grid``: encode the patches, average over the grid). ``layers``
    are 0-based; the extractor takes uint8 images (used by ``localssl probe``)."""

    def feature_extractor(self, encoder: LayeredEncoder, layers: list[int]) -> FeatureExtractor: ...
