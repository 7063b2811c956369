"""VGG-6 encoder of CLAPP (Illing et al. 2021, Table 2) and CLAPP++ (Delrocq et al. 2026, Table A1).

Six trainable layers, each ``3×3 conv (stride 1, pad 1) + ReLU`` with no batch norm, widths
128; 256, MaxPool 2; 256; 512, MaxPool 2; 1024, MaxPool 2; 1024, MaxPool 2. A layer's output is taken
*after* its max-pool. ``width`` multiplies every channel count (CPU runs use 1/4 or 1/8).

Forward-Forward family options (off by default): ``activity_norm`` normalises each layer's *input*
(``rms``: FF, ``std``: SCFF; see :mod:`localssl.models.norm`) for layers 2–6, and for layer 1 too with
``norm_image``; ``self_concat`` makes layer 1 SCFF's shared-weight convolution of the two channel halves
of ``[x, x']`` (Chen et al. 2025), reading a plain image ``x`` as ``[x, x]`` (the probe's input);
``output_before_pool`` takes each layer's output *before* its max-pool, which then opens the next layer
(the last layer's pool is dropped): the same network up to the last pool, but objectives and probe see the
unpooled ``ReLU(conv)`` map, where the official SCFF code computes its goodness.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.models.norm import ACTIVITY_NORMS, normalize_activity
from localssl.partial_build import build_layer
from localssl.registry import MODELS, ConfigError

VGG6_CHANNELS = (128, 256, 256, 512, 1024, 1024)
VGG6_POOL = (False, True, False, True, True, True)


@dataclasses.dataclass
class VGG6Config:
    name: str = "vgg6"
    width: float = 1.0
    activity_norm: str = "none"  # none | rms (Forward-Forward) | std (SCFF): applied to each layer's input
    norm_image: bool = False  # also normalise the image entering layer 1 (SCFF)
    self_concat: bool = False  # SCFF: layer 1 = one conv shared by both channel halves of [x, x']
    output_before_pool: bool = False  # a layer's output before its max-pool (the pool opens the next layer)

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width}")
        if self.activity_norm not in ACTIVITY_NORMS:
            raise ConfigError(f"model.activity_norm must be one of {ACTIVITY_NORMS}, got '{self.activity_norm}'")


class SharedHalvesConv2d(nn.Conv2d):
    """SCFF's first layer: ``conv(x) + conv(x')`` for an input ``[x, x']`` of ``2·in_channels`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 2 * self.in_channels:
            raise ValueError(
                f"a self-concatenating layer takes [x, x'] with {2 * self.in_channels} channels, got {x.shape[1]}"
            )
        a, b = x.split(self.in_channels, dim=1)
        return super().forward(a) + super().forward(b)


class ConvLayer(nn.Sequential):
    """One trainable layer: [MaxPool 2 of the input] [input normalisation] conv3×3 + ReLU (+ MaxPool 2)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        pool: bool,
        input_norm: str = "none",
        self_concat: bool = False,
        pool_input: bool = False,
    ) -> None:
        conv = SharedHalvesConv2d if self_concat else nn.Conv2d
        mods: list[nn.Module] = [conv(c_in, c_out, 3, padding=1), nn.ReLU()]
        if pool:
            mods.append(nn.MaxPool2d(2))
        super().__init__(*mods)
        self.input_norm = input_norm  # a name, not a module: normalisation has no parameters
        self.self_concat = self_concat
        self.pool_input = pool_input  # the previous layer's max-pool (VGG6Config.output_before_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_input:
            x = nn.functional.max_pool2d(x, 2)
        if self.self_concat and x.shape[1] == self[0].in_channels:
            x = torch.cat([x, x], dim=1)  # a plain image is the positive input [x, x]
        return super().forward(normalize_activity(x, self.input_norm))


@MODELS.register("vgg6", VGG6Config)
class VGG6(LayeredEncoder):
    def __init__(self, cfg: VGG6Config, in_channels: int = 3) -> None:
        channels = [max(1, round(c * cfg.width)) for c in VGG6_CHANNELS]
        layers = []
        c_in = in_channels
        before = cfg.output_before_pool
        for i, (c_out, pool) in enumerate(zip(channels, VGG6_POOL)):
            norm = cfg.activity_norm if (i > 0 or cfg.norm_image) else "none"
            pool_input = before and i > 0 and VGG6_POOL[i - 1]
            concat = cfg.self_concat and i == 0
            make = functools.partial(ConvLayer, c_in, c_out, pool and not before, norm, concat, pool_input=pool_input)
            layers.append(build_layer(i, make))  # a layer-parallel stage builds only its own
            c_in = c_out
        super().__init__(layers)
        self.channels = channels

    @staticmethod
    def output_hw(image_size: int) -> list[int]:
        """Spatial side of each layer's output for a square input."""
        out, side = [], image_size
        for pool in VGG6_POOL:
            side = side // 2 if pool else side
            out.append(side)
        return out
