"""Regenerate ``tests/fixtures/parity/clapp++both.json`` from a checkout of the authors' code.

CLAPP++both's layer loss in zihan-wu/local-SSL (``vision/train_ssl.py`` with ``--extra_lateral_loss``,
``--asymmetric_W_pred``): the top-layer ``CPLoss`` plus a second ``CPLoss`` with the same-layer
reference, on the same negative draws (``--unified_random_sampling``). This script feeds seeded float64
activities, prediction matrices and negative indices (``seeded_inputs``, shared with the test) to the
authors' ``CPLoss`` unmodified and writes per-layer losses, gradient norms and a few gradient entries.
Not run by CI: ``python tools/parity_clapp_both.py /path/to/local-SSL`` (see tools/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch

SHAPES = [(8, 16, 16), (12, 8, 8), (16, 4, 4)]  # three layers, pooled 4-2-1 (a small CIFAR-like VGG tail)
POOLS = [4, 2, 1]
BATCH = 4  # images; 2 × BATCH rows (two SimCLR views)
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity" / "clapp++both.json"


def seeded_inputs(seed: int = 0) -> dict:
    """Activities ``h_l`` (2B rows), ``B_same``/``B_top`` per layer and negative indices, float64."""
    g = torch.Generator().manual_seed(seed)
    pooled = [s[0] * (s[1] // k) * (s[2] // k) for s, k in zip(SHAPES, POOLS)]
    hs = [torch.randn(2 * BATCH, *s, generator=g, dtype=torch.float64) for s in SHAPES]
    b_same = [torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 for d in pooled]
    b_top = [torch.randn(d, pooled[-1], generator=g, dtype=torch.float64) / pooled[-1] ** 0.5 for d in pooled]
    rand_index = torch.randint(2 * BATCH, (2 * BATCH,), generator=g)
    return {"hs": hs, "b_same": b_same, "b_top": b_top, "rand_index": rand_index}


class _Opt(types.SimpleNamespace):
    def __getattr__(self, key: str) -> bool:  # every flag not set below is off in the paper's scripts
        return False


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    torch.set_default_dtype(torch.float64)  # their per-layer loss buffer is torch.zeros(...): keep it float64
    from vision.models import SSLLoss  # the authors' module, unmodified

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    n = len(SHAPES)
    opt = _Opt(
        negative_samples=1, contrast_mode="hinge", model_splits=n, customize_fb_idx="-".join([str(n)] * n),
        customize_loss_pool="-".join(map(str, POOLS)), predict_module_num="-1", device=torch.device("cpu"),
        unified_random_sampling=True, asymmetric_W_pred=True, update_proj_steps=0, pos_coeff=1.0, pred_decay=0,
    )  # fmt: skip
    h_dims = [(2 * BATCH, *s) for s in SHAPES]
    top, lateral = SSLLoss.CPLoss(opt, h_dims).double(), SSLLoss.CPLoss(opt, h_dims, fb_idx=range(n)).double()
    x = seeded_inputs()
    for i in range(n):
        lateral.W_k[i].weight.data.copy_(x["b_same"][i])
        top.W_k[i].weight.data.copy_(x["b_top"][i])
    hs = [h.clone().requires_grad_() for h in x["hs"]]
    out, ri, rf, _ = top(hs, rand_index=x["rand_index"].clone())
    out2, _, _, _ = lateral(hs, rand_index=ri, rand_fixation=rf)
    losses = (out["loss"] + out2["loss"])[0]
    layers = []
    for i in range(n):
        wrt = [hs[i], lateral.W_k[i].weight, top.W_k[i].weight]
        grads = torch.autograd.grad(losses[i], wrt, retain_graph=True)
        layers.append(
            {
                "loss": float(losses[i].detach()),
                "grad_norm": {k: float(g.norm()) for k, g in zip(("h", "B_same", "B_top"), grads)},
                "grad_entries": {k: g.flatten()[:5].tolist() for k, g in zip(("h", "B_same", "B_top"), grads)},
            }
        )
    fixture = {
        "preset": "clapp++both",
        "reference": {
            "repo": "zihan-wu/local-SSL",
            "commit": commit.strip(),
            "code": "vision/models/SSLLoss.py CPLoss",
        },
        "setup": {"shapes": SHAPES, "pools": POOLS, "batch": BATCH, "seed": 0, "dtype": "float64"},
        "layers": layers,
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/parity_clapp_both.py /path/to/local-SSL-checkout")
    main(sys.argv[1])
