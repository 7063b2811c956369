"""Regenerate ``tests/fixtures/parity/clapp2021.json`` from a checkout of the authors' CLAPP code.

CLAPP (Illing et al. 2021) in EPFL-LCN/pub-illing2021-neurips (``vision/CLAPPVision``): each module's
loss is ``ContrastiveLoss`` (``vision/models/ContrastiveLoss.py``, unmodified) on the module's patch-grid
output ``(b, C, 7, 7)`` (64-px crop, 16-px patches, stride 8), with the flags of the paper's script
(``vision/scripts``: ``--contrast_mode hinge --negative_samples 1 --sample_negs_locally
--sample_negs_locally_same_everywhere --either_pos_or_neg_update``, 5 prediction steps, skip 1). Three
variants, as ``VGG_like_Encoder.evaluate_loss`` composes them (module ``predict_module_num='same'``):

* ``either``: ``loss(z, c)`` on the same tensor, each sample taking its positive or its negative term;
* ``both_terms``: the same without ``--either_pos_or_neg_update`` (every sample takes both terms);
* ``asymmetric``: ``--asymmetric_W_pred``: ``loss(z, detach(c)) + loss_mirror(detach(z), c)`` with two
  matrices. localssl's ``clapp2021-asym`` is ``½(…)`` of that, as the paper's Eq. 10 writes it;
* ``cpc``: ``--contrast_mode multiclass --negative_samples 16`` (no local sampling): CPC's InfoNCE over 16
  negatives from any target position of the batch, the loss of the ``cpc`` and ``gim`` presets.

The authors' losses draw their negatives (``torch.randint``) and the pos/neg choice
(``numpy.random.choice``) inside ``forward``; this script seeds both generators before each call (the
two halves of ``asymmetric`` get the same draws) and records what was drawn by wrapping
``torch.randint``, so the test can hand localssl the same draws. The module imports ``IPython.embed``
without using it: a stand-in module is put in ``sys.modules`` when IPython is not installed.
Activities have the shapes of the official VGG-6 at width 1/16 (8-16-16-32-64-64 channels).
Not run by CI: ``python tools/parity_clapp2021.py /path/to/pub-illing2021-neurips`` (see tools/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch

CHANNELS = (8, 16, 16, 32, 64, 64)  # the official VGG-6, 128-256-256-512-1024-1024 channels, at width 1/16
GRID = (7, 7)  # patch grid of a 64-px crop: 16-px patches, stride 8
STEPS = 5  # --prediction_step (default); the target is k + 1 rows below the context (skip_step=1)
BATCH = 4  # images
VARIANTS = {  # name -> (--either_pos_or_neg_update, --asymmetric_W_pred)
    "either": (True, False),
    "both_terms": (False, False),
    "asymmetric": (True, True),
    "cpc": (False, False),  # --contrast_mode multiclass --negative_samples 16: CPC / GIM (CLAPP 2021 Table 1)
}
CPC_NEGATIVES = 16
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity" / "clapp2021.json"


def seeded_inputs(variant: str, seed: int = 0) -> dict:
    """Per layer: the activity grid ``h`` (B, C, 7, 7), non-negative, and the ``W_k`` of each loss module
    as the authors store them (1×1 conv weights ``(C, C)``: ``u = cᵀ W_k z``)."""
    g = torch.Generator().manual_seed(seed)
    n_modules = 2 if VARIANTS[variant][1] else 1
    layers = []
    for c in CHANNELS:
        h = torch.randn(BATCH, c, *GRID, generator=g, dtype=torch.float64).abs()
        ws = [[torch.randn(c, c, generator=g, dtype=torch.float64) / c for _ in range(STEPS)] for _ in range(n_modules)]
        layers.append({"h": h, "W": ws})
    return {"layers": layers}


def replay_cpc_draws(seed: int, batch: int, grid: tuple[int, int], n_neg: int = CPC_NEGATIVES) -> list[torch.Tensor]:
    """The negative indices the authors' multiclass loss draws after ``torch.manual_seed(seed)``: per step k
    one ``torch.randint`` over the (row, column, image) positions of the target region (rows k+1 .. end),
    flattened in that order, ``n_neg`` per position (``ContrastiveLoss.sample_negative_samples``)."""
    torch.manual_seed(seed)
    rows, cols = grid
    draws = []
    for k in range(1, STEPS + 1):
        n_flat = (rows - k - 1) * cols * batch
        draws.append(torch.randint(n_flat, (n_flat * n_neg, 1), dtype=torch.long))
    return draws


def entry_index(numel: int) -> list[int]:
    return torch.linspace(0, numel - 1, 5).round().long().tolist()


class _Opt(types.SimpleNamespace):
    def __getattr__(self, key: str) -> bool:  # every flag not set below is off in the paper's scripts
        return False


class _RecordRandint:
    """Wraps ``torch.randint`` while the authors' loss runs, keeping every tensor it returns."""

    def __init__(self) -> None:
        self.draws: list[torch.Tensor] = []
        self._orig = torch.randint

    def __enter__(self) -> _RecordRandint:
        def randint(*args, **kwargs):
            out = self._orig(*args, **kwargs)
            self.draws.append(out.clone())
            return out

        torch.randint = randint
        return self

    def __exit__(self, *exc: object) -> None:
        torch.randint = self._orig


