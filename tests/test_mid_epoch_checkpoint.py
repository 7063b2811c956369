"""Mid-epoch checkpoints (``train.checkpoint_every``): a run stopped in the middle of an epoch and resumed
is bit-identical to an uninterrupted one, weights and logs."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from localssl.checkpoint import EpochPosition, load_checkpoint, remove_partial_writes
from localssl.config import TrainConfig, load_config
from localssl.registry import ConfigError
from localssl.train import NonFiniteLossError, Trainer, pretrain, resume

pytestmark = pytest.mark.usefixtures("one_thread")

# 60 images, batch 8: 7 steps per epoch, 14 in all. Rows at epoch steps 3, 6, 7 (global 3, 6, 7, 10, 13,
# 14); checkpoints at global 4, 8, 12 (mid-epoch, two of them with a half-full logging window) and 7, 14.
TINY = [
    "model.width=0.0625",
    "train.batch_size=8",
    "train.device=cpu",
    "train.progress=false",
    "train.epochs=2",
    "train.log_every=3",
    "train.checkpoint_every=4",
    "train.lr=1e-3",
]
TIMING = {"seconds", "images_per_s", "online_probe_s"}


class _Killed(Exception):
    """Stands for the process dying at this point."""


def _pretrain_killed_at(monkeypatch, cfg, step: int) -> Path:
    """Pretrain ``cfg`` until the optimizer is about to train global step ``step`` (0-based), where the
    process "dies"; returns the run directory it left behind."""
    optimize = Trainer.optimize

    def dies(self, views):
        if self.global_step == step:
            raise _Killed
        return optimize(self, views)

    monkeypatch.setattr(Trainer, "optimize", dies)
    with pytest.raises(_Killed):
        pretrain(cfg)
    monkeypatch.undo()
    (run,) = Path(cfg.out_dir).iterdir()
    return run


def _rows(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def _weights(run):
    ckpt = load_checkpoint(run / "checkpoint.pt")
    return {**{f"encoder.{k}": v for k, v in ckpt["encoder"].items()}, **ckpt["rule"]}


def _assert_same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    if "online_probe" in load_checkpoint(a / "checkpoint.pt"):
        pa, pb = (
            load_checkpoint(a / "checkpoint.pt")["online_probe"],
            load_checkpoint(b / "checkpoint.pt")["online_probe"],
        )
        assert pa["global_step"] == pb["global_step"] and pa["accuracy"] == pb["accuracy"]
        for name, readout in pa["readouts"].items():  # the read-outs of the last scoring
            wa.update({f"probe.{name}.{k}": v for k, v in readout.items()})
            wb.update({f"probe.{name}.{k}": v for k, v in pb["readouts"][name].items()})
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs after the mid-epoch resume"
    for log in ("steps.csv", "metrics.csv"):
        assert _rows(a / log) == _rows(b / log), log


ONLINE_PROBE = ["train.online_probe=true", "train.online_probe_holdout=12", "train.online_probe_every=4"]


@pytest.mark.parametrize(
    "preset, extra", [("clapp++", []), ("bp-clapp++", []), ("clapp++", ONLINE_PROBE)], ids=["local", "bp", "probe"]
)
def test_mid_epoch_resume_is_bit_identical(cifar_root, tmp_path, monkeypatch, preset, extra):
    cfg = [*TINY, *extra, f"data.root={cifar_root}"]
    full = pretrain(load_config(preset, [*cfg, f"out_dir={tmp_path / 'a'}"]))
    start = load_checkpoint(full / "checkpoint.prev.pt")
    assert start["global_step"] == 12 and start["position"]["step"] == 5  # the last mid-epoch one, kept

    # step 13 is trained and logged, then the process dies
    run = _pretrain_killed_at(monkeypatch, load_config(preset, [*cfg, f"out_dir={tmp_path / 'b'}"]), 13)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["position"]["step"]) == (1, 12, 5)
    assert ckpt["position"]["window"], "the checkpoint falls inside a logging window: its partial sums are kept"
    assert [r["step"] for r in _rows(run / "steps.csv")][-1] == "13"  # logged after the checkpoint
    resume(run)
    _assert_same_run(full, run)


def test_a_mid_epoch_checkpoint_is_refused_by_a_different_epoch_length(cifar_root, tmp_path, monkeypatch):
    cfg = [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path / 'runs'}"]
    run = _pretrain_killed_at(monkeypatch, load_config("clapp++", cfg), 5)
    with pytest.raises(ValueError, match="stopped after step 4 of epoch 1.*train.max_steps_per_epoch"):
        resume(run, ["train.max_steps_per_epoch=3"])


def test_minutes_trigger_a_checkpoint_once_enough_time_passed(cifar_root, tmp_path):
    cfg = load_config("clapp++", [*TINY[:4], f"data.root={cifar_root}", "train.checkpoint_every_minutes=0.5"])
    trainer = Trainer(cfg, tmp_path)
    assert not trainer.mid_epoch_checkpoint_due(1, 7)
    trainer._checkpoint_time = time.monotonic() - 31
    assert trainer.mid_epoch_checkpoint_due(1, 7)
    assert not trainer.mid_epoch_checkpoint_due(7, 7), "the epoch's end has its own checkpoint"
    trainer.save_checkpoint()
    assert not trainer.mid_epoch_checkpoint_due(1, 7), "the clock restarts at every checkpoint"


def test_each_rank_continues_from_its_own_generators():
    """Under torchrun a mid-epoch checkpoint holds every rank's generators; rank 0's are also the one-process
    ``rng``. Another number of processes: rank 0 takes ``rng``, the others none (the trainer refuses a
    data-parallel resume with another number of ranks; a layer-parallel one keeps the epoch's seed above
    stage 0)."""
    states = [{"cpu": torch.full((3,), r, dtype=torch.uint8)} for r in range(3)]
    position = EpochPosition(0, 4, 1.0, states[0], {}, {}, 1, states)
    again = EpochPosition.from_state(position.to_state())
    assert [again.rank_rng(r, 3)["cpu"][0] for r in range(3)] == [0, 1, 2]
    assert again.rank_rng(0, 2)["cpu"][0] == 0 and again.rank_rng(1, 2) is None
    assert EpochPosition(0, 4, 1.0, states[0], {}, {}).rank_rng(0, 1) is states[0]


def test_a_run_killed_before_its_first_checkpoint_trains_again_from_step_0(cifar_root, tmp_path, monkeypatch):
    cfg = [*TINY, "train.checkpoint_every=100", "train.epochs=1", f"data.root={cifar_root}"]
    full = pretrain(load_config("clapp++", [*cfg, f"out_dir={tmp_path / 'a'}"]))
    run = _pretrain_killed_at(monkeypatch, load_config("clapp++", [*cfg, f"out_dir={tmp_path / 'b'}"]), 4)
    assert not (run / "checkpoint.pt").exists() and (run / "steps.csv").exists()
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a write the kill cut short
    resume(run)
    assert not (run / ".checkpoint.pt.x1y2.tmp").exists()
    _assert_same_run(full, run)


def test_remove_partial_writes_only_touches_the_run_files_temporaries(tmp_path):
    for name in (".checkpoint.pt.abc.tmp", ".steps.csv.q.tmp", ".probe.json.z.tmp", "checkpoint.pt", "notes.tmp"):
        (tmp_path / name).write_text("x")
    removed = remove_partial_writes(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.pt.abc.tmp", ".steps.csv.q.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".probe.json.z.tmp", "checkpoint.pt", "notes.tmp"]


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.checkpoint_every=0", r"train.checkpoint_every=0 is invalid: it must be a whole number >= 1"),
        ("train.checkpoint_every=-3", r"train.checkpoint_every=-3 is invalid"),
        ("train.checkpoint_every=2.5", r"train.checkpoint_every=2.5 is invalid: it must be a whole number"),
        ("train.checkpoint_every=10min", r"train.checkpoint_every expects a number, got '10min'"),
        ("train.checkpoint_every_minutes=0", r"train.checkpoint_every_minutes=0 is invalid: it must be a finite"),
        ("train.checkpoint_every_minutes=-1", r"train.checkpoint_every_minutes=-1 is invalid"),
        ("train.checkpoint_every_minutes=inf", r"train.checkpoint_every_minutes=inf is invalid"),
    ],
)
def test_invalid_checkpoint_every_is_refused(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("clapp++", [override, f"out_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_a_nan_between_logged_rows_never_reaches_a_mid_epoch_checkpoint(cifar_root, tmp_path):
    """The NaN comes at global step 8, after the row of step 7 and before the next (step 10): the
    checkpoint due after step 8 checks the steps since the last row first, so the run stops there."""
    cfg = load_config("clapp++", [*TINY, f"data.root={cifar_root}"])
    trainer = Trainer(cfg, tmp_path)
    original = trainer.comp.rule.step

    def step(encoder, views, ctx):
        metrics = original(encoder, views, ctx)
        return {**metrics, "loss_l2": torch.tensor(float("nan"))} if trainer.global_step == 7 else metrics

    trainer.comp.rule.step = step
    with pytest.raises(NonFiniteLossError, match=r"loss_l2\) at epoch 2, step 1; .*\(end of epoch 1, global step 7\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["global_step"] == 7


def test_a_checkpoint_older_than_a_config_key_resumes_unless_the_key_was_changed(cifar_root, tmp_path):
    """A key added to the library after the checkpoint was written is missing from the settings stored in it:
    at its default the run resumes (it was trained that way); set to anything else it is named as a change."""
    run = pretrain(load_config("clapp++", [*TINY, "train.epochs=1", f"data.root={cifar_root}", f"out_dir={tmp_path}"]))
    ckpt = load_checkpoint(run / "checkpoint.pt")
    settings = json.loads(ckpt["config"])
    del settings["train.online_probe_train"], settings["objective.f"]  # as if written before these keys existed
    torch.save({**ckpt, "config": json.dumps(settings, sort_keys=True)}, run / "checkpoint.pt")
    text = (run / "config.yaml").read_text()
    default = f"online_probe_train: {TrainConfig().online_probe_train}"
    assert default in text
    (run / "config.yaml").write_text(text.replace(default, "online_probe_train: 500"))
    with pytest.raises(ValueError, match=r"\(train\.online_probe_train: checkpoint None, config\.yaml 500\)"):
        resume(run, ["train.epochs=2"])
    (run / "config.yaml").write_text(text)
    resume(run, ["train.epochs=2"])
    assert load_checkpoint(run / "checkpoint.pt")["global_step"] == 14
