"""Peak RSS of the honest probe's feature storage at width 1/8 on CIFAR-10: D = 4096 fp32 features of 45 000
train, 5000 validation and 10 000 test images, the extraction before 5903c00 (each split's batches in a list,
then ``torch.cat``) vs ``FeatureExtractor.extract`` now (the output allocated once, filled batch by batch).
The encoder is replaced by a stand-in returning D-wide features (no compute), so only the storage differs;
the uint8 images (60 000 x 3 x 32 x 32) are held as in the probe. Run each mode in its own process:

    python benchmarks/probe_feature_memory.py old
    python benchmarks/probe_feature_memory.py new
"""

from __future__ import annotations

import resource
import sys

import torch
from torch import nn

from localssl.evaluate.features import FeatureExtractor

D = 4096


class StandIn(FeatureExtractor):
    """``FeatureExtractor`` whose features are D ones per image (no encoder compute)."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.encoder = nn.Linear(1, 1)  # extract() reads the device from the encoder's parameters

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(images), D)


def old_extract(fx: FeatureExtractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The extraction before 5903c00: a list of batches, then one concatenated copy."""
    out = [fx.forward(images[s : s + batch_size]).to("cpu", torch.float32) for s in range(0, len(images), batch_size)]
    return torch.cat(out)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "new"
    if mode not in ("old", "new"):
        raise SystemExit("usage: probe_feature_memory.py old|new")
    torch.set_num_threads(1)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8)
    test = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8)
    base = peak_mb()
    fx = StandIn()
    extract = (lambda x: old_extract(fx, x)) if mode == "old" else fx.extract
    perm = torch.randperm(50000)
    feats = [extract(images[perm[5000:]]), extract(images[perm[:5000]]), extract(test)]
    held = sum(f.numel() * 4 for f in feats) / 2**20
    print(f"{mode}: peak RSS {peak_mb():.0f} MB (before extraction {base:.0f} MB; features held {held:.0f} MB)")


if __name__ == "__main__":
    main()
