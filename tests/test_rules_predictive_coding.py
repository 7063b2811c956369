"""Incremental predictive coding: the energy's gradients are Eq. 10 (activities) and the Hebbian Eq. 11
(weights); the weight update converges to backprop's for small activity steps; inference lowers the
energy; the iPC schedule steps the trainer's optimizer at every iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import labelled_views, make_rule, mlp, ring_task_accuracy, specs
from torch import nn

from localssl.config import load_config
from localssl.data.base import ImageData
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.rules.base import StepContext
from localssl.train import Trainer, resolve_config
from localssl.views.base import ViewBatch, next_image_negatives, swap_halves

pytestmark = pytest.mark.usefixtures("one_thread")


CE = {"name": "cross_entropy", "num_classes": 3}
HINGE = {"name": "contrastive", "pooling": "global"}
INFONCE = {"name": "infonce", "head_dim": 16}


def contrastive_views(n_images: int, d: int, seed: int = 0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    pos = swap_halves(2 * n_images)
    ar = torch.arange(2 * n_images)
    x = torch.randn(2 * n_images, d, generator=g)
    return ViewBatch(x=x, pos=pos, pos_ref=ar, neg=next_image_negatives(pos), neg_ref=ar, n_images=n_images)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_energy_gradients_are_eq10_and_hebbian_eq11():
    """At any state: N ∂E/∂h_l = ε_l − W_{l+1}ᵀ(ε_{l+1} ⊙ f'(a_{l+1})) (+ N ∂L/∂h_L at the top), and
    ∂E/∂W_l = −(1/N) (ε_l ⊙ f'(a_l))ᵀ h_{l−1} (CLAPP++ App. C, Eq. 10–11)."""
    widths = [5, 7, 6, 4]
    enc = mlp(widths)
    rule = make_rule("predictive_coding", CE, specs(widths))
    views = labelled_views(9, 5)
    n = 9
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        hs = [h + 0.3 * torch.randn(h.shape, generator=g) for h in enc(views.x)]  # off the feedforward state
    hs = [h.clone().requires_grad_(True) for h in hs]
    en = rule.energy(enc, views.x, hs, views)
    en.total.backward()
    below = [views.x, *hs[:-1]]
    eps, dact = [], []
    with torch.no_grad():
        for layer, h_in, h in zip(enc.layers, below, hs):
            a = layer[0](h_in)
            eps.append(h - torch.relu(a))
            dact.append((a > 0).to(a.dtype))
        err = sum(0.5 * e.square().sum() / n for e in eps)
    torch.testing.assert_close(en.prediction_error.detach(), err)
    top = hs[-1].detach().clone().requires_grad_(True)
    loss = F.cross_entropy(rule.objectives["3"].readout(top), views.labels)
    (dl,) = torch.autograd.grad(loss, top)
    for i, layer in enumerate(enc.layers):
        expected_w = -(eps[i] * dact[i]).T @ below[i].detach() / n
        torch.testing.assert_close(layer[0].weight.grad, expected_w, rtol=1e-5, atol=1e-6)
        expected_h = eps[i].clone()
        if i + 1 < len(enc.layers):
            expected_h -= (eps[i + 1] * dact[i + 1]) @ enc.layers[i + 1][0].weight.detach()
        else:
            expected_h += n * dl
        torch.testing.assert_close(n * hs[i].grad, expected_h, rtol=1e-5, atol=1e-6)


def linear_net(seed: int = 0) -> LayeredEncoder:
    torch.manual_seed(seed)
    return LayeredEncoder([nn.Linear(6, 8, bias=False), nn.Linear(8, 5, bias=False)]).double()


def pc_vs_backprop_cosines(alpha: float, T: int) -> list[float]:
    layers = [LayerSpec(0, (8,)), LayerSpec(1, (5,))]
    views = labelled_views(32, 6, dtype=torch.float64)
    enc_bp, enc_pc = linear_net(), linear_net()
    bp = make_rule("backprop", CE, layers).double()
    pc = make_rule("predictive_coding", CE, layers, T=T, alpha=alpha, momentum=0.0).double()
    bp.step(enc_bp, views)
    pc.step(enc_pc, views)
    out = [cosine(a.weight.grad, b.weight.grad) for a, b in zip(enc_pc.layers, enc_bp.layers)]
    return [*out, cosine(pc.objectives["2"].readout.weight.grad, bp.objectives["2"].readout.weight.grad)]


def test_linear_network_update_converges_to_backprop():
    """2-layer linear network + linear read-out: with a tiny activity step and many iterations the
    (summed) iPC weight update of every layer points along backprop's gradient."""
    assert min(pc_vs_backprop_cosines(alpha=1e-4, T=50)) >= 0.999
    # with a large step the activities move far during the batch: the update is not backprop's
    assert min(pc_vs_backprop_cosines(alpha=0.1, T=9)) < 0.9


@pytest.mark.parametrize("objective", [CE, HINGE, INFONCE])
def test_first_iteration_trains_only_the_objective_exactly(objective):
    """At the forward-pass initialisation every prediction error is 0: with T=1 the encoder gets no
    update and the objective's parameters get exactly backprop's gradient (any top objective)."""
    widths = [6, 10, 8]
    views = labelled_views(12, 6) if objective is CE else contrastive_views(6, 6)
    enc_bp, enc_pc = mlp(widths), mlp(widths)
    bp, pc = (
        make_rule("backprop", objective, specs(widths)),
        make_rule("predictive_coding", objective, specs(widths), T=1),
    )
    bp.step(enc_bp, views)
    metrics = pc.step(enc_pc, views)
    for p in enc_pc.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    g_bp = {k: p.grad for k, p in bp.objectives.named_parameters()}
    g_pc = {k: p.grad for k, p in pc.objectives.named_parameters()}
    assert g_bp and g_bp.keys() == g_pc.keys()
    for k in g_bp:
        torch.testing.assert_close(g_pc[k], g_bp[k])
    assert float(metrics["pc_error"]) == 0.0


@pytest.mark.parametrize("objective,alpha", [(CE, 0.2), (HINGE, 0.02)])
def test_inference_decreases_the_energy(objective, alpha):
    widths = [6, 12, 10, 8]
    enc = mlp(widths)
    rule = make_rule("predictive_coding", objective, specs(widths), T=15, alpha=alpha, momentum=0.0)
    views = labelled_views(16, 6) if objective is CE else contrastive_views(8, 6)
    trace = rule.run(enc, views)
    energies = torch.stack(trace.energies)
    assert (energies[1:] <= energies[:-1] + 1e-6).all(), energies
    assert energies[-1] < energies[0] - 1e-3
    torch.testing.assert_close(energies[0], trace.first.top.loss.detach())  # E = L at the forward pass


def test_ipc_steps_the_attached_optimizer_every_iteration():
    widths = [6, 10, 8]
    views = labelled_views(16, 6)
    enc = mlp(widths)
    rule = make_rule("predictive_coding", CE, specs(widths), T=4, alpha=0.3)
    w0 = [p.detach().clone() for p in enc.parameters()]
    rule.step(enc, views)  # no optimizer: weights untouched, update summed in .grad
    assert all(torch.equal(a, p) for a, p in zip(w0, enc.parameters()))
    summed = enc.layers[0][0].weight.grad.clone()
    assert summed.abs().sum() > 0

    opt = torch.optim.SGD(list(rule.parameters_to_train(enc)), lr=0.05)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    opt.zero_grad()
    rule.step(enc, views, StepContext(optimizer=opt))
    assert len(calls) == 3  # T − 1 inside the step; the trainer makes the T-th
    assert not torch.equal(w0[0], enc.layers[0][0].weight)
    assert enc.layers[0][0].weight.grad is not None


def test_pc_trained_hidden_layers_learn_what_random_ones_cannot():
    frozen, pc = (ring_task_accuracy("predictive_coding", hidden, 100, T=5, alpha=0.5) for hidden in (False, True))
    assert pc > 0.8 and pc > frozen + 0.2, (frozen, pc)


def test_trainer_runs_ipc_with_T_weight_updates_per_batch(tmp_path: Path):
    cfg = resolve_config(
        load_config(
            "pc-clapp",
            [
                "model.width=0.0625",
                "train.batch_size=4",
                "train.epochs=1",
                "train.device=cpu",
                "rule.T=3",
                "train.progress=false",
                f"out_dir={tmp_path}",
            ],
        )
    )
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(8).long(), [])
    trainer = Trainer(cfg, tmp_path / "run", data=data)
    (tmp_path / "run").mkdir()
    summary = trainer.fit()
    assert summary["global_step"] == 2
    state = trainer.optimizer.state[trainer.comp.encoder.layers[0][0].weight]
    assert int(state["step"]) == 2 * 3  # two batches × T weight updates
    assert {"loss_l6", "pc_energy", "pc_error"} <= set(summary["final"])


def test_bad_config_is_a_clear_error():
    for key, value in (("T", 0), ("alpha", 0.0), ("momentum", 1.0)):
        with pytest.raises(ConfigError, match=f"rule\\.{key}"):
            RULES.make_config({"name": "predictive_coding", key: value})


def test_ipc_with_per_layer_optimizers_equals_one_optimizer(tmp_path: Path):
    """``train.step_each_layer`` hands the per-layer optimizers to the rule together: iPC's T weight
    updates per batch then give exactly the weights of the single-optimizer run."""
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(8).long(), [])
    weights = []
    for each_layer in ("false", "true"):
        overrides = ["model.width=0.0625", "train.batch_size=4", "train.epochs=1", "train.device=cpu", "rule.T=3"]
        out = tmp_path / each_layer
        cfg = resolve_config(
            load_config("pc-clapp", [*overrides, "train.progress=false", f"train.step_each_layer={each_layer}"])
        )
        trainer = Trainer(cfg, out, data=data)
        out.mkdir()
        trainer.fit()
        weights.append([p.detach().clone() for p in trainer.comp.encoder.parameters()])
    initial = Trainer(cfg, tmp_path / "init", data=data).comp.encoder.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(weights[0], initial))  # the weights did move
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
