"""Gradient alignment with backprop (evaluate/alignment.py; the BP reference in rules/global_gradient.py), the
Def. 3.4 optimum (rules/optimal_feedback.py) and `localssl align`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from localssl.data import dataset_info
from localssl.evaluate.alignment import gradient_alignment
from localssl.objectives.base import LayerSpec
from localssl.registry import MODELS, OBJECTIVES, RULES, VIEWS, ConfigError
from localssl.rules.global_gradient import backprop_reference, rule_updates
from localssl.rules.optimal_feedback import match_feedback_grads, optimal_feedback
from localssl.views.base import ViewBatch, next_image_negatives, swap_halves


def mlp_setup(rule: dict, widths=(8, 8, 8), activation="relu", **objective):
    torch.manual_seed(0)
    d_in = 6
    enc = (
        MODELS.get("mlp")
        .builder(
            MODELS.make_config({"name": "mlp", "in_features": d_in, "widths": list(widths), "activation": activation})
        )
        .double()
    )
    obj = OBJECTIVES.make_config(
        {"name": "contrastive", "f": "softplus", "loss_type": 2, "pooling": "none", **objective}
    )
    layers = [LayerSpec(i, s) for i, s in enumerate(enc.output_shapes((d_in,)))]
    return enc, RULES.get(rule["name"]).builder(RULES.make_config(rule), obj, layers).double()


def batch(n: int = 6, d: int = 6, seed: int = 0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = torch.cat([base + 0.2 * torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2)])
    pos, anchor = swap_halves(2 * n), torch.arange(2 * n)
    return ViewBatch(x=x, pos=pos, pos_ref=anchor, neg=next_image_negatives(pos), neg_ref=anchor, n_images=n)


def vgg_setup(rule: dict, pooling) -> tuple:
    from localssl.build import layer_specs

    info = dataset_info("cifar10")
    torch.manual_seed(0)
    enc = MODELS.get("vgg6").builder(MODELS.make_config({"name": "vgg6", "width": 1 / 32}), in_channels=3)
    obj = OBJECTIVES.make_config({"name": "contrastive", "f": "hinge", "pooling": pooling})
    rule_mod = RULES.get(rule["name"]).builder(RULES.make_config(rule), obj, layer_specs(enc, info))
    views = VIEWS.get("simclr").builder(VIEWS.make_config({"name": "simclr"}), info)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(1)
    return enc, rule_mod, [views(images)]


def test_backprop_is_aligned_with_itself_mlp_and_convnet() -> None:
    enc, rule = mlp_setup({"name": "backprop"})
    for r in gradient_alignment(enc, rule, [batch(), batch(seed=1)]):
        assert r.cosine == pytest.approx(1.0, abs=1e-12) and r.rel_norm == pytest.approx(1.0, abs=1e-12)
        assert r.sq_error == pytest.approx(0.0, abs=1e-20) and r.n_batches == 2
    enc, rule, batches = vgg_setup({"name": "backprop"}, "global")
    for r in gradient_alignment(enc, rule, batches, params="all"):
        assert r.cosine == pytest.approx(1.0, abs=1e-5) and r.rel_norm == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("reference", ["same", "top", "both"])
def test_local_rule_equals_bp_only_at_the_top(reference: str) -> None:
    """The top layer's local loss *is* the BP loss (same objective, same B): cosine 1 there; below
    the top an untrained local rule is not BP."""
    enc, rule = mlp_setup({"name": "local", "reference": reference})
    res = gradient_alignment(enc, rule, [batch()])
    assert res[-1].cosine == pytest.approx(1.0, abs=1e-10) and res[-1].rel_norm == pytest.approx(1.0, abs=1e-10)
    assert res[0].cosine < 0.99


def test_convnet_with_fixed_spatial_B() -> None:
    enc, rule, batches = vgg_setup({"name": "local", "reference": "top"}, [4, 4, 4, 2, 2, 0])
    for obj in rule.objectives.values():
        obj.requires_grad_(False)  # fixed random B everywhere
    res = gradient_alignment(enc, rule, batches)
    assert len(res) == 6 and res[-1].cosine == pytest.approx(1.0, abs=1e-5)
    assert all(-1.0 <= r.cosine <= 1.0 for r in res)


def test_rule_updates_leave_no_gradient_behind() -> None:
    enc, rule = mlp_setup({"name": "local", "reference": "same"})
    ups = rule_updates(enc, rule, batch())
    assert [u.numel() for u in ups] == [8 * 6, 8 * 8, 8 * 8]
    assert all(p.grad is None for p in [*enc.parameters(), *rule.parameters()])
    assert len(rule_updates(enc, rule, batch(), params="all")[0]) == 8 * 6 + 8  # weights and biases


def test_dfa_rule_is_measured_through_its_step() -> None:
    """Any rule works: DFA (another helper's rule) is measured through Rule.step and its top objective."""
    if "dfa" not in RULES:
        pytest.skip("no dfa rule registered")
    enc, rule = mlp_setup({"name": "dfa"})
    enc, rule, vb = enc.float(), rule.float(), batch()
    vb.x = vb.x.float()
    res = gradient_alignment(enc, rule, [vb])
    assert res[-1].cosine == pytest.approx(1.0, abs=1e-5) and len(res) == 3


def test_rule_without_top_objective_is_a_clear_error() -> None:
    enc, rule = mlp_setup({"name": "frozen"})
    with pytest.raises(ConfigError, match="top-layer objective"):
        backprop_reference(rule, enc)


def linear_dfb(f: str):
    enc, rule = mlp_setup({"name": "local", "reference": "top"}, widths=(8, 6, 4), activation="linear", f=f)
    enc.layers.apply(lambda m: torch.nn.init.zeros_(m.bias) if isinstance(m, torch.nn.Linear) else None)
    return enc, rule


def test_dfb_with_transported_B_is_exact_in_a_linear_net() -> None:
    """Linear net, reference = top: with B_l = (W_L ⋯ W_{l+1})ᵀ B_L the local loss of h_l *is* the
    top loss, so the local update equals the BP update for any W (the optimum of Def. 3.4 is exact)."""
    enc, rule = linear_dfb("softplus")
    with torch.no_grad():
        m = torch.eye(4, dtype=torch.float64)
        b_top = rule.objectives["3"].B[0].maps.weight
        for layer in (2, 1):
            m = m @ enc.layers[layer].linear.weight
            rule.objectives[str(layer)].B[0].maps.weight.copy_(m.T @ b_top)
    for r in gradient_alignment(enc, rule, [batch()]):
        assert r.cosine == pytest.approx(1.0, abs=1e-10) and r.rel_norm == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("match", ["activity", "update"])
def test_optimal_feedback_fit_reaches_bp(match: str) -> None:
    """Def. 3.4: fitting B to the BP gradient from a random start drives the alignment to ~1 where an
    exact solution exists (linear net, DFB), and lowers the squared error it minimises."""
    enc, rule = linear_dfb("softplus")
    batches = [batch(seed=s) for s in range(3)]
    before = gradient_alignment(enc, rule, batches)
    mse0 = float(match_feedback_grads(enc, rule, batches[0], match=match))
    fitted = optimal_feedback(enc, rule, batches, steps=400, lr=3e-2, match=match)
    after = gradient_alignment(enc, fitted, batches)
    assert float(match_feedback_grads(enc, fitted, batches[0], match=match)) < 1e-2 * mse0
    # the weight-update error constrains B less per step than the per-sample activity error: slower fit
    floor = 0.999 if match == "activity" else 0.85
    assert min(r.cosine for r in after) > floor and max(r.cosine for r in before[:-1]) < 0.2
    assert all(p.grad is None for p in enc.parameters())


def test_optimal_feedback_rule_trains_W_locally_and_B_on_the_bp_error() -> None:
    enc, rule = linear_dfb("softplus")
    opt_rule = (
        RULES.get("optimal_feedback")
        .builder(
            RULES.make_config({"name": "optimal_feedback"}),
            OBJECTIVES.make_config({"name": "contrastive", "f": "softplus", "loss_type": 2, "pooling": "none"}),
            [LayerSpec(i, s) for i, s in enumerate(enc.output_shapes((6,)))],
        )
        .double()
    )
    opt_rule.load_state_dict(rule.state_dict())
    vb = batch()
    w_local, w_opt = rule_updates(enc, rule, vb), rule_updates(enc, opt_rule, vb)
    for a, b in zip(w_local, w_opt):  # the same local weight update ...
        assert torch.allclose(a, b, atol=1e-12)
    rule.step(enc, vb)
    opt_rule.step(enc, vb)
    b_local = rule.objectives["1"].B[0].maps.weight.grad
    b_opt = opt_rule.objectives["1"].B[0].maps.weight.grad
    assert not torch.allclose(b_local, b_opt)  # ... but B learns from the BP error, not the local loss
    assert torch.allclose(rule.objectives["3"].B[0].maps.weight.grad, opt_rule.objectives["3"].B[0].maps.weight.grad)


def test_align_cli_on_a_trained_run(tmp_path: Path) -> None:
    from localssl.cli import main

    args = [
        "pretrain", "clapp++", "data.name=cifar10-mini", "model.width=0.0625", "train.epochs=1",
        "train.max_steps_per_epoch=2", "train.batch_size=8", "train.device=cpu", "train.progress=false",
        "objective.pooling=[4,4,4,2,2,0]", f"out_dir={tmp_path}",
    ]  # fmt: skip
    assert main(args) == 0
    run_dir = next(tmp_path.iterdir())
    assert main(["align", str(run_dir), "--batches", "2", "--optimal-steps", "3"]) == 0
    result = json.loads((run_dir / "alignment.json").read_text())
    assert [r["layer"] for r in result["layers"]] == [1, 2, 3, 4, 5, 6]
    assert result["layers"][-1]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert len(result["optimal_feedback"]["layers"]) == 6 and result["n_batches"] == 2


# --------------------------------------------------------------- Fig. 3B / 4C (training runs)


def _mnist_or_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_theory import mnist_root

    root = mnist_root()
    if root is None:
        pytest.skip("MNIST not found ($LOCALSSL_DATA or ../shared/data)")
    monkeypatch.setenv("LOCALSSL_DATA", str(root))


def test_fig3b_small_direct_feedback_beats_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Width 64, 300 steps: DFB and the Def. 3.4 optimum align better with BP than same-layer local,
    and DFB better than fixed random feedback. (optimum vs DFB and local vs fixed B are closer than the
    seed-to-seed spread at this size: they are asserted by the slow cpu-scale test below.)"""
    from localssl.experiments.clapp_pp.alignment_figs import FIG3B_RULES, TrainSetting, mean_below_top, measure_fig3b
    from localssl.experiments.clapp_pp.theory_common import mnist_images

    _mnist_or_skip(monkeypatch)
    setting = TrainSetting(steps=300, eval_every=300, lr=2e-4, lr_min=None, test_batches=4)
    rows = measure_fig3b(setting, 64, [0], mnist_images("train", 4096), mnist_images("test", 128))
    m = {g: mean_below_top(rows, "rule", g, 6, 300) for g in FIG3B_RULES}
    assert m["dfb"] > m["local"] and m["optimum"] > m["local"] and m["dfb"] > m["fixed_B"], m
    assert {r["step"] for r in rows} == {0, 300}


@pytest.mark.slow
def test_fig3b_cpu_scale_published_ordering(monkeypatch: pytest.MonkeyPatch) -> None:
    """`localssl reproduce fig3b --scale cpu`: optimum ≥ DFB ≥ local > fixed random B (mean, layers 1–5)."""
    from localssl.experiments.clapp_pp.alignment_figs import check_fig3b, fig3b_setting, measure_fig3b
    from localssl.experiments.clapp_pp.theory_common import mnist_images

    _mnist_or_skip(monkeypatch)
    setting, width = fig3b_setting("cpu", None)
    rows = measure_fig3b(setting, width, [0], mnist_images("train"), mnist_images("test", 32 * setting.test_batches))
    claims = check_fig3b(rows)
    assert all(c.holds for c in claims), [c.line() for c in claims]


def test_fig4c_smoke_runs_every_rule(tmp_path: Path) -> None:
    """The VGG-6 alignment experiment end to end at smoke scale (shipped CIFAR-10 subset)."""
    from localssl.data import load_split
    from localssl.experiments.clapp_pp.alignment_figs import FIG4C_RULES, fig4c_setting, measure_fig4c

    setting, _ = fig4c_setting("smoke", 2)
    setting = dataclasses.replace(setting, test_batches=1, batch_images=8)
    train, test = load_split("cifar10-mini", "train"), load_split("cifar10-mini", "test")
    rows = measure_fig4c(setting, 1 / 32, [0], "cifar10-mini", train, test)
    assert {r["rule"] for r in rows} == set(FIG4C_RULES) and {r["step"] for r in rows} == {0, 2}
    top = [r["cosine"] for r in rows if r["layer"] == 6]
    assert all(c == pytest.approx(1.0, abs=1e-4) for c in top)  # every rule's top loss is the BP loss
