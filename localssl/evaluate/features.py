"""Which layers a probe reads out (:func:`parse_layers`). The extractor (every layer's output pooled with the
dataset's kernels and concatenated) and the feature sets live one rung down, in :mod:`localssl.linear_probe`,
shared with the online probe; they are re-exported here."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from localssl.linear_probe import FeatureExtractor, FeatureSet
from localssl.models.base import LayeredEncoder
from localssl.views.readout import LayerReadout

__all__ = ["FeatureExtractor", "FeatureSet", "OwnProbeFeatures", "parse_layers"]


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


@runtime_checkable
class OwnProbeFeatures(Protocol):
    """Optional, of a view generator: the probe's features of a frozen encoder when they are not the pooled
    layer outputs of whole images (``patch_grid``: encode the patches, average over the grid). ``layers``
    are 0-based; the extractor takes uint8 images (used by ``localssl probe``)."""

    def feature_extractor(self, encoder: LayeredEncoder, layers: list[int]) -> LayerReadout: ...
