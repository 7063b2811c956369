"""A stop signal (SIGTERM, SIGUSR1) ends a run with a checkpoint at the step it came, and ``--resume`` then
finishes it bit for bit (oracle: the same run uninterrupted). Under torchrun: tests/test_distributed.py and
tests/test_pipeline.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import SIXTY_IMAGES

from localssl.config import load_config
from localssl.train import Trainer, pretrain, resume
from localssl.train.run import RunInterrupted
from localssl.train.stop import StopSignals

pytestmark = pytest.mark.usefixtures("one_thread")

# 60 images, batch 6: 10 steps per epoch, 2 epochs; epoch-end checkpoints only (train.checkpoint_every unset)
SETUP = [*SIXTY_IMAGES, "train.log_every=3"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    return {
        **{f"encoder.{k}": v for k, v in ckpt["encoder"].items()},
        **{f"rule.{k}": v for k, v in ckpt["rule"].items()},
    }


@pytest.mark.parametrize(
    ("signum", "at_step", "where"),
    [
        (signal.SIGTERM, 7, "epoch 1, step 7, global step 7"),  # mid-epoch: a checkpoint of its own
        (signal.SIGUSR1, 10, "end of epoch 1, global step 10"),  # the epoch's last step: the epoch's checkpoint
    ],
)
def test_a_signal_checkpoints_where_it_came_and_resume_finishes_the_run(
    cifar_root, tmp_path, monkeypatch, signum, at_step, where
):
    cfg = [*SETUP, f"data.root={cifar_root}"]
    reference = pretrain(load_config("clapp++", cfg), tmp_path / "reference")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)

    schedule = Trainer.apply_schedule

    def signal_at_step(self, steps_per_epoch):  # the signal arrives while step `at_step` runs
        if self.global_step + 1 == at_step:
            os.kill(os.getpid(), signum)
        schedule(self, steps_per_epoch)

    monkeypatch.setattr(Trainer, "apply_schedule", signal_at_step)
    run = tmp_path / "stopped"
    with pytest.raises(RunInterrupted) as stop:
        pretrain(load_config("clapp++", cfg), run)
    message = str(stop.value)
    assert f"stopped by {signal.Signals(signum).name}" in message, message
    assert where in message and f"--resume {run}" in message, message
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before  # handlers restored
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["global_step"] == at_step
    assert ("position" in ckpt) == (at_step % 10 != 0)
    logged = [s for s in range(1, at_step + 1) if s % 3 == 0 or s % 10 == 0]  # every 3 steps and epochs' ends
    assert len((run / "steps.csv").read_text().splitlines()) == 1 + len(logged)  # rows up to the stop

    monkeypatch.setattr(Trainer, "apply_schedule", schedule)
    resume(run)
    want = _weights(reference)
    got = _weights(run)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert (run / "steps.csv").read_text() == (reference / "steps.csv").read_text()
    metrics = [r.split(",")[:-2] for r in (run / "metrics.csv").read_text().splitlines()]  # less seconds, img/s
    assert metrics == [r.split(",")[:-2] for r in (reference / "metrics.csv").read_text().splitlines()]


def test_the_signals_are_caught_only_while_entered():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    with stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_stop_signals_are_term_usr1_usr2_unless_localssl_stop_signals_names_others(monkeypatch):
    from localssl.train.stop import SIGNALS_ENV, StopSignals, stop_signals

    monkeypatch.delenv(SIGNALS_ENV, raising=False)
    assert stop_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    monkeypatch.setenv(SIGNALS_ENV, "usr2, SIGTERM")
    assert stop_signals() == (signal.SIGUSR2, signal.SIGTERM)
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGUSR1) == before  # not in the set: left alone
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.requested and stop.name == "SIGUSR2"
    monkeypatch.setenv(SIGNALS_ENV, "TERM,NOPE")
    with pytest.raises(ValueError, match="unknown signal 'NOPE'"):
        stop_signals()
