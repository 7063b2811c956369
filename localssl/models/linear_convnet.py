"""The 4-layer linear convnet of CLAPP++ Fig. 4B (Delrocq et al. 2026, Sec. 3.3, App. B).

Each layer is a ``k×k`` convolution with stride ``k`` (kernel 2, stride 2: non-overlapping), 32
channels, no bias, no nonlinearity by default; weights orthonormal (the matrix ``(C_out, C_in·k·k)``
has orthonormal rows, or columns for the widening first layer). On 16×16 MNIST crops the four
layers' feature maps are 8×8, 4×4, 2×2 and 1×1.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.models.mlp import ACTIVATIONS, orthonormal_
from localssl.registry import MODELS, ConfigError


@dataclasses.dataclass
class LinearConvNetConfig:
    name: str = "linear_convnet"
    channels: int = 32
    depth: int = 4
    kernel: int = 2
    stride: int = 2
    activation: str = "linear"  # linear | relu
    bias: bool = False
    init: str = "orthonormal"  # orthonormal | standard

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {ACTIVATIONS}, got '{self.activation}'")
        if self.init not in ("orthonormal", "standard"):
            raise ConfigError(f"model.init must be orthonormal or standard, got '{self.init}'")
        if min(self.channels, self.depth, self.kernel, self.stride) < 1:
            raise ConfigError("model.channels, depth, kernel and stride must be >= 1")


@MODELS.register("linear_convnet", LinearConvNetConfig)
class LinearConvNet(LayeredEncoder):
    def __init__(self, cfg: LinearConvNetConfig, in_channels: int = 1) -> None:
        layers = []
        c_in = in_channels
        for _ in range(cfg.depth):
            conv = nn.Conv2d(c_in, cfg.channels, cfg.kernel, cfg.stride, bias=cfg.bias)
            if cfg.init == "orthonormal":
                orthonormal_(conv.weight)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
            layers.append(nn.Sequential(conv, nn.ReLU() if cfg.activation == "relu" else nn.Identity()))
            c_in = cfg.channels
        super().__init__(layers)
        self.cfg = cfg
