"""CLAPP++both = the sum of two hinge losses, each with its own B (paper; authors' ``--extra_lateral_loss``)."""

import torch
import torch.nn.functional as F

from localssl.config import load_config
from localssl.objectives.base import LayerSpec
from localssl.objectives.contrastive import ContrastiveConfig, ContrastiveObjective
from localssl.views.base import ViewBatch


def _setup(combine: str):
    torch.manual_seed(0)
    target = LayerSpec(index=1, shape=(4, 8, 8), pool_kernel=4)
    top = LayerSpec(index=5, shape=(6, 2, 2), pool_kernel=1)
    obj = ContrastiveObjective(ContrastiveConfig(combine=combine), target, [target, top]).double()
    h = torch.randn(6, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 6, 2, 2, dtype=torch.float64)
    idx = torch.arange(6)
    views = ViewBatch(x=h, pos=idx, pos_ref=(idx + 3) % 6, neg=idx, neg_ref=(idx + 1) % 6, n_images=3)
    return obj, h, t, views


def _hinge_loss(z: torch.Tensor, c: torch.Tensor, B: torch.Tensor, v: ViewBatch) -> torch.Tensor:
    """relu(1 − z⁺ᵀBc⁺) + relu(1 + z⁻ᵀBc⁻), batch means (CLAPP's hinge, one B)."""
    s_pos = (z[v.pos] * (c[v.pos_ref] @ B.T)).sum(-1)
    s_neg = (z[v.neg] * (c[v.neg_ref] @ B.T)).sum(-1)
    return F.relu(1 - s_pos).mean() + F.relu(1 + s_neg).mean()


def test_sum_losses_is_two_hinges_with_their_own_B():
    obj, h, t, views = _setup("sum_losses")
    loss = obj(h, [h, t], views).loss
    z, c_same, c_top = F.avg_pool2d(h, 4).flatten(1), F.avg_pool2d(h, 4).flatten(1).detach(), t.flatten(1)
    b_same, b_top = obj.B[0].matrix(), obj.B[1].matrix()
    expected = _hinge_loss(z, c_same, b_same, views) + _hinge_loss(z, c_top, b_top, views)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    g = torch.autograd.grad(loss, [h, b_same, b_top])
    g_ref = torch.autograd.grad(expected, [h, b_same, b_top])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_sum_scores_is_one_hinge_on_summed_predictions():
    obj, h, t, views = _setup("sum_scores")
    loss = obj(h, [h, t], views).loss
    z = F.avg_pool2d(h, 4).flatten(1)
    c = torch.cat([z.detach(), t.flatten(1)], 1)
    B = torch.cat([obj.B[0].matrix(), obj.B[1].matrix()], 1)  # one B over the concatenated contexts
    torch.testing.assert_close(loss, _hinge_loss(z, c, B, views), rtol=1e-12, atol=0)
    obj2, *_ = _setup("sum_losses")
    assert abs(float(obj2(h, [h, t], views).loss.detach()) - float(loss.detach())) > 1e-3  # the two options differ


def test_preset_sums_losses():
    cfg = load_config("clapp++both")
    assert cfg.rule.reference == "both" and cfg.objective.combine == "sum_losses"
