"""A run's checkpointed encoder, frozen, with the probe's read-out of its layers (used by both probe protocols)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from localssl.build import build_encoder
from localssl.checkpoint import checkpoint_meta, read_run_checkpoint
from localssl.config import RunConfig
from localssl.data import data_info
from localssl.evaluate.features import FeatureExtractor, OwnProbeFeatures, parse_layers
from localssl.evaluate.pretrained import read_exported
from localssl.registry import VIEWS
from localssl.train.fast_path import autocast_for, memory_format_for, readout_precision
from localssl.views.base import Normalize
from localssl.views.readout import LayerReadout


def encoder_state(cfg: RunConfig, run_dir: Path, weights: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The encoder's weights and what a probe records of them (:func:`~localssl.checkpoint.checkpoint_meta`):
    the run's newest verified checkpoint, or the exported file ``weights`` (its hash checked, no pickle read)."""
    if weights is not None:
        exported = read_exported(weights)
        return exported.tensors, exported.meta()
    ckpt, path = read_run_checkpoint(Path(run_dir), cfg)
    return ckpt["encoder"], checkpoint_meta(ckpt, path)


def frozen_extractor(
    cfg: RunConfig, run_dir: Path, device: torch.device, weights: Path | None = None
) -> tuple[LayerReadout, dict[str, Any]]:
    """The run's checkpointed encoder (or the exported file ``weights``), frozen, with its probe read-out
    (``probe.layers``, pooled with the dataset's kernels; a view's own ``feature_extractor`` when it has one,
    e.g. ``patch_grid``), and :func:`~localssl.checkpoint.checkpoint_meta` with ``"layers"`` (1-based) and
    ``"readout_precision"``. The read-out runs in ``probe.precision``: by default (``run``) on the run's fast path
    (:func:`~localssl.train.fast_path.readout_precision`, channels_last with it), else in the precision named, so
    that a number read out elsewhere (a shipped card's) can be reproduced on any machine."""
    info = data_info(cfg.data)
    state, meta = encoder_state(cfg, run_dir, weights)
    encoder = build_encoder(cfg, info)
    encoder.load_state_dict(state)
    encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    layers = parse_layers(cfg.probe.layers, len(encoder))
    views = VIEWS.get(cfg.views.name).builder(cfg.views, info)
    if isinstance(views, OwnProbeFeatures):  # e.g. patch_grid: encode patches, average over the grid
        extractor = views.feature_extractor(encoder, layers).to(device)
    else:
        kernels = list(info.pool_kernels) if len(info.pool_kernels) == len(encoder) else [None] * len(encoder)
        extractor = FeatureExtractor(encoder, Normalize(info.mean, info.std), kernels, layers).to(device)
    precision = readout_precision(cfg.train, device) if cfg.probe.precision == "run" else cfg.probe.precision
    fast = dataclasses.replace(cfg.train, precision=precision, precision_requested=None)
    extractor.fast_path(autocast_for(precision, device), memory_format_for(fast, device))
    return extractor, {**meta, "layers": [i + 1 for i in layers], "readout_precision": precision}
