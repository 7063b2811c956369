"""The training step keeps its metrics on the device: no host synchronisation per step.

A host sync from Python goes through ``Tensor.item``, ``float()``, ``int()``, ``bool()`` or ``tolist``. We
count those calls made by localssl's own code during an epoch: with one logged row per epoch, an epoch of
5 steps must make exactly as many as an epoch of 2 (the reads of the logged row and of the epoch's
means). Syncs inside a dependency (kornia's augmentation checks) are not localssl's and are not counted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import localssl
from localssl.config import load_config
from localssl.data import ImageData
from localssl.registry import ConfigError
from localssl.train import DeviceSums, Trainer

PACKAGE = str(Path(localssl.__file__).parent)
SYNCS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist")


def _count_syncs(monkeypatch, counts: list[str], roots: tuple[str, ...]) -> None:
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(roots):
                counts.append(f"{_name} in {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)


def _epoch_syncs(monkeypatch, tmp_path, preset: str, steps: int, roots: tuple[str, ...] = (PACKAGE,)) -> list[str]:
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(64).long(), [])
    cfg = load_config(
        preset,
        [
            "model.width=0.0625",
            "train.batch_size=8",
            "train.device=cpu",
            "train.progress=false",
            f"train.max_steps_per_epoch={steps}",
            "train.log_every=1000",
        ],
    )
    trainer = Trainer(cfg, tmp_path / f"{preset}-{steps}", data=data)
    (tmp_path / f"{preset}-{steps}").mkdir()
    trainer.train_epoch()  # warm-up epoch: lazy state (optimizer, caches) is created outside the count
    counts: list[str] = []
    with monkeypatch.context() as m:
        _count_syncs(m, counts, roots)
        trainer.train_epoch()
    return counts


@pytest.mark.parametrize("preset", ["clapp++", "bp-clapp++", "clapp++both"])
def test_no_host_sync_per_step(monkeypatch, tmp_path, preset):
    two = _epoch_syncs(monkeypatch, tmp_path, preset, 2)
    five = _epoch_syncs(monkeypatch, tmp_path, preset, 5)
    assert len(five) == len(two), f"syncs grow with the steps: 2 steps {two}, 5 steps {five}"
    assert len(two) <= 4, two  # the logged row (finite check + one read) and the epoch's means


def test_the_count_sees_a_sync_in_a_rule(monkeypatch, tmp_path):
    """The counter is not blind: a rule that reads its loss every step is caught (here the reading code
    lives in this file, so the count includes it)."""
    from localssl.rules.local import LocalRule

    original = LocalRule.step

    def reading_step(self, encoder, views, ctx):
        metrics = original(self, encoder, views, ctx)
        metrics["read"] = torch.tensor(metrics["loss_l1"].item())
        return metrics

    monkeypatch.setattr(LocalRule, "step", reading_step)
    roots = (PACKAGE, __file__)
    five = _epoch_syncs(monkeypatch, tmp_path, "clapp++", 5, roots)
    assert len(five) == len(_epoch_syncs(monkeypatch, tmp_path, "clapp++", 2, roots)) + 3


def test_device_sums_match_a_dict_of_sums():
    steps = [{"loss_l1": torch.tensor(float(i)), "acc_l1": torch.tensor(0.5 * i)} for i in range(4)]
    steps.append({"loss_l1": torch.tensor(10.0), "extra": torch.tensor(3.0)})  # other names: merged by name
    steps.append({"loss_l1": torch.tensor(1.0), "acc_l1": torch.tensor(2.0)})
    sums = DeviceSums()
    reference: dict[str, float] = {}
    for m in steps:
        sums.add(m)
        for k, v in m.items():
            reference[k] = reference.get(k, 0.0) + float(v)
    got = dict(zip(sums.as_dict(), DeviceSums.read(sums.as_dict())))
    assert got == pytest.approx(reference)
    assert DeviceSums().as_dict() == {} and DeviceSums.read({}) == []


def test_compile_setting_is_checked():
    with pytest.raises(ConfigError, match="train.compile must be false, true or reduce-overhead"):
        load_config("clapp++", ["train.compile=fast"])
    assert load_config("clapp++", ["train.compile=reduce-overhead"]).train.compile == "reduce-overhead"


@pytest.mark.slow
def test_reduce_overhead_on_cpu_compiles_without_graphs_and_says_so(tmp_path, capsys):
    """On CPU ``reduce-overhead`` compiles each layer and objective (inductor, minutes on this CPU) without CUDA
    graphs, prints why, and the step gives the eager step's losses (in fp32: the comparison is to rounding)."""
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(8).long(), [])
    small = [
        "model.width=0.0625",
        "train.batch_size=4",
        "train.device=cpu",
        "train.progress=false",
        "train.precision=fp32",
    ]
    losses = []
    for mode in ("false", "reduce-overhead"):
        torch.manual_seed(0)
        trainer = Trainer(load_config("clapp++", [*small, f"train.compile={mode}"]), tmp_path, data=data)
        torch.manual_seed(1)
        metrics = trainer.optimize(trainer.make_views(torch.arange(4)))
        losses.append(torch.stack([v for k, v in metrics.items() if k.startswith("loss")]))
        assert trainer.cuda_graphs is False
    assert "need a CUDA device" in capsys.readouterr().err
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
