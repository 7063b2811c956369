"""A dense ``B`` in kept memory (``localssl/objectives/kept.py``), bf16 autocast and fp32: the same training
trajectory bit for bit as the ordinary ``nn.Linear`` (the path it replaces), no new ``B``-sized tensor per
step, and the ordinary ``nn.Linear`` outside the local rule's step."""

from __future__ import annotations

import pytest
import torch

from localssl.bench import Runner, Spec
from localssl.objectives import contrastive
from localssl.objectives.kept import kept_b_gradients, kept_buffer_bytes
from localssl.rules.base import StepContext

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu", "data.name=cifar10", "train.precision=bf16"]
FP32 = ["train.precision=fp32", "train.channels_last=false"]


def _denses(runner: Runner) -> list[torch.nn.Linear]:
    rule = runner.trainer.comp.rule
    return [
        m.maps for m in rule.modules() if isinstance(m, contrastive.Prediction) and isinstance(m.maps, torch.nn.Linear)
    ]


def _trajectory(preset: str, extra: list[str], kept: bool, monkeypatch, steps: int = 3):
    with monkeypatch.context() as m:
        if not kept:
            m.setattr(contrastive, "uses_kept_path", lambda linear, r: False)
        runner = Runner(Spec(preset, preset), [*TINY, *extra])
        torch.manual_seed(0)
        losses = []
        for _ in range(steps):
            metrics = runner.trainer.optimize(runner.views())
            losses.append({k: v.clone() for k, v in metrics.items()})
        state = {k: v.clone() for k, v in runner.trainer.comp.rule.state_dict().items()}
        state |= {k: v.clone() for k, v in runner.trainer.comp.encoder.state_dict().items()}
        assert (kept_buffer_bytes(runner.trainer.comp.rule) > 0) == kept  # the path under test ran (or not)
    return losses, state


@pytest.mark.parametrize(
    ("preset", "extra"),
    [
        ("clapp++", []),  # streaming, one reference
        ("clapp++dfb", []),  # the summed loss, the top layer's reference
        ("clapp++", ["objective.B_l2=0.01", "train.step_each_layer=true"]),  # B also in an ordinary autograd term
        ("clapp++", FP32),  # fp32: only the gradient goes to kept memory
        ("clapp++both", FP32),  # two B per layer
    ],
)
def test_the_trajectory_is_autocasts_bit_for_bit(preset, extra, monkeypatch):
    losses, state = _trajectory(preset, extra, True, monkeypatch)
    ref_losses, ref_state = _trajectory(preset, extra, False, monkeypatch)
    assert losses[0].keys() == ref_losses[0].keys()
    for got, want in zip(losses, ref_losses):
        assert all(torch.equal(got[k], want[k]) for k in want), (got, want)
    assert state.keys() == ref_state.keys()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)


@pytest.mark.parametrize("extra", [[], FP32])
def test_no_b_sized_tensor_is_allocated_per_step(extra):
    runner = Runner(Spec("clapp++", "clapp++"), [*TINY, *extra])
    denses = _denses(runner)
    assert len(denses) == 6
    seen, ctx = [], StepContext(autocast=runner.trainer.step_context.autocast)  # bf16, as the trainer's step
    for _ in range(3):
        runner.trainer.comp.rule.step(runner.trainer.comp.encoder, runner.views(), ctx)
        seen.append([d.weight.grad.data_ptr() for d in denses])
        for d in denses:
            d.weight.grad = None  # as the optimizer's zero_grad(set_to_none=True)
    assert seen[0] == seen[1] == seen[2]  # every step's gradient lands in the same kept buffer
    grads = sum(d.weight.numel() * 4 for d in denses)
    scratch = 0 if extra else sum(2 * 2 * n for n in {d.weight.numel() for d in denses})  # bf16 weight and grad
    assert kept_buffer_bytes(runner.trainer.comp.rule) == grads + scratch


def test_a_second_backward_adds_to_the_gradient():
    lin = torch.nn.Linear(16, 8, bias=False)
    pred = contrastive.Prediction(16, 8, "trainable", None)
    pred.maps.weight.data.copy_(lin.weight)
    r, z = torch.randn(6, 16), torch.randn(6, 8)
    for low in (True, False, True):  # bf16, fp32, bf16 again: the fp32 buffer reused, the scratch back
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            (z * lin(r)).sum().backward()
        with kept_b_gradients(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            (z * pred(r)).sum().backward()
        assert pred.maps.weight.grad.data_ptr() == pred.kept.grad.data_ptr()
        assert torch.equal(pred.maps.weight.grad, lin.weight.grad)


def test_a_fixed_b_keeps_no_gradient_buffer():
    pred = contrastive.Prediction(16, 8, "fixed", None)
    r = torch.randn(6, 16)
    with kept_b_gradients(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(r)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = pred.maps(r)
    assert torch.equal(out, want) and pred.kept.grad is None and pred.kept.low is not None


def test_outside_the_rules_step_b_is_an_ordinary_linear():
    pred = contrastive.Prediction(16, 8, "trainable", None)
    r = torch.randn(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (g,) = torch.autograd.grad(pred(r).sum(), [pred.maps.weight])
    assert g.shape == (8, 16) and pred.maps.weight.grad is None and pred.kept.grad is None
    with kept_b_gradients():
        out = pred(r.requires_grad_())  # a reference that needs its gradient: the ordinary path
    assert out.dtype == torch.float32 and pred.kept.grad is None