def main(checkout: str) -> None:
    import numpy as np

    sys.path.insert(0, str(Path(checkout) / "vision"))
    if "IPython" not in sys.modules:
        try:
            import IPython  # noqa: F401
        except ImportError:
            sys.modules["IPython"] = types.SimpleNamespace(embed=None)  # imported by their module, never called
    from CLAPPVision.vision.models import ContrastiveLoss  # the authors' module, unmodified

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    fixture = {
        "preset": "clapp2021",
        "reference": {
            "repo": "EPFL-LCN/pub-illing2021-neurips",
            "commit": commit.strip(),
            "code": "vision/CLAPPVision/vision/models/ContrastiveLoss.py ContrastiveLoss",
        },
        "setup": {"batch": BATCH, "grid": GRID, "steps": STEPS, "channels": CHANNELS, "seed": 0, "dtype": "float64"},
        "variants": {},
    }
    for variant, (either, asymmetric) in VARIANTS.items():
        cpc = variant == "cpc"
        opt = _Opt(
            negative_samples=CPC_NEGATIVES if cpc else 1, contrast_mode="multiclass" if cpc else "hinge",
            sample_negs_locally=not cpc, sample_negs_locally_same_everywhere=not cpc,
            either_pos_or_neg_update=either, device=torch.device("cpu"),
        )  # fmt: skip
        x = seeded_inputs(variant)
        records = []
        for layer, item in enumerate(x["layers"]):
            c = item["h"].shape[1]
            modules = []
            for ws in item["W"]:
                m = ContrastiveLoss.ContrastiveLoss(opt, in_channels=c, out_channels=c, prediction_steps=STEPS).double()
                for conv, w in zip(m.W_k, ws):
                    conv.weight.data.copy_(w.view(c, c, 1, 1))
                modules.append(m)
            h = item["h"].clone().requires_grad_()
            draw_seed = 1000 + layer
            calls = [(h, h)] if not asymmetric else [(h, h.clone().detach()), (h.clone().detach(), h)]
            loss, negatives, which = 0.0, None, None
            for m, (z, ctx) in zip(modules, calls):  # the asymmetric halves see the same draws
                torch.manual_seed(draw_seed)
                np.random.seed(draw_seed)
                with _RecordRandint() as rec:
                    part, _, _ = m(z, ctx, skip_step=1)
                loss = loss + part
                negatives = [d.tolist() for d in rec.draws]
                if cpc:  # too many to store: the test replays them (checked here and by their sums there)
                    replayed = replay_cpc_draws(draw_seed, BATCH, GRID)
                    assert all(torch.equal(a, b) for a, b in zip(rec.draws, replayed, strict=True))
                    negatives = {"draw_seed": draw_seed, "sums": [int(d.sum()) for d in rec.draws]}
                which = m.which_update if isinstance(m.which_update, str) else m.which_update.tolist()
            wrt = [h] + [conv.weight for m in modules for conv in m.W_k]
            grads = torch.autograd.grad(loss, wrt)
            g_w = [g.view(c, c) for g in grads[1:]]
            record = {
                "layer": layer + 1,
                "negatives": negatives,
                "which_update": which,
                "loss": float(loss.detach()),
                "grad_norm": {"h": float(grads[0].norm()), "W": [float(g.norm()) for g in g_w]},
                "grad_entries": {
                    "h": {"index": entry_index(grads[0].numel()), "value": []},
                    "W": [{"index": entry_index(g.numel()), "value": []} for g in g_w],
                },
            }
            record["grad_entries"]["h"]["value"] = grads[0].flatten()[record["grad_entries"]["h"]["index"]].tolist()
            for e, g in zip(record["grad_entries"]["W"], g_w):
                e["value"] = g.flatten()[e["index"]].tolist()
            records.append(record)
        fixture["variants"][variant] = records
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/parity_clapp2021.py /path/to/pub-illing2021-neurips-checkout")
    main(sys.argv[1])
