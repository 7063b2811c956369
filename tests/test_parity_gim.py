"""Greedy InfoMax (and its end-to-end CPC baseline) against the authors' code: numbers from
``tools/parity_gim.py`` (loeweX/Greedy_InfoMax ``InfoNCE_Loss`` with the paper's script flags, float64),
rebuilt here from the ``gim`` and ``cpc`` presets at width 1/16 on the same activities and draws.

The authors score ``u = cᵀ W_k z`` with ``W_k`` acting on the target; localssl's ``W`` acts on the context
(``u = zᵀ W c``), so it holds the transpose. Their negatives are positions of the step's target region
(rows k+1 ..), ours any position of the batch: the test maps their draws to ours. They take
``log(softmax + 1e-11)``, we ``log_softmax``: a relative difference of about ``1e-11 / p⁺``."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.objectives.predictive import Draws

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_gim", ROOT / "tools" / "parity_gim.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "parity" / "gim.json").read_text())
RTOL = 1e-6


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_fixture_setup_matches_tool():
    assert FIXTURE["reference"]["commit"].startswith("22d17e4")
    s = FIXTURE["setup"]
    assert {int(k): v for k, v in s["layers"].items()} == tool.LAYERS
    assert tuple(s["grid"]) == tool.GRID and (s["steps"], s["negatives"], s["batch"]) == (
        tool.STEPS,
        tool.NEGATIVES,
        tool.BATCH,
    )
    assert [r["layer"] for r in FIXTURE["layers"]] == list(tool.LAYERS)


def _draws(record: dict) -> Draws:
    """The authors' negatives (replayed from their seed, checked against the stored sums) as localssl's
    flat positions: theirs index the (row below the shift, column, image) positions of the target region,
    ours index ``zt.reshape(-1, D)`` of the whole ``(B, T, S, D)`` map."""
    rows, cols = tool.GRID
    b, n_neg = tool.BATCH, tool.NEGATIVES
    draws = tool.replay_draws(record["negatives"]["draw_seed"])
    assert [int(d.sum()) for d in draws] == record["negatives"]["sums"], "torch.randint no longer replays"
    negatives = []
    for k, d in enumerate(draws, start=1):
        shift = k + 1  # skip_step = 1
        f = d.view(rows - shift, cols, b, n_neg)
        r, c, img = f // (cols * b), (f // b) % cols, f % b
        ours = img * rows * cols + (r + shift) * cols + c
        negatives.append(ours.permute(3, 2, 0, 1))  # (N, B, T', S)
    return Draws(negatives, None)


def _worst_errors(preset: str, layers: list[int], compare: list[int] | None = None, perturb: bool = False) -> dict:
    """Builds ``preset`` at width 1/16, loads the authors' ``W_k`` (transposed) into the module layers'
    objectives and returns the worst relative error of the loss, the gradient norms and the gradient
    entries (w.r.t. target ``z``, context ``c`` and each ``W_k``) against the fixture, over the layers
    ``compare`` (default: all of the preset's module layers ``layers``)."""
    cfg = load_config(preset, ["model.width=0.0625"])
    o, v = cfg.objective, cfg.views
    assert (o.name, o.loss, o.negatives, o.W_pred) == ("predictive", "infonce", "random", "symmetric")
    assert (o.n_negatives, o.steps, o.skip, o.detach_context) == (tool.NEGATIVES, tool.STEPS, 1, False)
    side = (v.crop_size - v.patch_size) // v.patch_stride + 1
    assert (v.name, (side, side)) == ("patch_grid", tool.GRID)
    rule = build(cfg).rule.double()
    assert sorted(int(k) for k in rule.objectives) == layers
    x = tool.seeded_inputs(FIXTURE["setup"]["seed"])
    refs = {r["layer"]: r for r in FIXTURE["layers"]}
    worst = {"loss": 0.0, "grad_norm": 0.0, "grad_entry": 0.0}
    for layer in compare or layers:
        item, ref = x[layer], refs[layer]
        obj = rule.objectives[str(layer)]
        for lin, w in zip(obj.W, item["W"], strict=True):
            assert lin.weight.shape == w.shape == (tool.LAYERS[layer],) * 2
            lin.weight.data.copy_(w.T)  # ours W acts on the context: theirs transposed
        if perturb:
            obj.W[2].weight.data[1, 0] += 1e-3
        z = item["h"].clone().requires_grad_()
        c = item["h"].clone().requires_grad_()
        loss = obj.compute(z, c, _draws(ref)).loss
        grads = torch.autograd.grad(loss, [z, c, *(lin.weight for lin in obj.W)])
        ours = {"z": grads[0], "c": grads[1], **{f"W{k}": g.T for k, g in enumerate(grads[2:], start=1)}}
        theirs = {"z": ref["grad"]["z"], "c": ref["grad"]["c"]}
        theirs |= {f"W{k}": g for k, g in enumerate(ref["grad"]["W"], start=1)}
        worst["loss"] = max(worst["loss"], _rel(float(loss.detach()), ref["loss"]))
        for name, g in ours.items():
            e = theirs[name]
            worst["grad_norm"] = max(worst["grad_norm"], _rel(float(g.norm()), e["norm"]))
            for got, want in zip(g.flatten()[e["index"]].tolist(), e["value"], strict=True):
                worst["grad_entry"] = max(worst["grad_entry"], _rel(got, want))
    return worst


@pytest.mark.parametrize("preset,layers", [("gim", [2, 4, 6]), ("cpc", [6])])
def test_gim_and_cpc_match_authors_infonce_loss(preset, layers):
    worst = _worst_errors(preset, layers)
    assert all(err <= RTOL for err in worst.values()), f"{preset}: worst relative errors {worst}"


def test_parity_fails_for_a_changed_W_k():
    worst = _worst_errors("gim", [2, 4, 6], compare=[2], perturb=True)
    assert worst["grad_entry"] > 1e-4 and worst["grad_norm"] > 1e-5 and worst["loss"] > 1e-7, worst
