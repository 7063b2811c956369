"""Encoders for the Random Hierarchy Model (Cagnetta et al., PRX 2024, Sec. II–V).

``rhm_cnn``: the *hierarchical* CNN of the RHM papers — ``depth`` layers of 1-D convolution with
kernel = stride = ``s`` (non-overlapping patches, so layer ``k`` at position ``t`` sees exactly the
``s^k`` tokens under one level-``(L−k)`` node) + ReLU. With ``depth = L`` the top layer has one position.
``rhm_mlp``: a fully connected ReLU network on the flattened one-hot input, the contrast case that
ignores the tree's locality.

Inputs are one-hot tokens, channels first: ``(N, v, s^L)`` (:func:`localssl.data.rhm.one_hot`).
``init_scale`` multiplies PyTorch's default initial weights (an axis of the RHM experiments);
``activation`` is ``relu`` (the papers') or ``leaky_relu`` (slope 0.1: units cannot die, which matters for
variance-regularised objectives such as LPL, whose dead units receive no gradient).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.registry import MODELS, ConfigError


def _check(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")


ACTIVATIONS = ("relu", "leaky_relu")


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.1)


def _rescale(module: nn.Module, init_scale: float) -> None:
    if init_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(init_scale)


@dataclasses.dataclass
class RHMCNNConfig:
    name: str = "rhm_cnn"
    width: int = 256  # channels of every layer
    depth: int = 3  # number of conv layers (= L for a single top position)
    s: int = 2  # kernel = stride (the RHM branching factor)
    bias: bool = True
    init_scale: float = 1.0  # multiplies the default initial weights and biases
    activation: str = "relu"  # relu | leaky_relu

    def __post_init__(self) -> None:
        for key in ("width", "depth", "s"):
            _check(key, getattr(self, key))
        if self.s < 2:
            raise ConfigError(f"model.s must be >= 2 (kernel = stride = s), got {self.s}")
        if not self.init_scale > 0:
            raise ConfigError(f"model.init_scale must be > 0, got {self.init_scale}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {ACTIVATIONS}, got '{self.activation}'")


class PatchConv(nn.Sequential):
    """One layer: ``Conv1d(kernel=s, stride=s)`` + ReLU, i.e. the same dense map on every patch."""

    def __init__(self, c_in: int, c_out: int, s: int, bias: bool, activation: str = "relu") -> None:
        super().__init__(nn.Conv1d(c_in, c_out, s, stride=s, bias=bias), _activation(activation))
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] % self.s:
            raise ValueError(
                f"rhm_cnn layer expects (N, C, T) with T a multiple of s={self.s}, got {tuple(x.shape)}; "
                "the input length must be s^L with L >= model.depth"
            )
        return super().forward(x)


@MODELS.register("rhm_cnn", RHMCNNConfig)
class RHMCNN(LayeredEncoder):
    def __init__(self, cfg: RHMCNNConfig, in_channels: int = 8) -> None:
        layers, c_in = [], in_channels
        for _ in range(cfg.depth):
            layers.append(PatchConv(c_in, cfg.width, cfg.s, cfg.bias, cfg.activation))
            c_in = cfg.width
        super().__init__(layers)
        self.cfg = cfg
        _rescale(self, cfg.init_scale)


@dataclasses.dataclass
class RHMMLPConfig:
    name: str = "rhm_mlp"
    width: int = 256
    depth: int = 3
    input_length: int = 8  # s^L tokens: the first layer sees v · input_length inputs
    bias: bool = True
    init_scale: float = 1.0
    activation: str = "relu"  # relu | leaky_relu

    def __post_init__(self) -> None:
        for key in ("width", "depth", "input_length"):
            _check(key, getattr(self, key))
        if not self.init_scale > 0:
            raise ConfigError(f"model.init_scale must be > 0, got {self.init_scale}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {ACTIVATIONS}, got '{self.activation}'")


class DenseLayer(nn.Sequential):
    """``Linear`` + ReLU on the flattened input."""

    def __init__(self, d_in: int, d_out: int, bias: bool, activation: str = "relu") -> None:
        super().__init__(nn.Flatten(), nn.Linear(d_in, d_out, bias=bias), _activation(activation))
        self.d_in = d_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.d_in:
            raise ValueError(
                f"rhm_mlp layer expects {self.d_in} inputs per sample, got shape {tuple(x.shape)}; "
                "set model.input_length to s^L of the RHM"
            )
        return super().forward(x)


@MODELS.register("rhm_mlp", RHMMLPConfig)
class RHMMLP(LayeredEncoder):
    def __init__(self, cfg: RHMMLPConfig, in_channels: int = 8) -> None:
        layers, d_in = [], in_channels * cfg.input_length
        for _ in range(cfg.depth):
            layers.append(DenseLayer(d_in, cfg.width, cfg.bias, cfg.activation))
            d_in = cfg.width
        super().__init__(layers)
        self.cfg = cfg
        _rescale(self, cfg.init_scale)
