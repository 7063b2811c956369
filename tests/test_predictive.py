"""The k-step predictive objective (CPC / hinge CPC / CLAPP) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from localssl.objectives.base import LayerSpec
from localssl.objectives.predictive import PredictiveConfig, PredictiveObjective, as_sequence
from localssl.registry import ConfigError
from localssl.views.base import ViewBatch


def _views(grid=None, n=2) -> ViewBatch:
    e = torch.zeros(0, dtype=torch.long)
    return ViewBatch(x=torch.zeros(1), pos=e, pos_ref=e, neg=e, neg_ref=e, n_images=n, grid=grid)


def _objective(c: int, **kw) -> PredictiveObjective:
    return PredictiveObjective(PredictiveConfig(**kw), LayerSpec(0, (c, 8)), [LayerSpec(0, (c, 8))]).double()


def test_hinge_loss_by_hand() -> None:
    """Two 1-unit sequences, W_1 = 2, skip 0: u⁺ = 2 z[b,t+1] z[b,t], u⁻ = 2 z[1-b,t+1] z[b,t]."""
    obj = _objective(1, loss="hinge", steps=1, skip=0, negatives="same_location")
    obj.W[0].weight.data.fill_(2.0)
    z = torch.tensor([[[0.1, 0.5, 1.0, -0.3]], [[0.7, -0.2, 0.4, 0.9]]], dtype=torch.float64)  # (B, C, T)
    out = obj(z, [z], _views())
    s = z[:, 0].tolist()
    lp = [sum(max(0.0, 1 - 2 * s[b][t + 1] * s[b][t]) for t in range(3)) / 3 for b in range(2)]
    ln = [sum(max(0.0, 1 + 2 * s[1 - b][t + 1] * s[b][t]) for t in range(3)) / 3 for b in range(2)]
    assert out.loss.item() == pytest.approx(sum(lp) / 2 + sum(ln) / 2, abs=1e-12)


def test_infonce_loss_by_hand() -> None:
    torch.manual_seed(0)
    obj = _objective(3, loss="infonce", steps=2, skip=0, negatives="random", n_negatives=4)
    z = torch.randn(3, 3, 6, dtype=torch.float64)
    seq = z.unsqueeze(-1)
    d = obj.draw((3, 6, 1), "cpu")
    got = obj.compute(seq, seq, d).loss.item()
    zz = z.permute(0, 2, 1)  # (B, T, C)
    flat = zz.reshape(-1, 3)
    total = 0.0
    for k in (1, 2):
        W = obj.W[k - 1].weight.detach()
        terms = []
        for b in range(3):
            for t in range(6 - k):
                pred = W @ zz[b, t]
                logits = [float(zz[b, t + k] @ pred)] + [
                    float(flat[d.negatives[k - 1][n, b, t, 0]] @ pred) for n in range(4)
                ]
                m = max(logits)
                terms.append(-(logits[0] - m - math.log(sum(math.exp(v - m) for v in logits))))
        total += sum(terms) / len(terms)
    assert got == pytest.approx(total / 2, abs=1e-10)


def test_same_location_negatives_come_from_other_images() -> None:
    obj = _objective(2, steps=3, skip=1, negatives="same_location", n_negatives=2)
    for _ in range(20):
        d = obj.draw((5, 7, 7), "cpu")
        for neg in d.negatives:
            assert neg.shape == (2, 5) and bool((neg != torch.arange(5)).all())


def test_patch_grid_layout() -> None:
    """Rows of x are image-major, then grid row, then grid column; each patch is averaged to a vector."""
    h = torch.arange(2 * 3 * 4, dtype=torch.float64).view(24, 1, 1, 1).expand(24, 2, 2, 2)
    seq = as_sequence(h, _views(grid=(3, 4)))
    assert seq.shape == (2, 2, 3, 4)
    assert seq[1, 0, 2, 3].item() == 1 * 12 + 2 * 4 + 3


def test_errors_name_the_fix() -> None:
    obj = _objective(2, steps=5, skip=1)
    with pytest.raises(ValueError, match=r"objective\.steps"):
        obj(torch.randn(2, 2, 6), [torch.randn(2, 2, 6)], _views())
    with pytest.raises(ConfigError, match="hinge"):
        PredictiveConfig(loss="infonce", either_pos_or_neg=True)
    with pytest.raises(ConfigError, match="patch_grid"):
        obj(torch.randn(2, 2), [torch.randn(2, 2)], _views())


def test_asymmetric_is_half_the_two_losses() -> None:
    torch.manual_seed(1)
    obj = _objective(3, steps=2, skip=0, W_pred="asymmetric", negatives="random")
    seq = torch.randn(4, 3, 5, 1, dtype=torch.float64)
    d = obj.draw((4, 5, 1), "cpu")
    both = obj.compute(seq, seq, d).loss
    sym = _objective(3, steps=2, skip=0, negatives="random")
    sym.W.load_state_dict(obj.W.state_dict())
    lz = sym.compute(seq, seq, d).loss
    sym.W.load_state_dict({k: v.transpose(0, 1) for k, v in obj.W_c.state_dict().items()})  # u^c = cᵀ W^c z
    lc = sym.compute(seq, seq, d).loss
    assert both.item() == pytest.approx(0.5 * (lz.item() + lc.item()), abs=1e-12)
