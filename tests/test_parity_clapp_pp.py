"""CLAPP++, CLAPP++nospatial, CLAPP++DFB and BP-CLAPP++ against the authors' code: numbers from
``tools/parity_clapp_pp.py`` (zihan-wu/local-SSL ``CPLoss`` with the paper's script flags, float64),
rebuilt here from each preset as localssl builds it (VGG-6 at width 1/16, 32-px and 96-px images)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from localssl.build import build
from localssl.config import load_config
from localssl.views.base import ViewBatch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_clapp_pp", ROOT / "tools" / "parity_clapp_pp.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
FIXTURES = {p: json.loads((ROOT / "tests" / "fixtures" / "parity" / f"{p}.json").read_text()) for p in tool.PRESETS}
CASES = [(p, ds) for p in tool.PRESETS for ds in tool.SIZES]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_fixture_setup_matches_tool():
    for preset, fixture in FIXTURES.items():
        assert fixture["reference"]["commit"].startswith("c4ea488")
        assert fixture["setup"]["channels"] == list(tool.CHANNELS)
        for ds, data in fixture["datasets"].items():
            assert [tuple(s) for s in data["shapes"]] == tool.shapes(ds), (preset, ds)
            assert [r["layer"] for r in data["losses"]] == [item["layer"] + 1 for item in tool.layout(preset, ds)]


@pytest.mark.parametrize("preset,dataset", CASES)
def test_preset_matches_authors_cploss(preset, dataset):
    fixture = FIXTURES[preset]
    cfg = load_config(preset, ["model.width=0.0625", f"data.name={dataset}"])
    parts = build(cfg)
    # the preset's encoder has the official VGG-6's activity shapes, and its objectives the script's pooling
    assert [spec.shape for spec in parts.layers] == tool.shapes(dataset)
    rule = parts.rule.double()
    x = tool.seeded_inputs(preset, dataset, fixture["setup"]["seed"])
    m, b = 2 * tool.BATCH, tool.BATCH
    j = torch.arange(m)
    # the authors' --asymmetric_W_pred: target row (j + B) mod 2B against context row j; negatives z_pos[rand_index]
    views = ViewBatch(x=x["hs"][0], pos=(j + b) % m, pos_ref=j, neg=(x["rand_index"] + b) % m, neg_ref=j, n_images=b)
    items = tool.layout(preset, dataset)
    assert sorted(int(k) for k in rule.objectives) == [item["layer"] + 1 for item in items]
    top = x["hs"][-1]
    for item, bmat, ref in zip(items, x["B"], fixture["datasets"][dataset]["losses"]):
        obj = rule.objectives[str(item["layer"] + 1)]
        assert len(obj.B) == 1
        obj.B[0].maps.weight.data.copy_(bmat)  # shape mismatch = a different pooling or reference than the script
        h = x["hs"][item["layer"]].clone().requires_grad_()
        refs = [h] if item["ref"] == item["layer"] else [top]
        if cfg.rule.name == "local":
            refs = rule._refs(h, top)  # the rule's own wiring of references
        loss = obj(h, refs, views).loss
        grads = dict(zip(("h", "B"), torch.autograd.grad(loss, [h, obj.B[0].maps.weight])))
        where = f"{preset} {dataset} layer {ref['layer']}"
        assert _rel(float(loss.detach()), ref["loss"]) <= 1e-6, where
        for key, g in grads.items():
            assert _rel(float(g.norm()), ref["grad_norm"][key]) <= 1e-6, f"{where} {key}"
            entries = ref["grad_entries"][key]
            torch.testing.assert_close(
                g.flatten()[entries["index"]],
                torch.tensor(entries["value"], dtype=torch.float64),
                rtol=1e-6,
                atol=1e-12,
                msg=f"{where} {key}",
            )
