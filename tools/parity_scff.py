"""Regenerate ``tests/fixtures/parity/scff.json`` from a checkout of the authors' SCFF code.

SCFF (Chen et al., Nat. Commun. 2025) in neurophysics-cnrsthales/contrastive-forward-forward,
``SCFF_CIFAR_Parallel.py`` (the CIFAR-10 script whose thresholds the ``scff`` preset uses): the layer
loss is written inline in ``train()``:

    G = mean_c relu(out)²   (per location, on the layer's output before its pool)
    L = mean softplus(a(θ₁ − G⁺)) + mean softplus(b(G⁻ − θ₂)) + λ · mean_b ‖G⁺_b‖₂   (a = b = 1)

This script runs that ``train()`` unmodified for one batch and one epoch on stand-in layers: each
layer's "network" returns seeded float64 pre-activations (one tensor for the positive input, one for
the negative), the optimizers record the gradients ``loss.backward()`` leaves on them, and
``torch.Tensor.backward`` is wrapped to record each layer's loss value. Everything else (``stdnorm``,
the negative draw, the loss, the layer loop) is the authors'. Thresholds ``θ₁``, ``θ₂`` and ``λ`` are the
script's defaults for its three layers, repeated for layers 4–6 as the preset does. The maps have the
shapes of localssl's VGG-6 at width 1/16 on 32-px images with ``model.output_before_pool=true`` (the
maps the official code scores). Not run by CI:

    python tools/parity_scff.py /path/to/contrastive-forward-forward [--commit SHA]

``--commit`` records the reference commit when the checkout's ``HEAD`` is not the one the file came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from torch import nn

SHAPES = ((8, 32, 32), (16, 32, 32), (16, 16, 16), (32, 16, 16), (64, 8, 8), (64, 4, 4))  # VGG-6 ×1/16, unpooled
BATCH = 4  # images
SCALE = 3.0  # pre-activation scale: mean goodness ≈ 4.5, between the thresholds
THRESHOLD_POS = (1.0, 4.0, 5.0, 5.0, 5.0, 5.0)  # --th1 default [1, 4, 5], layer 3's value for 4–6
THRESHOLD_NEG = (2.0, 5.0, 7.0, 7.0, 7.0, 7.0)  # --th2 default [2, 5, 7]
POS_L2 = (0.0008, 0.0004, 0.0016, 0.0016, 0.0016, 0.0016)  # --lamda default [0.0008, 0.0004, 0.0016]
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity" / "scff.json"


def seeded_inputs(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the pre-activations of the positive and the negative inputs, ``(B, C, H, W)`` each."""
    g = torch.Generator().manual_seed(seed)
    return [
        tuple(SCALE * torch.randn(BATCH, *shape, generator=g, dtype=torch.float64) for _ in range(2))
        for shape in SHAPES
    ]


def entry_index(numel: int) -> list[int]:
    return torch.linspace(0, numel - 1, 5).round().long().tolist()


class StandInLayer(nn.Module):
    """Returns the seeded positive pre-activation on the first call of a step and the negative on the
    second, as ``train()`` calls ``nets[i](x)`` then ``nets[i](x_neg)``."""

    def __init__(self, pos: torch.Tensor, neg: torch.Tensor, concat: bool) -> None:
        super().__init__()
        self.pos, self.neg = nn.Parameter(pos.clone()), nn.Parameter(neg.clone())
        self.concat = concat
        self.relu = nn.ReLU()
        self.act = nn.ReLU()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.pos if self.calls % 2 == 1 else self.neg


class RecordingOptimizer:
    """Keeps the gradients of the layer's loss instead of stepping."""

    def __init__(self, layer: StandInLayer) -> None:
        self.layer, self.grads = layer, None

    def zero_grad(self) -> None:
        self.layer.pos.grad = self.layer.neg.grad = None

    def step(self) -> None:
        self.grads = (self.layer.pos.grad.clone(), self.layer.neg.grad.clone())


def main(checkout: str, commit: str | None) -> None:
    for missing in ("torchvision", "optuna", "matplotlib", "matplotlib.pyplot"):  # module-level imports only
        try:
            __import__(missing)
        except ImportError:
            sys.modules[missing] = types.ModuleType(missing)
    sys.path.insert(0, checkout)
    import SCFF_CIFAR_Parallel as scff  # the authors' module, unmodified

    if commit is None:
        commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    inputs = seeded_inputs()
    layers = [StandInLayer(pos, neg, concat=(i == 0)) for i, (pos, neg) in enumerate(inputs)]
    optimizers = [RecordingOptimizer(layer) for layer in layers]
    losses: list[float] = []
    backward = torch.Tensor.backward

    def recording_backward(self: torch.Tensor, *args, **kwargs) -> None:
        losses.append(float(self.detach()))
        backward(self, *args, **kwargs)

    n = len(layers)
    images = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.Tensor.backward = recording_backward
    try:
        scff.train(
            layers, "cpu", optimizers, [None] * n, list(THRESHOLD_POS), list(THRESHOLD_NEG), (1, 2, 3), (1, 2, 3),
            1, [nn.Identity()] * n, 1, 1, list(POS_L2), 0, [10**9] * n, [nn.Identity()] * n, False, [], False,
            [(images, None)], None, None, None, True, True, False, 1, None, [1] * n,
        )  # fmt: skip
    finally:
        torch.Tensor.backward = backward
    out = []
    for i, (opt, loss) in enumerate(zip(optimizers, losses)):
        entry = {"layer": i + 1, "loss": loss, "grad_norm": {}, "grad_entries": {}}
        for name, grad in zip(("pos", "neg"), opt.grads):
            idx = entry_index(grad.numel())
            entry["grad_norm"][name] = float(grad.norm())
            entry["grad_entries"][name] = {"index": idx, "value": grad.flatten()[idx].tolist()}
        out.append(entry)
    fixture = {
        "preset": "scff",
        "reference": {
            "repo": "neurophysics-cnrsthales/contrastive-forward-forward",
            "commit": commit.strip(),
            "code": "SCFF_CIFAR_Parallel.py train() (layer loss inline), one batch, stand-in layers",
        },
        "setup": {
            "batch": BATCH,
            "shapes": SHAPES,
            "scale": SCALE,
            "threshold_pos": THRESHOLD_POS,
            "threshold_neg": THRESHOLD_NEG,
            "pos_l2": POS_L2,
            "seed": 0,
            "dtype": "float64",
        },
        "layers": out,
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="folder holding the authors' SCFF_CIFAR_Parallel.py")
    parser.add_argument("--commit", help="reference commit to record (default: the checkout's HEAD)")
    args = parser.parse_args()
    main(args.checkout, args.commit)
