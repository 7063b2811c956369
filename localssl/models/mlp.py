"""Multi-layer perceptrons for the theory of CLAPP++ (Delrocq et al. 2026, Sec. 3, App. B).

``h_l = ρ(W_l h_{l−1})`` with ``ρ`` = ReLU or the identity (a *deep linear network*). The input
(an image or a crop) is flattened. Initialisations:

* ``standard`` — PyTorch's default ``nn.Linear`` init ("non-orthogonal W" in Fig. 2);
* ``orthonormal`` — every weight matrix with orthonormal rows (``W Wᵀ = I``) or, for a widening layer,
  orthonormal columns; layers 2..L must be square (Theorem 3.1's condition);
* ``semi_orthonormal`` — the same construction without the square check: with shrinking widths
  (128 → 4, Fig. 3A) every ``W_l`` has orthonormal rows (Theorem 3.3's condition).

Fig. 2/3A use bias-free linear nets of width 128; Fig. 3B a 6-layer ReLU MLP of width 512 with biases.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.registry import MODELS, ConfigError

INITS = ("standard", "orthonormal", "semi_orthonormal")
ACTIVATIONS = ("relu", "linear")


@dataclasses.dataclass
class MLPConfig:
    name: str = "mlp"
    in_features: int = 196  # flattened input size (14×14 MNIST crops)
    widths: list[int] = dataclasses.field(default_factory=lambda: [128] * 6)
    activation: str = "relu"  # relu | linear (deep linear network)
    bias: bool = True
    init: str = "standard"  # standard | orthonormal | semi_orthonormal
    last_activation: bool = True  # apply ρ after the top layer too (official theory code)

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        if not self.widths or min(self.widths) < 1 or self.in_features < 1:
            raise ConfigError(f"model.widths must be positive layer sizes, got {self.widths}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {ACTIVATIONS}, got '{self.activation}'")
        if self.init not in INITS:
            raise ConfigError(f"model.init must be one of {INITS}, got '{self.init}'")
        if self.init == "orthonormal" and len(set(self.widths)) > 1:
            raise ConfigError(
                f"model.init=orthonormal needs square weights above the first layer (equal widths), got "
                f"{self.widths}; use model.init=semi_orthonormal for changing widths"
            )


def orthonormal_(weight: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows (``W Wᵀ = I``) when ``W`` has no more rows than columns, else orthonormal
    columns; a conv kernel is treated as the matrix ``(C_out, C_in·k·k)``."""
    return nn.init.orthogonal_(weight)


class DenseLayer(nn.Module):
    """One trainable layer: (flatten) → linear → ρ."""

    def __init__(self, d_in: int, d_out: int, activation: str, bias: bool, flatten: bool) -> None:
        super().__init__()
        self.flatten = flatten
        self.linear = nn.Linear(d_in, d_out, bias=bias)
        self.act = nn.ReLU() if activation == "relu" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.flatten(1)
            if x.shape[1] != self.linear.in_features:
                raise ValueError(
                    f"the MLP expects inputs of {self.linear.in_features} values, got {x.shape[1]}; "
                    "set model.in_features to the (crop) size, e.g. 196 for 14×14 crops"
                )
        return self.act(self.linear(x))


@MODELS.register("mlp", MLPConfig)
class MLP(LayeredEncoder):
    def __init__(self, cfg: MLPConfig, in_channels: int = 1) -> None:
        dims = [cfg.in_features, *cfg.widths]
        layers = []
        for i in range(len(cfg.widths)):
            act = cfg.activation if (i < len(cfg.widths) - 1 or cfg.last_activation) else "linear"
            layers.append(DenseLayer(dims[i], dims[i + 1], act, cfg.bias, flatten=i == 0))
        super().__init__(layers)
        self.cfg = cfg
        if cfg.init != "standard":
            for layer in layers:
                orthonormal_(layer.linear.weight)
                if layer.linear.bias is not None:
                    nn.init.zeros_(layer.linear.bias)

    def output_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """An MLP's layer sizes do not depend on the image size (its input is a flattened crop)."""
        return [(w,) for w in self.cfg.widths]
