"""A checkpoint written record by record (:mod:`localssl.checkpoint.streamed`), as a layer-parallel rank 0 writes
every stage's state without holding it.

Oracle: ``torch.save`` of the same state with the real tensors in place of the placeholders, read back: the same
values, dtypes and layouts; each late tensor is produced only when its record is written, after the others'."""

from __future__ import annotations

import pytest
import torch

from localssl.checkpoint import load_checkpoint, save_checkpoint


def _state(big: torch.Tensor, conv: torch.Tensor, step: torch.Tensor, moment: torch.Tensor) -> dict:
    return {
        "empty": torch.zeros(0),
        "own": torch.arange(1000, dtype=torch.float32),
        "rule": {"B": big, "conv": conv},
        "optimizer": {"per_layer": {"3": {"state": {0: {"step": step, "exp_avg": moment}}}}},
        "half": torch.linspace(0, 1, 7).bfloat16(),
        "global_step": 12,
    }


def _same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    else:
        assert a == b


def test_late_tensors_are_written_in_place_of_their_placeholders(tmp_path):
    torch.manual_seed(0)
    big = torch.randn(300_000)
    conv = torch.randn(8, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    step = torch.tensor(7.0)
    moment = torch.randn(300_000)  # rank 0's own tensor: written from memory
    want = _state(big, conv, step, moment)
    holders = [torch.empty_like(big), torch.empty_like(conv)]  # channels_last kept by empty_like
    state = _state(holders[0], holders[1], step, moment)
    produced: list[str] = []

    def late(name: str, t: torch.Tensor):
        def produce() -> torch.Tensor:
            produced.append(name)
            return t.clone(memory_format=torch.preserve_format)

        return produce

    path = save_checkpoint(state, tmp_path, late=[(holders[0], late("B", big)), (holders[1], late("conv", conv))])
    assert produced == ["B", "conv"]
    _same(load_checkpoint(path), want)
    ref = tmp_path / "ref"
    ref.mkdir()
    _same(load_checkpoint(save_checkpoint(want, ref)), load_checkpoint(path))


def test_a_late_tensor_of_another_shape_fails_the_save_and_keeps_the_last_checkpoint(tmp_path):
    first = save_checkpoint({"global_step": 1, "w": torch.ones(3)}, tmp_path)
    holder = torch.empty(100_000)
    with pytest.raises(RuntimeError, match="late tensor"):
        save_checkpoint({"global_step": 2, "w": holder}, tmp_path, late=[(holder, lambda: torch.zeros(5))])
    assert load_checkpoint(first)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
