"""CLAPP 2021 against the authors' code: numbers from ``tools/parity_clapp2021.py``
(EPFL-LCN/pub-illing2021-neurips ``ContrastiveLoss`` with the paper's script flags, float64), rebuilt here
from the ``clapp2021`` / ``clapp2021-asym`` presets at width 1/16 on the same activities and draws.

The authors score ``u = cᵀ W_k z`` with ``W_k`` acting on the target; localssl's ``W`` acts on the context
(``u = zᵀ W c``), so it holds the transpose. ``clapp2021-asym`` is ``½[F(z, block(c)) + F(block(z), c)]``
as the paper's Eq. 10 writes it; the authors' code adds the two halves without the ½, so ours is exactly
half of theirs (loss and every gradient): the test asserts that factor."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.objectives.predictive import Draws

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_clapp2021", ROOT / "tools" / "parity_clapp2021.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "parity" / "clapp2021.json").read_text())
PRESETS = {  # variant -> (preset, overrides, factor ours / theirs)
    "either": ("clapp2021", [], 1.0),
    "both_terms": ("clapp2021", ["objective.either_pos_or_neg=false"], 1.0),
    "asymmetric": ("clapp2021-asym", [], 0.5),
}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_fixture_setup_matches_tool():
    assert FIXTURE["reference"]["commit"].startswith("73671e1")
    assert FIXTURE["setup"]["channels"] == list(tool.CHANNELS)
    assert tuple(FIXTURE["setup"]["grid"]) == tool.GRID and FIXTURE["setup"]["steps"] == tool.STEPS
    assert set(FIXTURE["variants"]) == set(tool.VARIANTS) == {*PRESETS, "cpc"}


@pytest.mark.parametrize("variant", list(PRESETS))
def test_clapp2021_matches_authors_contrastive_loss(variant):
    preset, overrides, factor = PRESETS[variant]
    cfg = load_config(preset, ["model.width=0.0625", *overrides])
    assert (cfg.objective.either_pos_or_neg, cfg.objective.W_pred == "asymmetric") == tool.VARIANTS[variant]
    assert (cfg.objective.steps, cfg.objective.skip, cfg.objective.n_negatives) == (tool.STEPS, 1, 1)
    rule = build(cfg).rule.double()
    assert sorted(int(k) for k in rule.objectives) == list(range(1, len(tool.CHANNELS) + 1))  # layer-wise
    x = tool.seeded_inputs(variant, FIXTURE["setup"]["seed"])
    for item, ref in zip(x["layers"], FIXTURE["variants"][variant]):
        obj = rule.objectives[str(ref["layer"])]
        maps = [obj.W] if obj.W_c is None else [obj.W, obj.W_c]
        transpose = [True, False]  # ours W = theirs W_kᵀ (loss); ours W_c = theirs W_k (loss_mirror)
        for ours, theirs, t in zip(maps, item["W"], transpose):
            for lin, w in zip(ours, theirs):
                lin.weight.data.copy_(w.T if t else w)
        which = ref["which_update"]
        use_pos = None if which == "both" else torch.tensor([w == "pos" for w in which])
        draws = Draws([torch.tensor(n).view(1, -1) for n in ref["negatives"]], use_pos)
        h = item["h"].clone().requires_grad_()
        loss = obj.compute(h, h, draws).loss
        weights = [lin.weight for m in maps for lin in m]
        grads = torch.autograd.grad(loss, [h, *weights])
        where = f"{variant} layer {ref['layer']}"
        assert _rel(float(loss.detach()), factor * ref["loss"]) <= 1e-6, where
        assert _rel(float(grads[0].norm()), factor * ref["grad_norm"]["h"]) <= 1e-6, where
        entries = [ref["grad_entries"]["h"]]
        ours_flat = [grads[0].flatten()]
        for i, (g, norm, e) in enumerate(zip(grads[1:], ref["grad_norm"]["W"], ref["grad_entries"]["W"])):
            assert _rel(float(g.norm()), factor * norm) <= 1e-6, f"{where} W {i}"
            ours_flat.append((g.T if i < tool.STEPS else g).flatten())
            entries.append(e)
        for flat, e in zip(ours_flat, entries):
            torch.testing.assert_close(
                flat[e["index"]],
                factor * torch.tensor(e["value"], dtype=torch.float64),
                rtol=1e-6,
                atol=1e-12,
                msg=where,
            )


def _cpc_draws(record: dict) -> Draws:
    """The authors' negatives (replayed from their seed, checked against the stored sums) as localssl's
    flat positions: theirs index the (row below the shift, column, image) positions of the target region,
    ours index ``zt.reshape(-1, D)`` of the whole ``(B, T, S, D)`` map."""
    rows, cols = tool.GRID
    b, n_neg = tool.BATCH, tool.CPC_NEGATIVES
    draws = tool.replay_cpc_draws(record["negatives"]["draw_seed"], b, tool.GRID)
    assert [int(d.sum()) for d in draws] == record["negatives"]["sums"], "torch.randint no longer replays"
    negatives = []
    for k, d in enumerate(draws, start=1):
        shift = k + 1
        f = d.view(rows - shift, cols, b, n_neg)
        r, c, img = f // (cols * b), (f // b) % cols, f % b
        ours = img * rows * cols + (r + shift) * cols + c
        negatives.append(ours.permute(3, 2, 0, 1))  # (N, B, T', S)
    return Draws(negatives, None)


@pytest.mark.parametrize("preset,layers", [("cpc", [6]), ("gim", [2, 4, 6])])
def test_cpc_and_gim_match_authors_multiclass_loss(preset, layers):
    cfg = load_config(preset, ["model.width=0.0625"])
    o = cfg.objective
    assert (o.loss, o.negatives, o.n_negatives, o.steps, o.skip) == ("infonce", "random", tool.CPC_NEGATIVES, 5, 1)
    rule = build(cfg).rule.double()
    assert sorted(int(k) for k in rule.objectives) == layers
    x = tool.seeded_inputs("cpc", FIXTURE["setup"]["seed"])
    for layer in layers:
        item, ref = x["layers"][layer - 1], FIXTURE["variants"]["cpc"][layer - 1]
        obj = rule.objectives[str(layer)]
        for lin, w in zip(obj.W, item["W"][0]):
            lin.weight.data.copy_(w.T)  # ours W acts on the context: theirs transposed
        h = item["h"].clone().requires_grad_()
        loss = obj.compute(h, h, _cpc_draws(ref)).loss
        grads = torch.autograd.grad(loss, [h, *(lin.weight for lin in obj.W)])
        where = f"{preset} layer {layer}"
        # theirs takes log(softmax + 1e-11): a relative difference of about 1e-11 / p, far below the tolerance
        assert _rel(float(loss.detach()), ref["loss"]) <= 1e-6, where
        assert _rel(float(grads[0].norm()), ref["grad_norm"]["h"]) <= 1e-6, where
        for i, (g, norm, e) in enumerate(zip(grads[1:], ref["grad_norm"]["W"], ref["grad_entries"]["W"])):
            assert _rel(float(g.norm()), norm) <= 1e-6, f"{where} W {i}"
            got = g.T.flatten()[e["index"]]
            torch.testing.assert_close(got, torch.tensor(e["value"], dtype=torch.float64), rtol=1e-6, atol=1e-12)
        e = ref["grad_entries"]["h"]
        torch.testing.assert_close(
            grads[0].flatten()[e["index"]], torch.tensor(e["value"], dtype=torch.float64), rtol=1e-6, atol=1e-12
        )
