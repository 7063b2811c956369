"""CLAPP++both against the authors' code: numbers from ``tools/parity_clapp_both.py`` (zihan-wu/local-SSL
``CPLoss`` + ``--extra_lateral_loss``, float64), rebuilt here with localssl on the same seeded inputs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from localssl.objectives.base import LayerSpec
from localssl.objectives.contrastive import ContrastiveConfig, ContrastiveObjective
from localssl.views.base import ViewBatch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "parity" / "clapp++both.json").read_text())
_spec = importlib.util.spec_from_file_location("parity_clapp_both", ROOT / "tools" / "parity_clapp_both.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("layer", range(len(tool.SHAPES)))
def test_clapp_both_matches_authors_extra_lateral_loss(layer):
    x = tool.seeded_inputs(FIXTURE["setup"]["seed"])
    specs = [LayerSpec(index=i, shape=s, pool_kernel=k) for i, (s, k) in enumerate(zip(tool.SHAPES, tool.POOLS))]
    obj = ContrastiveObjective(ContrastiveConfig(combine="sum_losses"), specs[layer], [specs[layer], specs[-1]])
    obj = obj.double()
    obj.B[0].maps.weight.data.copy_(x["b_same"][layer])
    obj.B[1].maps.weight.data.copy_(x["b_top"][layer])
    m, b = 2 * tool.BATCH, tool.BATCH
    j = torch.arange(m)
    # their --asymmetric_W_pred: target row (j + B) mod 2B against context row j; negatives z_pos[rand_index]
    views = ViewBatch(x=x["hs"][0], pos=(j + b) % m, pos_ref=j, neg=(x["rand_index"] + b) % m, neg_ref=j, n_images=b)
    h = x["hs"][layer].clone().requires_grad_()
    top = h if layer == len(specs) - 1 else x["hs"][-1]
    loss = obj(h, [h, top], views).loss
    grads = torch.autograd.grad(loss, [h, obj.B[0].maps.weight, obj.B[1].maps.weight])
    ref = FIXTURE["layers"][layer]
    assert _rel(float(loss.detach()), ref["loss"]) <= 1e-6
    for key, g in zip(("h", "B_same", "B_top"), grads):
        assert _rel(float(g.norm()), ref["grad_norm"][key]) <= 1e-6, key
        torch.testing.assert_close(
            g.flatten()[:5], torch.tensor(ref["grad_entries"][key], dtype=torch.float64), rtol=1e-6, atol=1e-12
        )
