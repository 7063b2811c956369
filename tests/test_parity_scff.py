"""SCFF against the authors' code: numbers from ``tools/parity_scff.py`` (the layer loss of
``SCFF_CIFAR_Parallel.py`` ``train()`` @2d91618, run unmodified on stand-in layers, float64), rebuilt here
from the ``scff`` preset at width 1/16 with ``model.output_before_pool=true`` (the unpooled maps the
official code scores; the preset's default scores the pooled map with the same loss)."""

import importlib.util
import json
from pathlib import Path

import torch

from localssl.build import build
from localssl.config import load_config
from localssl.views.base import ViewBatch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_scff", ROOT / "tools" / "parity_scff.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "parity" / "scff.json").read_text())


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _views(b: int) -> ViewBatch:
    rows = torch.arange(2 * b)  # [positives; negatives], each row its own reference (s = hᵀh)
    return ViewBatch(
        x=torch.zeros(2 * b, 1), pos=rows[:b], pos_ref=rows[:b], neg=rows[b:], neg_ref=rows[b:], n_images=b
    )


def test_fixture_setup_matches_tool_and_preset():
    assert FIXTURE["reference"]["commit"].startswith("2d91618")
    setup = FIXTURE["setup"]
    assert [tuple(s) for s in setup["shapes"]] == list(tool.SHAPES)
    c = load_config("scff").objective
    assert (tuple(c.threshold_pos), tuple(c.threshold_neg), tuple(c.pos_l2)) == (
        tuple(setup["threshold_pos"]),
        tuple(setup["threshold_neg"]),
        tuple(setup["pos_l2"]),
    )


def test_scff_matches_authors_train_step():
    parts = build(load_config("scff", ["model.width=0.0625", "model.output_before_pool=true"]))
    assert [spec.shape for spec in parts.layers] == list(tool.SHAPES)
    objectives = parts.rule.double().objectives
    for (pos0, neg0), ref in zip(tool.seeded_inputs(FIXTURE["setup"]["seed"]), FIXTURE["layers"]):
        pos, neg = pos0.clone().requires_grad_(), neg0.clone().requires_grad_()
        h = torch.relu(torch.cat([pos, neg]))  # the layer's output: ReLU of the pre-activations
        out = objectives[str(ref["layer"])](h, [h], _views(tool.BATCH))
        grads = dict(zip(("pos", "neg"), torch.autograd.grad(out.loss, [pos, neg])))
        where = f"layer {ref['layer']}"
        assert _rel(float(out.loss.detach()), ref["loss"]) <= 1e-6, where
        for name, grad in grads.items():
            assert _rel(float(grad.norm()), ref["grad_norm"][name]) <= 1e-6, f"{where} {name}"
            e = ref["grad_entries"][name]
            torch.testing.assert_close(
                grad.flatten()[e["index"]], torch.tensor(e["value"], dtype=torch.float64), rtol=1e-6, atol=1e-15
            )
