"""Regenerate ``tests/fixtures/parity/lpl.json`` from a checkout of the authors' LPL code.

LPL (Halvagal & Zenke 2023) in fmi-basel/latent-predictive-learning: ``LPL.loss_step``
(``models/module.py``, unmodified) computes, for every layer's globally pooled features ``z1``, ``z2`` of
the two views, the predictive loss ``mse(z1, z2)`` (no stop-gradient), the Hebbian loss
``½[hebbian(z1) + hebbian(z2)]`` and the decorrelation loss ``½[decorr(z1) + decorr(z2)]``; the layer loss
is ``pull_coeff·pull + push_coeff·push + decorr_coeff·decorr`` with the defaults 1, 1, 10. This script
calls ``LPL.loss_step`` on a stand-in ``self`` whose ``network`` returns seeded float64 pooled features
(one per layer, the channels of VGG-6 at width 1/16) and whose ``hparams`` are the defaults
(``no_pooling``, ``shuffle_positives``, ``stale_estimates`` off); the loss methods are the authors'.
``models/module.py`` imports ``pytorch_lightning`` (the base class, not used by the loss) and
``pl_bolts`` (a learning-rate schedule): without them installed the script puts stand-in modules in
``sys.modules``. Not run by CI: ``python tools/parity_lpl.py /path/to/latent-predictive-learning``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

CHANNELS = (8, 16, 16, 32, 64, 64)  # VGG-6 at width 1/16 (LPL's own network is VGG-11; the loss sees (B, C))
BATCH = 8  # images per view
COEFFS = {"pull": 1.0, "push": 1.0, "decorr": 10.0}  # the authors' defaults (pull_coeff, push_coeff, decorr_coeff)
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity" / "lpl.json"


def seeded_inputs(seed: int = 0) -> list[torch.Tensor]:
    """Per layer, pooled features of both views stacked ``[view1; view2]``: ``(2B, C)``, non-negative."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2 * BATCH, c, generator=g, dtype=torch.float64).abs() for c in CHANNELS]


def entry_index(numel: int) -> list[int]:
    return torch.linspace(0, numel - 1, 5).round().long().tolist()


def _stand_in_imports() -> None:
    """``pytorch_lightning`` / ``pl_bolts`` stand-ins, only where the real packages are missing."""
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        sys.modules["pytorch_lightning"] = types.SimpleNamespace(LightningModule=torch.nn.Module)
    try:
        import pl_bolts.optimizers.lr_scheduler  # noqa: F401
    except ImportError:
        sched = types.SimpleNamespace(LinearWarmupCosineAnnealingLR=None)
        sys.modules["pl_bolts"] = types.SimpleNamespace()
        sys.modules["pl_bolts.optimizers"] = types.SimpleNamespace(lr_scheduler=sched)
        sys.modules["pl_bolts.optimizers.lr_scheduler"] = sched


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    torch.set_default_dtype(torch.float64)  # their per-layer loss buffers are torch.zeros(...): keep float64
    _stand_in_imports()
    from models.module import LPL  # the authors' module, unmodified

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    hs = [h.clone().requires_grad_() for h in seeded_inputs()]
    views = {"view1": [h[:BATCH] for h in hs], "view2": [h[BATCH:] for h in hs]}
    stand_in = types.SimpleNamespace(
        network=lambda img: (None, None, views[img]),
        hparams=types.SimpleNamespace(no_pooling=False, shuffle_positives=False, stale_estimates=False),
        predictive_loss=F.mse_loss,
    )
    stand_in.push_loss_fn = lambda a, **kw: LPL.hebbian_loss(stand_in, a, **kw)
    stand_in.decorr_loss = lambda a: LPL.decorr_loss(stand_in, a)
    pull, push, decorr = LPL.loss_step(stand_in, (("view1", "view2", None), None))
    layers = []
    for i, h in enumerate(hs):
        total = COEFFS["pull"] * pull[i] + COEFFS["push"] * push[i] + COEFFS["decorr"] * decorr[i]
        (grad,) = torch.autograd.grad(total, [h], retain_graph=True)
        idx = entry_index(grad.numel())
        layers.append(
            {
                "layer": i + 1,
                "loss": float(total.detach()),
                "pull": float(pull[i].detach()),
                "push": float(push[i].detach()),
                "decorr": float(decorr[i].detach()),
                "grad_norm": {"h": float(grad.norm())},
                "grad_entries": {"h": {"index": idx, "value": grad.flatten()[idx].tolist()}},
            }
        )
    fixture = {
        "preset": "lpl",
        "reference": {
            "repo": "fmi-basel/latent-predictive-learning",
            "commit": commit.strip(),
            "code": "models/module.py LPL.loss_step, hebbian_loss, decorr_loss",
        },
        "setup": {"batch": BATCH, "channels": CHANNELS, "coeffs": COEFFS, "seed": 0, "dtype": "float64"},
        "layers": layers,
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/parity_lpl.py /path/to/latent-predictive-learning-checkout")
    main(sys.argv[1])
