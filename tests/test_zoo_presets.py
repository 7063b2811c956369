"""Every preset of the rule zoo trains on CIFAR-10 images at a CPU scale.

* default suite: after a few steps the loss on one fixed batch (same images, same augmentation draw)
  has decreased (CIFAR-10 JPEG subset shipped with the package, ``cifar10-mini``; VGG-6 width 1/32,
  256 images, batch 32: 8 steps);
* slow suite (``-m slow``, about 10 min per preset on a shared 2-core CPU): at the budget of
  ``localssl reproduce zoo-cifar10 --scale cpu`` (CIFAR-10 JPEG copy, width 1/8, 4000 images × 2 epochs, batch 64,
  all-layer probe on 5000 labelled images, full test set) the probe beats the same encoder at random
  init by a margin. At smaller budgets no rule here — nor the core's ``clapp++`` — is reliably above
  random init (random conv features pooled over all layers are a strong baseline), so this check
  cannot be fast. At this budget too every preset measured at or below its random init (numbers
  below): the check is a strict ``xfail`` per preset, so that a preset that starts to learn useful
  features at this budget shows up as a failure to update.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from localssl.config import load_config
from localssl.data import ImageData, load_split
from localssl.evaluate.probe import probe
from localssl.train import Trainer, pretrain, resolve_config

DATA = "cifar10-mini"
COMMON = [f"data.name={DATA}", "train.batch_size=32", "train.progress=false", "train.log_every=1000"]
PRESETS = ["ff", "phyll", "scff", "lpl", "vicreg"]
MARGIN = 0.02  # probe accuracy above random init (10000 test images: standard error ≈ 0.005)
SHARED_DATA = next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()),
    Path(os.environ.get("LOCALSSL_DATA", "data")),
)
# Measured at this budget (with benchmarks/zoo_cifar10.py, now `localssl reproduce zoo-cifar10 --scale cpu`; probe
# test accuracy, %, trained vs. the same encoder at init; the core's clapp++ scores 51.06 vs 52.67 there too).
KNOWN_FAILURES = {
    "ff": "44.62 vs 52.19: the label code in the image corner is invisible to most of a conv layer; hidden "
    "layers' loss stays at 2 log 2 (no positive/negative discrimination)",
    "phyll": "52.38 vs 52.73 after 2 epochs of 4000 images",
    "scff": "51.36 vs 51.82 after 2 epochs of 4000 images",
    "lpl": "43.68 vs 52.67 after 2 epochs of 4000 images (the paper trains 800 epochs, batch 1024)",
    "vicreg": "44.23 vs 52.67 after 2 epochs of 4000 images",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar() -> ImageData:
    train = load_split(DATA, "train")  # stored sorted by class
    return train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:256])


def fixed_batch_loss(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor) -> float:
    torch.manual_seed(1234)
    metrics = trainer.comp.rule.step(trainer.comp.encoder, trainer.comp.views(images, labels))
    trainer.optimizer.zero_grad(set_to_none=True)
    return sum(float(v) for k, v in metrics.items() if k.startswith("loss"))


@pytest.mark.parametrize("preset", PRESETS)
def test_loss_decreases(preset, cifar):
    cfg = resolve_config(load_config(preset, [*COMMON, "model.width=0.03125", "train.epochs=1"]))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, data=cifar)
        batch = cifar.images[:32], cifar.labels[:32]
        before = fixed_batch_loss(trainer, *batch)
        trainer.fit()
        after = fixed_batch_loss(trainer, *batch)
    assert after < before, (before, after)


def _bench_probe(preset: str, out: Path, epochs: int) -> float:
    """The budget of ``localssl reproduce zoo-cifar10 --scale cpu`` on the CIFAR-10 JPEG copy."""
    if not (SHARED_DATA / "cifar10-jpeg.zip").exists():
        pytest.skip(f"needs the CIFAR-10 JPEG copy at {SHARED_DATA}")
    overrides = [
        "data.name=cifar10",
        f"data.root={SHARED_DATA}",
        "data.train_subset=4000",
        "model.width=0.125",
        f"train.epochs={epochs}",
        "train.batch_size=64",
        "train.progress=false",
        f"out_dir={out}",
    ]
    run_dir = pretrain(load_config(preset, overrides))
    result = probe(run_dir, ["probe.train_subset=5000", "probe.epochs=30", "probe.val_size=1000"])
    return result["test_acc_pct"] / 100  # a fraction, as MARGIN


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[p])) if p in KNOWN_FAILURES else p
        for p in PRESETS
    ],
)
def test_probe_beats_random_init(preset, tmp_path):
    """All-layer linear probe (the library's protocol) against the same encoder at its random init
    (the preset with ``train.epochs=0``: same seed, same architecture, activity normalisation included)."""
    at_init = _bench_probe(preset, tmp_path / "init", epochs=0)
    trained = _bench_probe(preset, tmp_path / "trained", epochs=2)
    assert trained > at_init + MARGIN, (at_init, trained)
