"""The encoder interface every credit-assignment rule works with: a stack of trainable layers.

Rules see a model only as ``layers`` (an ``nn.ModuleList``): ``h_l = layers[l](h_{l-1})``. Local rules
feed each layer a detached input; backprop chains them; ``forward`` returns every layer's output.
"""

from __future__ import annotations

import torch
from torch import nn


class LayeredEncoder(nn.Module):
    """``layers[l]`` maps layer ``l-1``'s output to layer ``l``'s; ``forward`` returns every layer's output.

    ``autoregressive_layers``: the 0-based indices of context layers (CPC's g_ar GRU), whose loss rules
    that know them (``modules``) compute from the layer's input and output; none by default."""

    autoregressive_layers: frozenset[int] | set[int] = frozenset()

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def output_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Per-layer output shapes (without batch) for an input of shape ``input_shape``."""
        p = next(self.parameters())
        x = torch.zeros((2, *input_shape), device=p.device, dtype=p.dtype)
        return [tuple(h.shape[1:]) for h in self.forward(x)]
