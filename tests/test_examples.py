"""The examples/ scripts run through the public API (tiny settings, seconds)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import labelled_views, mlp, specs

from localssl.registry import OBJECTIVES, RULES
from localssl.rules.base import StepContext

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_custom_objective_registered_from_user_code_trains_and_probes(
    pattern_cifar_root, tmp_path, isolated_registries
):
    example = _load("custom_objective")
    tiny = ["model.width=0.0625", "train.batch_size=32", "train.device=cpu", "train.progress=false"]
    result = example.main(
        [*tiny, "train.epochs=2", f"data.root={pattern_cifar_root}", f"out_dir={tmp_path / 'runs'}", "probe.epochs=15"]
    )
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("cosine-variance-")  # named after the objective, not the preset it starts from
    assert "cosine-variance" in (run / "config.yaml").read_text()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(rows[1][f"loss_l{k}"]) < float(rows[0][f"loss_l{k}"]) for k in range(1, 7))  # minimised
    assert result["test_acc_pct"] > 30  # chance is 10 %
    assert not any(p.name.startswith("features-") for p in run.iterdir())


# --- examples/custom_rule.py: overlapping two-layer blocks (LoCo) ---


def _overlap_rule(beta: float):
    cfg = RULES.make_config({"name": "local-overlap", "beta": beta})
    torch.manual_seed(1)
    objective = OBJECTIVES.make_config({"name": "cross_entropy", "num_classes": 3})
    return RULES.get("local-overlap").builder(cfg, objective, specs([10, 16, 16, 8]))


def _grad(layer) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in layer.parameters()])


def _grads(encoder) -> list[torch.Tensor]:
    return [_grad(layer) for layer in encoder.layers]


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_custom_rule_gradient_is_the_docstring_equation(isolated_registries, beta):
    """Oracle, closed form by autograd: ΔW_l ∝ −(∂L_l/∂W_l + β ∂L_{l+1}/∂W_l), L_{l+1} on
    layer_{l+1}(layer_l(h_{l−1})) with h_{l−1} detached; β = 0 is the built-in local rule."""
    _load("custom_rule")
    encoder, rule, views = mlp([10, 16, 16, 8]), _overlap_rule(beta), labelled_views(32, 10)
    done: list[tuple[int, torch.Tensor]] = []
    ctx = StepContext(layer_done=lambda i: done.append((i, _grad(encoder.layers[i]).clone())))
    metrics = rule.step(encoder, views, ctx)
    assert set(metrics) >= {"loss_l1", "loss_l2", "loss_l3"}
    got = _grads(encoder)

    hs = [views.x, *(h.detach() for h in encoder(views.x))]
    losses = [
        rule.objectives[str(i + 1)](layer(hs[i]), [layer(hs[i])], views).loss for i, layer in enumerate(encoder.layers)
    ]
    for i, layer in enumerate(encoder.layers):
        params = list(layer.parameters())
        expected = torch.autograd.grad(losses[i], params, retain_graph=True)
        if i + 1 < len(encoder.layers):
            upper = encoder.layers[i + 1](layer(hs[i]))
            above = rule.objectives[str(i + 2)](upper, [upper], views).loss
            expected = [e + beta * g for e, g in zip(expected, torch.autograd.grad(above, params))]
        torch.testing.assert_close(got[i], torch.cat([e.flatten() for e in expected]))

    # streaming contract: every layer announced once, in order, with its gradient already final
    assert [i for i, _ in done] == [0, 1, 2]
    for i, grad in done:
        torch.testing.assert_close(grad, got[i])


def test_custom_rule_beta_zero_is_the_local_rule(isolated_registries):
    _load("custom_rule")
    views, objective = labelled_views(32, 10), OBJECTIVES.make_config({"name": "cross_entropy", "num_classes": 3})
    grads = []
    for name, kw in (("local-overlap", {"beta": 0.0}), ("local", {"reference": "same"})):
        encoder = mlp([10, 16, 16, 8])
        torch.manual_seed(1)
        rule = RULES.get(name).builder(RULES.make_config({"name": name, **kw}), objective, specs([10, 16, 16, 8]))
        rule.step(encoder, views)
        grads.append(_grads(encoder))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_custom_rule_registered_from_user_code_trains_and_probes(pattern_cifar_root, tmp_path, isolated_registries):
    example = _load("custom_rule")
    tiny = ["model.width=0.0625", "train.batch_size=32", "train.device=cpu", "train.progress=false"]
    result = example.main(
        [*tiny, "train.epochs=2", f"data.root={pattern_cifar_root}", f"out_dir={tmp_path / 'runs'}", "probe.epochs=15"]
    )
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("local-overlap-")  # named after the rule, not the preset it starts from
    text = (run / "config.yaml").read_text()
    assert "local-overlap" in text and "components:\n  rule: example_custom_rule" in text
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert result["test_acc_pct"] > 30  # chance is 10 %
