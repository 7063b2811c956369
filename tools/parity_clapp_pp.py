"""Regenerate the CLAPP++ family's parity fixtures from a checkout of the authors' code.

Writes ``tests/fixtures/parity/{clapp++,clapp++nospatial,clapp++dfb,bp-clapp++}.json``: the layer
losses of zihan-wu/local-SSL's ``CPLoss`` (``vision/models/SSLLoss.py``, unmodified) with the flags of
the paper's scripts (``scripts/clapp_cifar.sh``, ``scripts/clapp_stl10.sh``), at the activity shapes of
the official VGG-6 (128-256-256-512-1024-1024 channels) at width 1/16, for 32-px (CIFAR-10) and 96-px
(STL-10) images:

* ``clapp++``: ``--asymmetric_W_pred --customize_loss_pool K`` (same-layer reference);
* ``clapp++nospatial``: ``--asymmetric_W_pred`` (no ``--customize_loss_pool``: global average);
* ``clapp++dfb``: ``... --customize_fb_idx 6-6-6-6-6-6`` (top-layer reference);
* ``bp-clapp++``: ``--asymmetric_W_pred --ete_training --customize_loss_pool 2`` (CIFAR-10; STL-10: 6),
  the top layer only, whose 2×2 (6×6) map that kernel pools to one location.

K is the paper's Table A2 kernels 4-4-4-2-2-1 on 32-px images (the script's 12-12-12-6-6-3 cannot pool
layers 5-6 of a 32-px image) and the script's 12-12-12-6-6-3 on 96-px images. The negative draws are
fixed with ``--unified_random_sampling`` (one seeded index vector for every layer; the CIFAR-10 script
draws one per layer, which changes which rows are negatives, not the loss). Seeded float64 activities,
prediction matrices and negative indices (:func:`seeded_inputs`, shared with the test) go into
``CPLoss``; the fixture holds each layer's loss, the gradient norms with respect to the layer's
activity ``h`` and its matrix ``B``, and five gradient entries of each.
Not run by CI: ``python tools/parity_clapp_pp.py /path/to/local-SSL`` (see tools/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch

CHANNELS = (8, 16, 16, 32, 64, 64)  # the official VGG-6, 128-256-256-512-1024-1024 channels, at width 1/16
DOWNSAMPLE = (1, 2, 2, 4, 8, 16)  # max-pools before each layer's output: side = image // this
SIZES = {  # dataset -> (image side, CLAPP++ pool kernels per layer, --ete_training's top-layer kernel)
    "cifar10": (32, (4, 4, 4, 2, 2, 1), 2),
    "stl10": (96, (12, 12, 12, 6, 6, 3), 6),
}
PRESETS = {  # preset -> (reference, spatial pooling), as the paper's scripts set them
    "clapp++": ("same", True),
    "clapp++nospatial": ("same", False),
    "clapp++dfb": ("top", True),
    "bp-clapp++": ("ete", False),
}
BATCH = 4  # images; 2 × BATCH rows (two SimCLR views)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"


def shapes(dataset: str) -> list[tuple[int, int, int]]:
    side = SIZES[dataset][0]
    return [(c, side // d, side // d) for c, d in zip(CHANNELS, DOWNSAMPLE)]


def pooled_dim(shape: tuple[int, int, int], kernel: int | None) -> int:
    c, h, w = shape
    return c if kernel is None else c * (h // kernel) * (w // kernel)


def layout(preset: str, dataset: str) -> list[dict]:
    """The losses the preset computes: one per trained layer (0-based), its reference layer and kernel."""
    reference, spatial = PRESETS[preset]
    n = len(CHANNELS)
    if reference == "ete":
        return [{"layer": n - 1, "ref": n - 1, "kernel": None}]
    kernels = SIZES[dataset][1] if spatial else [None] * n
    return [
        {"layer": i, "ref": i if reference == "same" else n - 1, "kernel": kernels[i], "ref_kernel": kernels[-1]}
        for i in range(n)
    ]


def seeded_inputs(preset: str, dataset: str, seed: int = 0) -> dict:
    """Activities ``h_l`` (2B rows, non-negative as after a ReLU), one ``B`` per loss, negative indices.

    At this scale the scores spread over several units, so some hinge terms are active and some clipped."""
    g = torch.Generator().manual_seed(seed)
    shp = shapes(dataset)
    hs = [torch.randn(2 * BATCH, *s, generator=g, dtype=torch.float64).abs() for s in shp]
    bs = []
    for item in layout(preset, dataset):
        d_target = pooled_dim(shp[item["layer"]], item["kernel"])
        ref_kernel = item["kernel"] if item["ref"] == item["layer"] else item["ref_kernel"]
        d_ref = pooled_dim(shp[item["ref"]], ref_kernel)
        bs.append(torch.randn(d_target, d_ref, generator=g, dtype=torch.float64) / d_ref**0.5)
    rand_index = torch.randint(2 * BATCH, (2 * BATCH,), generator=g)
    return {"hs": hs, "B": bs, "rand_index": rand_index}


def entry_index(numel: int) -> list[int]:
    """Five gradient entries spread over the tensor (the first ones often share a pooling window)."""
    return torch.linspace(0, numel - 1, 5).round().long().tolist()


class _Opt(types.SimpleNamespace):
    def __getattr__(self, key: str) -> bool:  # every flag not set below is off in the paper's scripts
        return False


def reference_losses(cp_loss: type, preset: str, dataset: str) -> list[dict]:
    """Run the authors' ``CPLoss`` on :func:`seeded_inputs`; one record per loss."""
    reference, spatial = PRESETS[preset]
    _, kernels, ete_kernel = SIZES[dataset]
    n = len(CHANNELS)
    ete = reference == "ete"
    pool = str(ete_kernel) if ete else "-".join(map(str, kernels)) if spatial else None
    opt = _Opt(
        negative_samples=1, contrast_mode="hinge", model_splits=n, ete_training=ete,
        customize_fb_idx="-".join([str(n)] * n) if reference == "top" else None,
        customize_loss_pool=pool, predict_module_num="-1", device=torch.device("cpu"),
        unified_random_sampling=True, asymmetric_W_pred=True, update_proj_steps=0, pos_coeff=1.0, pred_decay=0,
    )  # fmt: skip
    x = seeded_inputs(preset, dataset)
    h_dims = [(2 * BATCH, *s) for s in shapes(dataset)]
    loss_module = cp_loss(opt, h_dims).double()
    assert len(loss_module.W_k) == len(x["B"])
    for w, b in zip(loss_module.W_k, x["B"]):
        assert w.weight.shape == b.shape, (w.weight.shape, b.shape)
        w.weight.data.copy_(b)
    hs = [h.clone().requires_grad_() for h in x["hs"]]
    out, _, _, _ = loss_module([hs[-1]] if ete else hs, rand_index=x["rand_index"].clone())
    losses = out["loss"][0]
    records = []
    for i, item in enumerate(layout(preset, dataset)):
        grads = torch.autograd.grad(losses[i], [hs[item["layer"]], loss_module.W_k[i].weight], retain_graph=True)
        record = {"layer": item["layer"] + 1, "loss": float(losses[i].detach()), "grad_norm": {}, "grad_entries": {}}
        for key, grad in zip(("h", "B"), grads):
            idx = entry_index(grad.numel())
            record["grad_norm"][key] = float(grad.norm())
            record["grad_entries"][key] = {"index": idx, "value": grad.flatten()[idx].tolist()}
        records.append(record)
    return records


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    torch.set_default_dtype(torch.float64)  # their per-layer loss buffer is torch.zeros(...): keep it float64
    from vision.models import SSLLoss  # the authors' module, unmodified

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    for preset in PRESETS:
        fixture = {
            "preset": preset,
            "reference": {
                "repo": "zihan-wu/local-SSL",
                "commit": commit.strip(),
                "code": "vision/models/SSLLoss.py CPLoss",
            },
            "setup": {"batch": BATCH, "seed": 0, "dtype": "float64", "channels": CHANNELS},
            "datasets": {
                ds: {
                    "image_size": SIZES[ds][0],
                    "shapes": shapes(ds),
                    "losses": reference_losses(SSLLoss.CPLoss, preset, ds),
                }
                for ds in SIZES
            },
        }
        path = FIXTURES / f"{preset}.json"
        path.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/parity_clapp_pp.py /path/to/local-SSL-checkout")
    main(sys.argv[1])
