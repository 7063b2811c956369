"""LPL against the authors' code: numbers from ``tools/parity_lpl.py`` (fmi-basel/latent-predictive-learning
``LPL.loss_step``, float64), rebuilt here from the ``lpl`` preset at width 1/16 on the same pooled features.
The authors' code has no stop-gradient (``objective.stop_gradient=false``); the preset follows the paper's
Methods (``stop_gradient=true``, issue 15: text over code), which keeps the loss value and halves the
predictive term's gradient, also checked here against the same fixture."""

import importlib.util
import json
from pathlib import Path

import torch

from localssl.build import build
from localssl.config import load_config
from localssl.views.base import ViewBatch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_lpl", ROOT / "tools" / "parity_lpl.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "parity" / "lpl.json").read_text())


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _views() -> ViewBatch:
    m, b = 2 * tool.BATCH, tool.BATCH
    j = torch.arange(m)
    empty = torch.zeros(0, dtype=torch.long)
    return ViewBatch(x=torch.zeros(m, 1), pos=(j + b) % m, pos_ref=j, neg=empty, neg_ref=empty, n_images=b)


def _objectives(*overrides):
    cfg = load_config("lpl", ["model.width=0.0625", *overrides])
    return cfg, build(cfg).rule.double().objectives


def test_preset_follows_the_methods_stop_gradient():
    assert load_config("lpl").objective.stop_gradient


def test_lpl_matches_authors_loss_step():
    assert FIXTURE["reference"]["commit"].startswith("0210f55")
    cfg, objectives = _objectives("objective.stop_gradient=false")
    c = cfg.objective
    assert (c.pred_coeff, c.hebb_coeff, c.decorr_coeff) == tuple(FIXTURE["setup"]["coeffs"].values())
    assert not c.stop_gradient and cfg.rule.name == "local" and len(objectives) == len(tool.CHANNELS)
    for h0, ref in zip(tool.seeded_inputs(FIXTURE["setup"]["seed"]), FIXTURE["layers"]):
        h = h0.clone().requires_grad_()
        out = objectives[str(ref["layer"])](h, [h], _views())
        (grad,) = torch.autograd.grad(out.loss, [h])
        where = f"layer {ref['layer']}"
        assert _rel(float(out.loss.detach()), ref["loss"]) <= 1e-6, where
        for key, ours in (("pull", "pred"), ("push", "hebb"), ("decorr", "decorr")):
            assert _rel(float(out.metrics[ours]), ref[key]) <= 1e-6, f"{where} {key}"
        assert _rel(float(grad.norm()), ref["grad_norm"]["h"]) <= 1e-6, where
        e = ref["grad_entries"]["h"]
        torch.testing.assert_close(
            grad.flatten()[e["index"]], torch.tensor(e["value"], dtype=torch.float64), rtol=1e-6, atol=1e-12
        )


def test_stop_gradient_halves_the_predictive_gradient():
    zero = ("objective.hebb_coeff=0", "objective.decorr_coeff=0")
    _, plain = _objectives(*zero, "objective.stop_gradient=false")
    _, stopped = _objectives(*zero)  # the preset: stop_gradient=true
    h0 = tool.seeded_inputs()[0]
    grads = []
    for objectives in (plain, stopped):
        h = h0.clone().requires_grad_()
        out = objectives["1"](h, [h], _views())
        grads.append(torch.autograd.grad(out.loss, [h])[0])
    torch.testing.assert_close(grads[1], 0.5 * grads[0])
