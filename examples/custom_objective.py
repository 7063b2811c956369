"""A new layer-local objective defined and registered from user code, then trained and probed.

The objective pulls the two views of each image together (cosine similarity of the pooled layer
activity, as in the invariance term of SimSiam/BYOL) and keeps every unit's batch standard deviation
above 1 (VICReg's variance hinge, Bardes et al. 2022, Eq. 1) so the layer does not collapse:
    L = −mean_i cos(z_i¹, z_i²) + λ · mean_j relu(1 − sqrt(Var_b z_bj + ε))
Registering it under a name is all it takes: presets and overrides then select it like a built-in.

    python examples/custom_objective.py model.width=0.125 train.epochs=1   # any key=value override
    localssl probe RUN_DIR --import examples/custom_objective.py            # later, from the CLI

The run's config.yaml records where the objective came from (``components: objective: ...``); the CLI
imports that code only when told to (``--import``), or from a package installed with an entry point in
the group ``localssl.components``.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.nn.functional as F
from torch import nn

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.objectives.base import LayerSpec, LossOut, SpatialPool
from localssl.registry import OBJECTIVES
from localssl.train import pretrain
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class CosineVarianceConfig:
    name: str = "cosine-variance"
    std_coeff: float = 1.0  # λ


@OBJECTIVES.register("cosine-variance", CosineVarianceConfig)
class CosineVariance(nn.Module):
    def __init__(self, cfg: CosineVarianceConfig, target: LayerSpec, refs: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg, self.pool = cfg, SpatialPool(None)  # global average pooling of each layer

    def forward(self, h: torch.Tensor, refs: list[torch.Tensor], views: ViewBatch) -> LossOut:
        z = self.pool(h)
        sim = F.cosine_similarity(z[views.pos_ref], z[views.pos]).mean()
        std = F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()
        return LossOut(-sim + self.cfg.std_coeff * std, {"sim": sim.detach(), "std": std.detach()})


def main(overrides: list[str]) -> dict:
    """Pretrain VGG-6 with the local rule and the new objective, then fit the linear probe."""
    cfg = load_config(
        "vicreg", ["name=cosine-variance", "objective.name=cosine-variance", *overrides]
    )  # runs/cosine-variance-*
    run_dir = pretrain(cfg)
    result = probe(run_dir)
    print(f"{run_dir}: linear-probe test accuracy {result['test_acc_pct']:.2f} %")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
