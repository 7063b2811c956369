"""DFA (Nøkland 2016): top layer = backprop's update, hidden layers = (B_l e ⊙ f'(a_l)) x_lᵀ with a
fixed, seeded random B_l."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import labelled_views, make_rule, mlp, ring_task_accuracy, specs
from torch import nn

from localssl.build import build
from localssl.config import load_config
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.views.base import ViewBatch, next_image_negatives, swap_halves

pytestmark = pytest.mark.usefixtures("one_thread")


def contrastive_views(n_images: int, shape: tuple[int, ...], seed: int = 0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n_images, *shape, generator=g)
    pos = swap_halves(2 * n_images)
    ar = torch.arange(2 * n_images)
    return ViewBatch(x=x, pos=pos, pos_ref=ar, neg=next_image_negatives(pos), neg_ref=ar, n_images=n_images)


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


CE = {"name": "cross_entropy", "num_classes": 3}
HINGE = {"name": "contrastive", "pooling": "global"}
INFONCE = {"name": "infonce", "head_dim": 16}


@pytest.mark.parametrize("objective", [CE, HINGE, INFONCE])
def test_top_layer_and_objective_get_backprop_update(objective):
    widths = [6, 12, 10, 8]
    views = labelled_views(16, 6) if objective is CE else contrastive_views(8, (6,))
    enc_bp, enc_dfa = mlp(widths), mlp(widths)
    bp = make_rule("backprop", objective, specs(widths))
    dfa = make_rule("dfa", objective, specs(widths))
    bp.step(enc_bp, views)
    dfa.step(enc_dfa, views)
    g_bp, g_dfa = grads(enc_bp.layers[-1]), grads(enc_dfa.layers[-1])
    assert g_bp.keys() == g_dfa.keys() and g_bp
    for k in g_bp:
        torch.testing.assert_close(g_dfa[k], g_bp[k], rtol=1e-5, atol=1e-7)
    for k, g in grads(bp.objectives).items():
        torch.testing.assert_close(grads(dfa.objectives)[k], g, rtol=1e-5, atol=1e-7)
    # hidden layers: a different (non-backprop) update
    assert not torch.allclose(enc_dfa.layers[0][0].weight.grad, enc_bp.layers[0][0].weight.grad)


def test_hidden_update_is_the_dfa_formula():
    """ΔW_l = (B_l e ⊙ f'(a_l)) x_lᵀ, ΔB_l = B_l e ⊙ f'(a_l) summed over the batch (Nøkland 2016, Eq. 3)."""
    widths = [5, 9, 7, 4]
    enc = mlp(widths)
    views = labelled_views(11, 5)
    rule = make_rule("dfa", CE, specs(widths), seed=3)
    rule.step(enc, views)
    # by hand: forward, e = ∂L/∂h_L of the same objective
    with torch.no_grad():
        xs, acts, h = [], [], views.x
        for layer in enc.layers:
            xs.append(h)
            a = layer[0](h)
            acts.append(a)
            h = torch.relu(a)
    top = h.clone().requires_grad_(True)
    readout = rule.objectives["3"].readout
    loss = F.cross_entropy(readout(top), views.labels)
    (e,) = torch.autograd.grad(loss, top)
    for layer in (1, 2):
        b = rule.feedback(layer)
        delta = (e @ b.T) * (acts[layer - 1] > 0).float()
        expected_w = delta.T @ xs[layer - 1]
        torch.testing.assert_close(enc.layers[layer - 1][0].weight.grad, expected_w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(enc.layers[layer - 1][0].bias.grad, delta.sum(0), rtol=1e-5, atol=1e-6)


def test_feedback_matrix_is_seeded_fixed_and_not_trained():
    widths = [6, 10, 10, 5]
    views = labelled_views(16, 6)

    def hidden_grad(seed: int) -> torch.Tensor:
        enc = mlp(widths)
        make_rule("dfa", CE, specs(widths), seed=seed).step(enc, views)
        return enc.layers[0][0].weight.grad

    torch.testing.assert_close(hidden_grad(0), hidden_grad(0))
    assert not torch.allclose(hidden_grad(0), hidden_grad(1))

    enc = mlp(widths)
    rule = make_rule("dfa", CE, specs(widths), seed=0)
    before = {k: v.clone() for k, v in rule.named_buffers()}
    assert set(before) == {"B1", "B2"}
    params = list(rule.parameters_to_train(enc))
    assert not any(p is b for p in params for b in rule.buffers())
    opt = torch.optim.Adam(params, lr=1e-2)
    w0 = enc.layers[0][0].weight.clone()
    for _ in range(3):
        opt.zero_grad()
        rule.step(enc, views)
        opt.step()
    assert not torch.equal(w0, enc.layers[0][0].weight)  # the hidden layer did learn
    for k, v in rule.named_buffers():
        assert torch.equal(v, before[k])
    # not saved in checkpoints, rebuilt identically from the seed
    assert not any(k.startswith("B") for k in rule.state_dict())
    rebuilt = make_rule("dfa", CE, specs(widths), seed=0)
    assert torch.equal(rebuilt.feedback(1), rule.feedback(1))


def test_convnet_projects_onto_the_whole_feature_map():
    cfg = load_config("dfa-clapp", ["model.width=0.0625", "train.device=cpu"])
    comp = build(cfg)
    rule, enc = comp.rule, comp.encoder
    assert rule.error_mode == "channels"  # global pooling at the top
    top_c = comp.layers[-1].shape[0]
    for spec in comp.layers[:-1]:
        assert tuple(rule.feedback(spec.index + 1).shape) == (torch.Size(spec.shape).numel(), top_c)
    views = contrastive_views(4, (3, 32, 32))
    metrics = rule.step(enc, views)
    assert "loss_l6" in metrics
    for layer in enc.layers:
        g = layer[0].weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # a spatially resolved top objective projects the full map
    rule_map = make_rule("dfa", {"name": "contrastive", "pooling": "none"}, comp.layers)
    assert rule_map.error_mode == "map"
    assert rule_map.feedback(1).shape[1] == torch.Size(comp.layers[-1].shape).numel()


def test_channels_mode_equals_map_mode_in_distribution():
    """With a globally pooled top objective e is constant over locations, so B_map e equals
    (Σ_locations B_map) mean_loc(e): a matrix with N(0, 1/C_L) entries, as the channels mode draws."""
    c, s, d = 16, 9, 4000
    b_map = torch.randn(d, c * s, generator=torch.Generator().manual_seed(0)) / (c * s) ** 0.5
    e = torch.randn(3, c, 1).expand(3, c, s) / s  # ∂L/∂h of L(mean over locations)
    summed = b_map.view(d, c, s).sum(-1)
    torch.testing.assert_close(e.reshape(3, -1) @ b_map.T, e.mean(-1) @ summed.T, rtol=1e-4, atol=1e-6)
    assert abs(summed.var().item() * c - 1) < 0.03


def test_dfa_trained_hidden_layers_learn_what_random_ones_cannot():
    frozen, dfa = ring_task_accuracy("dfa", False, 200), ring_task_accuracy("dfa", True, 200)
    assert dfa > 0.75 and dfa > frozen + 0.2, (frozen, dfa)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"rule\.error"):
        RULES.make_config({"name": "dfa", "error": "pooled"})
    with pytest.raises(ConfigError, match="GiB"):
        huge = [LayerSpec(0, (400_000,)), LayerSpec(1, (20_000,))]
        make_rule("dfa", {"name": "contrastive", "pooling": "none"}, huge)


def test_rule_state_survives_copy():
    widths = [4, 6, 3]
    rule = make_rule("dfa", CE, specs(widths))
    torch.testing.assert_close(copy.deepcopy(rule).feedback(1), rule.feedback(1))
