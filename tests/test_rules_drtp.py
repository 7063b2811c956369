"""DRTP (Frenkel et al. 2021): hidden layers follow the fixed random projection of the one-hot target,
ΔW_l ∝ (B_l y* ⊙ f'(a_l)) x_lᵀ; the top layer gets backprop's update."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import OBJECTIVES, RULES, ConfigError
from localssl.views.base import ViewBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def setup(widths=(6, 5, 4, 3)):
    torch.manual_seed(0)
    enc = LayeredEncoder([nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in itertools.pairwise(widths)])
    layers = [LayerSpec(i, (w,)) for i, w in enumerate(widths[1:])]
    obj = OBJECTIVES.make_config({"name": "cross_entropy", "num_classes": 3, "pooling": "none"})
    rule = RULES.get("drtp").builder(RULES.make_config({"name": "drtp", "seed": 4}), obj, layers)
    x, y = torch.randn(10, widths[0]), torch.randint(0, 3, (10,))
    empty = torch.zeros(0, dtype=torch.long)
    return enc, rule, ViewBatch(x, empty, empty, empty, empty, labels=y, n_images=10), y


def test_hidden_update_is_the_projected_target_and_top_is_backprop():
    enc, rule, vb, y = setup()
    rule.step(enc, vb)
    target = F.one_hot(y, 3).float()
    for l in (1, 2):
        lin = enc.layers[l - 1][0]
        x_in = vb.x if l == 1 else enc.layers[0](vb.x)
        a = lin(x_in.detach())
        delta = (target @ rule.projection(l).T) * (a > 0).float() / len(y)  # B_l y* ⊙ f'(a_l)
        assert torch.allclose(lin.weight.grad, -(delta.T @ x_in), atol=1e-6)
    top_in = enc.layers[1](enc.layers[0](vb.x)).detach()
    h = enc.layers[2](top_in)
    loss = rule.objectives["3"](h, [h], vb).loss
    (g_top,) = torch.autograd.grad(loss, enc.layers[2][0].weight)
    assert torch.allclose(enc.layers[2][0].weight.grad, g_top, atol=1e-6)


def test_projection_is_fixed_seeded_and_not_a_parameter():
    enc, rule, vb, _ = setup()
    b = rule.projection(1).clone()
    assert b.shape == (5, 3)
    _, rule2, _, _ = setup()
    assert torch.equal(rule2.projection(1), b)
    assert all(p.shape != b.shape or not torch.equal(p, b) for p in rule.parameters())
    opt = torch.optim.SGD(list(rule.parameters_to_train(enc)), lr=0.1)
    rule.step(enc, vb)
    opt.step()
    assert torch.equal(rule.projection(1), b)


def test_needs_labels_and_classes():
    enc, rule, vb, _ = setup()
    vb.labels = None
    with pytest.raises(ConfigError, match="labelled"):
        rule.step(enc, vb)
    obj = OBJECTIVES.make_config({"name": "contrastive"})
    with pytest.raises(ConfigError, match="num_classes"):
        RULES.get("drtp").builder(RULES.make_config({"name": "drtp"}), obj, [LayerSpec(0, (3,))])
