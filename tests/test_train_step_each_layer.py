"""``train.step_each_layer``: per-layer optimizers stepped right after each layer's backward."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from localssl.config import load_config
from localssl.data import ImageData
from localssl.train import Trainer, pretrain, resume

SMALL = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu", "train.progress=false", "train.lr=1e-3"]


def _trainer(preset: str, *extra: str) -> Trainer:
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(8).long(), [])
    return Trainer(load_config(preset, [*SMALL, *extra]), Path("unused"), data=data)


def _train(trainer: Trainer, steps: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    for k in range(steps):
        trainer.optimize(trainer.make_views(torch.arange(4) + 4 * (k % 2)))
    return {**trainer.comp.encoder.state_dict(), **trainer.comp.rule.state_dict()}


@pytest.mark.parametrize(
    ("preset", "streaming"),
    [("clapp++", True), ("clapp++", False), ("clapp++dfb", True), ("clapp++both", True), ("bp-clapp++", None)],
)
def test_step_each_layer_gives_the_single_optimizer_result(preset, streaming):
    """Each layer's update depends only on its own loss, and the input of layer l+1 (and the top
    reference) was computed before layer l stepped, so stepping at once changes nothing: the same
    AdamW update, per parameter, as one optimizer stepped after the whole backward."""
    extra = [] if streaming is None else [f"rule.streaming={streaming}"]
    per_layer = _trainer(preset, *extra, "train.step_each_layer=true")
    one = _trainer(preset, *extra)
    assert sorted(per_layer.optimizers) == list(range(6))  # one per layer; no parameter outside the layers
    start = {k: v.clone() for k, v in {**one.comp.encoder.state_dict(), **one.comp.rule.state_dict()}.items()}
    a, b = _train(per_layer), _train(one)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-3  # the weights did move


def test_streaming_frees_each_layers_gradients_before_the_next_layer():
    trainer = _trainer("clapp++", "train.step_each_layer=true")
    rule, seen = trainer.comp.rule, []
    inner = trainer.step_context.layer_done

    def spy(index: int) -> None:
        held = [i for i, g in enumerate(trainer.groups) if any(p.grad is not None for p in g)]
        seen.append((index, held))
        inner(index)

    trainer.step_context = dataclasses.replace(trainer.step_context, layer_done=spy)
    trainer.optimize(trainer.make_views(torch.arange(4)))
    assert [s[0] for s in seen] == list(range(6))
    for index, held in seen:
        assert held == [index], f"at layer {index + 1}'s step, gradients of groups {held} are alive"
    assert all(p.grad is None for p in rule.parameters_to_train(trainer.comp.encoder))


def test_step_each_layer_resume_is_bit_identical(cifar_root, tmp_path):
    args = [*SMALL, "train.batch_size=8", "train.max_steps_per_epoch=3", "train.step_each_layer=true"]
    args.append(f"data.root={cifar_root}")
    full = pretrain(load_config("clapp++", [*args, "train.epochs=2", f"out_dir={tmp_path / 'a'}"]))
    half = pretrain(load_config("clapp++", [*args, "train.epochs=1", f"out_dir={tmp_path / 'b'}"]))
    assert set(torch.load(half / "checkpoint.pt", weights_only=True)["optimizer"]["per_layer"]) == {
        str(i) for i in range(6)
    }
    resume(half, ["train.epochs=2"])
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(half / "checkpoint.pt", weights_only=True)
    for key in ("encoder", "rule"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    with pytest.raises(ValueError, match="cannot change on resume"):
        resume(half, ["train.step_each_layer=false"])
