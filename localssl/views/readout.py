"""The probe's read-out of a frozen encoder: uint8 images -> one feature vector per image.

A view generator may say how the linear probe reads its encoder out (a ``feature_extractor(encoder,
layers)`` method: ``patch_grid`` encodes every patch and averages over the grid); otherwise the
evaluation pools each layer with the dataset's kernels (:class:`localssl.evaluate.features.FeatureExtractor`,
CLAPP++ App. B). Both are a :class:`LayerReadout`: ``forward`` reads one batch out, and the batched
extraction of a whole split is shared here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from localssl.models.base import LayeredEncoder


class LayerReadout(nn.Module):
    """uint8 images -> concatenated features of the chosen layers (0-based ``layers``); a subclass
    defines :meth:`forward` for one batch of images. A call runs it on the training's fast path:
    ``autocast`` (the run's precision) and ``memory_format`` (channels_last or not), set with
    :meth:`fast_path`; the features come back as float32."""

    def __init__(self, encoder: LayeredEncoder, normalize: nn.Module, layers: list[int]) -> None:
        super().__init__()
        self.encoder, self.normalize, self.layers = encoder, normalize, layers
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.memory_format = torch.contiguous_format

    def fast_path(
        self, autocast: Callable[[], contextlib.AbstractContextManager], memory_format: torch.memory_format
    ) -> LayerReadout:
        """Read out under ``autocast`` with inputs (and the encoder) in ``memory_format``; returns self."""
        self.autocast, self.memory_format = autocast, memory_format
        self.encoder.to(memory_format=memory_format)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4:
            images = images.contiguous(memory_format=self.memory_format)
        with self.autocast():
            return super().__call__(images).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
            z = self(x)
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
                dims.append(int(self(images).shape[1]))
        finally:
            self.layers = chosen
        return dims
