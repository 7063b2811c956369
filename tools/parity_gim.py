"""Regenerate ``tests/fixtures/parity/gim.json`` from a checkout of the authors' Greedy InfoMax code.

Greedy InfoMax (Löwe et al. 2019) in loeweX/Greedy_InfoMax: each gradient-isolated module's loss is
``InfoNCE_Loss`` (``GreedyInfoMax/vision/models/InfoNCE_Loss.py``, unmodified), called as
``ResNet_Encoder.forward`` calls it, ``loss(out, out)`` with the default ``skip_step=1``, on the module's
patch-grid output ``(b, C, 7, 7)`` (64-px crop, 16-px patches, stride 8: ``get_dataloader`` and
``ResNet_Encoder``). Flags of the paper's script ``vision_traineval.sh`` (``--grayscale
--download_dataset --save_dir``), i.e. the parser's defaults for the loss: ``--prediction_step 5
--negative_samples 16``, no ``--weight_init``; ``--model_splits 3`` is GIM, ``--model_splits 1`` the
end-to-end CPC baseline, the same loss on the last module only. localssl's ``gim`` preset is GIM on
VGG-6 (CLAPP 2021 Table 1), modules (1,2)(3,4)(5,6); ``cpc`` is one module. So the activities here have
the shapes of those modules' outputs at width 1/16 (layers 2, 4, 6: 16, 32, 64 channels).

``z`` (target) and ``c`` (context) are passed as two leaf tensors with the same values, so the fixture
holds the gradient with respect to each (``loss(out, out)``'s gradient is their sum). The loss draws its
negatives with ``torch.randint`` inside ``forward``: the script seeds torch before each call, records the
draws (by wrapping ``torch.randint``) and checks that ``replay_draws`` gives the same; the fixture keeps
the seed and the draws' sums, and the test replays them. Nothing of theirs is replaced: the module only
imports torch and ``GreedyInfoMax.utils.model_utils`` (torch and os). Not run by CI:
``python tools/parity_gim.py /path/to/Greedy_InfoMax`` (see tools/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch

LAYERS = {2: 16, 4: 32, 6: 64}  # gim's module outputs on VGG-6 at width 1/16 (cpc: layer 6 only)
GRID = (7, 7)  # patch grid of a 64-px crop: 16-px patches, stride 8
STEPS = 5  # --prediction_step (default); the target is k + 1 rows below the context (skip_step=1)
NEGATIVES = 16  # --negative_samples (default)
BATCH = 4  # images
SEED = 0  # activities and W_k
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity" / "gim.json"


def draw_seed(layer: int) -> int:
    return 2000 + layer


def seeded_inputs(seed: int = SEED) -> dict[int, dict]:
    """Per module-output layer: the activity grid ``h`` (B, C, 7, 7), non-negative, and the ``W_k`` as the
    authors store them (1×1 conv weights ``(C, C)`` acting on the target: ``u = cᵀ W_k z``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer, c in LAYERS.items():
        h = torch.randn(BATCH, c, *GRID, generator=g, dtype=torch.float64).abs()
        ws = [torch.randn(c, c, generator=g, dtype=torch.float64) / c for _ in range(STEPS)]
        out[layer] = {"h": h, "W": ws}
    return out


def replay_draws(seed: int, batch: int = BATCH, grid: tuple[int, int] = GRID) -> list[torch.Tensor]:
    """The negative indices ``InfoNCE_Loss.forward`` draws after ``torch.manual_seed(seed)``: per step k one
    ``torch.randint`` over the (row, column, image) positions of the target region (rows k+1 .. end),
    flattened in that order, ``NEGATIVES`` per position."""
    torch.manual_seed(seed)
    rows, cols = grid
    draws = []
    for k in range(1, STEPS + 1):
        n_flat = (rows - k - 1) * cols * batch
        draws.append(torch.randint(n_flat, (n_flat * NEGATIVES, 1), dtype=torch.long))
    return draws


def entry_index(shape: torch.Size) -> list[int]:
    """Five evenly spaced entries; on an activity grid ``(B, C, T, S)`` among rows 2 .. T - 3, the rows that
    are both a target and a context (the others get a gradient only through ``z`` or only through ``c``)."""
    flat = torch.arange(shape.numel())
    if len(shape) == 4:
        flat = flat.view(shape)[:, :, 2 : shape[2] - 2].flatten()
    return flat[torch.linspace(0, flat.numel() - 1, 5).round().long()].tolist()


def _grad_record(g: torch.Tensor) -> dict:
    index = entry_index(g.shape)
    return {"norm": float(g.norm()), "index": index, "value": g.flatten()[index].tolist()}


def main(checkout: str) -> None:
    from parity_clapp2021 import _RecordRandint  # tools/ is on sys.path when run as a script

    sys.path.insert(0, checkout)
    from GreedyInfoMax.vision.models import InfoNCE_Loss  # the authors' module, unmodified

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    # the fields InfoNCE_Loss reads from the parsed options (GIM_args / general_args defaults)
    opt = types.SimpleNamespace(
        negative_samples=NEGATIVES, prediction_step=STEPS, weight_init=False, device=torch.device("cpu")
    )
    fixture = {
        "preset": "gim",
        "reference": {
            "repo": "loeweX/Greedy_InfoMax",
            "commit": commit.strip(),
            "code": "GreedyInfoMax/vision/models/InfoNCE_Loss.py InfoNCE_Loss",
            "flags": "--prediction_step 5 --negative_samples 16 (defaults of vision_traineval.sh), skip_step=1",
        },
        "setup": {
            "batch": BATCH,
            "grid": GRID,
            "steps": STEPS,
            "negatives": NEGATIVES,
            "layers": {str(k): v for k, v in LAYERS.items()},
            "seed": SEED,
            "dtype": "float64",
        },
        "layers": [],
    }
    for layer, item in seeded_inputs().items():
        c = item["h"].shape[1]
        m = InfoNCE_Loss.InfoNCE_Loss(opt, in_channels=c, out_channels=c).double()
        for conv, w in zip(m.W_k, item["W"], strict=True):
            conv.weight.data.copy_(w.view(c, c, 1, 1))
        z = item["h"].clone().requires_grad_()
        ctx = item["h"].clone().requires_grad_()
        seed = draw_seed(layer)
        torch.manual_seed(seed)
        with _RecordRandint() as rec:
            loss = m(z, ctx, skip_step=1)
        replayed = replay_draws(seed)
        assert all(torch.equal(a, b) for a, b in zip(rec.draws, replayed, strict=True)), "replay_draws is stale"
        grads = torch.autograd.grad(loss, [z, ctx, *(conv.weight for conv in m.W_k)])
        fixture["layers"].append(
            {
                "layer": layer,
                "negatives": {"draw_seed": seed, "sums": [int(d.sum()) for d in rec.draws]},
                "loss": float(loss.detach()),
                "grad": {
                    "z": _grad_record(grads[0]),
                    "c": _grad_record(grads[1]),
                    "W": [_grad_record(g.view(c, c)) for g in grads[2:]],
                },
            }
        )
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/parity_gim.py /path/to/Greedy_InfoMax-checkout")
    main(sys.argv[1])
