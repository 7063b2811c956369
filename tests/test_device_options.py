"""The CUDA-path training options exercised on CPU: ``train.precision=bf16`` (autocast, which CPU supports),
``train.channels_last`` and ``train.compile``, one tiny step of every preset.

Reference: the same step in fp32 with the default memory layout and eager execution, from the same weights,
batch and random draws. bf16 keeps 8 mantissa bits (relative rounding 2⁻⁸ ≈ 0.4 % per operation), so its
losses may differ by a few percent; channels_last and compile change only the memory layout and kernel
fusion, so they must match fp32 eager to float rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from localssl.config import available_presets, load_config
from localssl.data import ImageData, data_info
from localssl.train import Trainer

# plain SGD (momentum 0 on the first step): the update is -lr · gradient, so comparing updates compares
# gradients (Adam's first step is about ±lr per weight and would amplify rounding of near-zero gradients)
SMALL = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu", "train.progress=false", "train.optimizer=sgd"]
AUDIO = ["data.name=synthetic-speech", "views.window=3200", "objective.steps=4", "data.train_subset=8"]
AUDIO_PRESETS = {"cpc-audio", "clapp-audio", "clapp-audio-eprop"}


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in trainer.comp.encoder.state_dict().items()}


def _step(preset: str, *extra: str) -> tuple[dict[str, float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One optimizer step from seed 0 on a fixed batch: (losses, initial weights, trained weights)."""
    torch.manual_seed(0)
    if preset in AUDIO_PRESETS:
        trainer = Trainer(load_config(preset, [*SMALL, *AUDIO, *extra]), Path("unused"))
    else:
        cfg = load_config(preset, [*SMALL, *extra])
        side = data_info(cfg.data).image_size  # the preset's own data set's (STL-10's 96 px for GIM and CPC)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (8, 3, side, side), dtype=torch.uint8, generator=g)
        data = ImageData(images, torch.randint(0, 10, (8,), generator=g), [])
        trainer = Trainer(cfg, Path("unused"), data=data)
    init = _weights(trainer)
    torch.manual_seed(1)
    metrics = trainer.optimize(trainer.make_views(torch.arange(4)))
    losses = {k: float(v) for k, v in metrics.items() if k.startswith("loss")}
    return losses, init, _weights(trainer)


def _update_cosine(init: dict, a: dict, b: dict) -> float:
    """Cosine between two steps' weight updates (with SGD: between their gradients)."""
    da = torch.cat([(a[k] - init[k]).flatten() for k in init])
    db = torch.cat([(b[k] - init[k]).flatten() for k in init])
    return float(torch.nn.functional.cosine_similarity(da, db, dim=0))


def _close(a: dict[str, float], b: dict[str, float], rel: float) -> list[str]:
    assert a.keys() == b.keys()
    return [f"{k}: {a[k]:.6f} vs {b[k]:.6f}" for k in a if abs(a[k] - b[k]) > rel * max(abs(a[k]), 1e-2)]


DEFAULT_SUITE = {"clapp++", "gim", "cpc-audio", "vicreg", "supervised"}  # a few seconds; the rest: -m slow


@pytest.mark.parametrize(
    "preset", [p if p in DEFAULT_SUITE else pytest.param(p, marks=pytest.mark.slow) for p in available_presets()]
)
def test_bf16_channels_last_step_matches_fp32(preset):
    ref_losses, init_w, ref_w = _step(preset, "train.precision=fp32", "train.channels_last=false")
    losses, _, w = _step(preset, "train.precision=bf16", "train.channels_last=true")
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert not _close(ref_losses, losses, rel=0.05), _close(ref_losses, losses, rel=0.05)
    assert all(torch.isfinite(v).all() for v in w.values())
    # the step moved the weights the way fp32 did: the update directions agree (cosine over all weights)
    if any((ref_w[k] != init_w[k]).any() for k in init_w):  # the random preset leaves the encoder untouched
        assert (
            _update_cosine(init_w, ref_w, w) > 0.7
        )  # measured: cpc 0.78, gim and hinge-cpc 0.92, others higher; unrelated: ≈0


def test_channels_last_alone_matches_fp32_to_rounding():
    ref_losses, init, ref_w = _step("clapp++", "train.precision=fp32", "train.channels_last=false")
    losses, _, w = _step("clapp++", "train.precision=fp32", "train.channels_last=true")
    assert not _close(ref_losses, losses, rel=1e-4)
    assert _update_cosine(init, ref_w, w) > 0.999


@pytest.mark.slow
def test_compile_step_matches_eager():
    """``train.compile`` (torch.compile of every layer, inductor on CPU; compiling takes about 4 min on the
    shared 2-core CPU, hence slow) gives the eager step's numbers (in fp32: the comparison is to rounding)."""
    ref_losses, init, ref_w = _step("clapp++", "train.precision=fp32", "train.compile=false")
    losses, _, w = _step("clapp++", "train.precision=fp32", "train.compile=true")
    assert not _close(ref_losses, losses, rel=1e-4), _close(ref_losses, losses, rel=1e-4)
    assert _update_cosine(init, ref_w, w) > 0.999
