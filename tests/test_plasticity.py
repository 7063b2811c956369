"""CLAPP's learning rule as plasticity (Illing et al. 2021, Eqs. 3, 4, 13, 14).

A one-layer network z = ρ(W x + b) encodes every patch of a patch grid; the ``predictive`` objective
(hinge, negatives at the same place of another image) is differentiated by autograd and compared, on
random inputs and in float64, with the published learning rules:

* prediction weights (Eq. 3): gated Hebbian ``ΔW^pred_jk = Σ_τ γ^τ z^τ_j c_k``;
* feed-forward weights (Eq. 4): ``ΔW_ji = Σ_τ γ^τ [(W^pred c)_j ρ'(a^τ_j) x^τ_i + (W^predᵀ z^τ)_j ρ'(a^t_j) x^t_i]``;
* without weight transport (Eqs. 13–14): ``(W^pred_z c)_j ρ'(a^τ_j) x^τ_i`` and ``(W^pred_c z^τ)_j ρ'(a^t_j) x^t_i``,
  each with its own gate, and Hebbian updates of ``W^pred_z`` and ``W^pred_c``.

γ^τ is the layer-wide third factor: the averaging weight of the sample, with sign +1 for a positive and
−1 for a negative sample, and 0 where the hinge is inactive (or the 50/50 choice dropped the term).
"""

from __future__ import annotations

import pytest
import torch

from localssl.objectives.base import LayerSpec
from localssl.objectives.predictive import PredictiveConfig, PredictiveObjective, as_sequence
from localssl.views.base import ViewBatch

B, R, S, D, C, K = 4, 5, 2, 6, 5, 2  # images, grid rows, grid columns, input dim, units, prediction steps


