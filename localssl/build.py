"""Assemble the components of a run from its config: dataset info, encoder, views, rule."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.config import RunConfig
from localssl.data import DatasetInfo, data_info
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.partial_build import builds, only_layers, to_device
from localssl.registry import MODELS, RULES, VIEWS
from localssl.rules.base import Rule
from localssl.views.base import encoder_input_shape


@dataclasses.dataclass
class Components:
    info: DatasetInfo
    encoder: LayeredEncoder
    views: nn.Module
    rule: Rule
    layers: list[LayerSpec]


def input_shape(cfg: RunConfig, info: DatasetInfo) -> tuple[int, ...]:
    """Shape of one encoder input row: the view generator's ``input_shape(cfg, info)`` when it
    declares one (:class:`~localssl.views.base.CustomInputShape`: grey 16×16 patches, audio windows),
    else the dataset's ``(C, H, W)``."""
    return encoder_input_shape(VIEWS.get(cfg.views.name).builder, cfg.views, info)


def layer_specs(encoder: LayeredEncoder, info: DatasetInfo, shape: tuple[int, ...] | None = None) -> list[LayerSpec]:
    shape = shape or (info.channels, info.image_size, info.image_size)
    shapes = encoder.output_shapes(shape)
    kernels = list(info.pool_kernels) if len(info.pool_kernels) == len(shapes) else [None] * len(shapes)
    inputs = [shape, *shapes[:-1]]
    ar = set(encoder.autoregressive_layers)
    return [LayerSpec(i, s, k, inputs[i], i in ar) for i, (s, k) in enumerate(zip(shapes, kernels))]


def build_encoder(cfg: RunConfig, info: DatasetInfo) -> LayeredEncoder:
    return MODELS.get(cfg.model.name).builder(cfg.model, in_channels=input_shape(cfg, info)[0])


def check_input_fits(cfg: RunConfig, info: DatasetInfo) -> None:
    """Pass one input of the run's shape through a freshly built encoder (the global RNG untouched):
    images too small for it (VGG-6 halves them four times: 16 px at least) fail here, naming the
    shape and the fix, before a run directory is written."""
    shape = input_shape(cfg, info)
    with torch.random.fork_rng(devices=[]):
        encoder = build_encoder(cfg, info)
    try:
        with torch.no_grad():
            encoder.output_shapes(shape)
    except RuntimeError as err:
        raise ValueError(
            f"model {cfg.model.name} cannot take inputs of shape {shape} ({err}); "
            "resize the images with data.image_size=N (VGG-6: N >= 16)"
        ) from err


def build_network(cfg: RunConfig, info: DatasetInfo) -> tuple[LayeredEncoder, list[LayerSpec], Rule]:
    """The encoder, its layers' specs and the rule, from the global generator as it is. Inside
    :func:`~localssl.partial_build.only_layers` only those layers and their objectives are built (the others
    are ``meta`` tensors), with the same weights; under ``torch.device("meta")``, none (shapes only)."""
    encoder = build_encoder(cfg, info)
    shapes_of = encoder
    if not all(builds(i) for i in range(len(encoder))):  # a layer-parallel stage: shapes from a meta encoder
        with torch.random.fork_rng(devices=[]), only_layers(None), torch.device("meta"):
            shapes_of = build_encoder(cfg, info)
    layers = layer_specs(shapes_of, info, input_shape(cfg, info))
    rule = RULES.get(cfg.rule.name).builder(cfg.rule, cfg.objective, layers)
    return encoder, layers, rule


def build(cfg: RunConfig, device: torch.device | str = "cpu") -> Components:
    """Seeded construction: the same config and seed give the same initial weights (for a layer-parallel
    stage's layers too: :func:`build_network`)."""
    info = data_info(cfg.data)
    torch.manual_seed(cfg.train.seed)
    encoder, layers, rule = build_network(cfg, info)
    views = VIEWS.get(cfg.views.name).builder(cfg.views, info)
    return Components(info, to_device(encoder, device), views.to(device), to_device(rule, device), layers)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return torch.device(name)