def _setup(w_pred: str, either: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = PredictiveConfig(
        loss="hinge", steps=K, skip=1, negatives="same_location", either_pos_or_neg=either, W_pred=w_pred
    )
    obj = PredictiveObjective(cfg, LayerSpec(0, (C,)), [LayerSpec(0, (C,))]).double()
    for p in obj.parameters():
        torch.nn.init.normal_(p, std=0.8)
    x = torch.randn(B * R * S, D, dtype=torch.float64)
    W = torch.randn(C, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True)
    views = ViewBatch(
        x=x,
        pos=torch.zeros(0),
        pos_ref=torch.zeros(0),
        neg=torch.zeros(0),
        neg_ref=torch.zeros(0),
        n_images=B,
        grid=(R, S),
    )
    h = torch.relu(x @ W.T + b)
    seq = as_sequence(h, views)
    draws = obj.draw((B, R, S), "cpu")
    if either:  # make sure both subsets are non-empty
        draws.use_pos = torch.tensor([True, False, True, False])
    out = obj.compute(seq, seq, draws)
    out.loss.backward()
    return obj, x, W, b, draws


def _weights(use_pos: torch.Tensor | None, positive: bool, t_k: int) -> torch.Tensor:
    """Per-sample averaging weight ω_b of one term (mean over samples, positions and the K steps)."""
    member = torch.ones(B, dtype=torch.bool) if use_pos is None else (use_pos if positive else ~use_pos)
    return member.double() / (member.sum() * t_k * S * K)


def _rule_updates(obj, x, W, b, draws):
    """The published rules (Eqs. 3–4 and 13–14) evaluated directly: returns ΔW, Δb, ΔW^pred (list), ΔW^pred_c."""
    a = (x @ W.T + b).detach()
    h, rho = torch.relu(a), (a > 0).double()
    grid = lambda v: v.view(B, R, S, -1)  # noqa: E731
    a, h, rho, xg = grid(a), grid(h), grid(rho), grid(x)
    asym = obj.W_c is not None
    dW, db = torch.zeros_like(W), torch.zeros_like(b)
    dWp = [torch.zeros_like(m.weight) for m in obj.W]
    dWc = [torch.zeros_like(m.weight) for m in obj.W_c] if asym else []
    for k in range(1, K + 1):
        shift, t_k = k + 1, R - k - 1
        Wz = obj.W[k - 1].weight.detach()
        c, rho_c, x_c = h[:, :t_k], rho[:, :t_k], xg[:, :t_k]
        nb = draws.negatives[k - 1][0]
        for positive, idx in ((True, torch.arange(B)), (False, nb)):
            zt, rho_t, x_t = h[idx, shift:], rho[idx, shift:], xg[idx, shift:]
            sign = 1.0 if positive else -1.0
            omega = _weights(draws.use_pos, positive, t_k)[:, None, None] * sign
            if not asym:
                pred = c @ Wz.T  # (W^pred c)
                u = (zt * pred).sum(-1)
                gamma = omega * ((u < 1) if positive else (u > -1)).double()
                dWp[k - 1] += torch.einsum("bts,btsj,btsk->jk", gamma, zt, c)  # Eq. 3
                retro = zt @ Wz  # (W^predᵀ z^τ)
                dW += torch.einsum("bts,btsj,btsi->ji", gamma, pred * rho_t, x_t)  # Eq. 4, first term
                dW += torch.einsum("bts,btsj,btsi->ji", gamma, retro * rho_c, x_c)  # Eq. 4, second term
                db += torch.einsum("bts,btsj->j", gamma, pred * rho_t + retro * rho_c)
            else:
                Wc = obj.W_c[k - 1].weight.detach()
                pred_z, pred_c = c @ Wz.T, zt @ Wc.T  # W^pred_z c  and  W^pred_c z^τ
                gz = 0.5 * omega * (((zt * pred_z).sum(-1) < 1) if positive else ((zt * pred_z).sum(-1) > -1)).double()
                gc = 0.5 * omega * (((c * pred_c).sum(-1) < 1) if positive else ((c * pred_c).sum(-1) > -1)).double()
                dWp[k - 1] += torch.einsum("bts,btsj,btsk->jk", gz, zt, c)
                dWc[k - 1] += torch.einsum("bts,btsj,btsk->jk", gc, c, zt)
                dW += torch.einsum("bts,btsj,btsi->ji", gz, pred_z * rho_t, x_t)  # Eq. 13
                dW += torch.einsum("bts,btsj,btsi->ji", gc, pred_c * rho_c, x_c)  # Eq. 14
                db += torch.einsum("bts,btsj->j", gz, pred_z * rho_t) + torch.einsum("bts,btsj->j", gc, pred_c * rho_c)
    return dW, db, dWp, dWc


@pytest.mark.parametrize("either", [False, True])
def test_clapp_updates_are_the_published_rules(either: bool) -> None:
    obj, x, W, b, draws = _setup("symmetric", either)
    dW, db, dWp, _ = _rule_updates(obj, x, W, b, draws)
    # the update is minus the gradient (gradient descent with learning rate 1)
    for k in range(K):
        torch.testing.assert_close(-obj.W[k].weight.grad, dWp[k], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(-W.grad, dW, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(-b.grad, db, atol=1e-6, rtol=1e-6)
    assert dW.abs().sum() > 0 and all(d.abs().sum() > 0 for d in dWp)


@pytest.mark.parametrize("either", [False, True])
def test_no_weight_transport_updates_are_eqs_13_14(either: bool) -> None:
    obj, x, W, b, draws = _setup("asymmetric", either)
    dW, db, dWp, dWc = _rule_updates(obj, x, W, b, draws)
    for k in range(K):
        torch.testing.assert_close(-obj.W[k].weight.grad, dWp[k], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(-obj.W_c[k].weight.grad, dWc[k], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(-W.grad, dW, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(-b.grad, db, atol=1e-6, rtol=1e-6)


def test_gates_are_mixed() -> None:
    """The comparison is only meaningful if some hinge terms are active and others are not."""
    obj, x, W, b, _ = _setup("symmetric", False)
    h = torch.relu(x @ W.T + b).detach().view(B, R, S, C)
    u = (h[:, 2:] * (h[:, :-2] @ obj.W[0].weight.detach().T)).sum(-1)
    active = (u < 1).double().mean()
    assert 0.05 < active < 0.95
