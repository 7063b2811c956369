"""kill -9 at random moments (and in the middle of checkpoint writes), ``--resume`` each time: the final
weights equal an uninterrupted run's and the metrics files have no duplicate or missing row.

The driver is :mod:`localssl.experiments.library.faults` (``localssl reproduce fault-injection``; the table in
``benchmarks/RESULTS.md`` was made by its earlier form, ``benchmarks/fault_injection.py``)."""

from __future__ import annotations

import pytest

from localssl.experiments.library import faults as fault_injection

CHECKPOINT_EVERY = 2


def _overrides(root, epochs: int) -> list[str]:
    # 60 images, batch 8: 7 steps per epoch; a row every step; a checkpoint every 2 steps and at epoch ends
    return [
        "model.width=0.0625",
        "train.batch_size=8",
        "train.device=cpu",
        "train.progress=false",
        "train.lr=1e-3",
        "train.log_every=1",
        f"train.epochs={epochs}",
        f"train.checkpoint_every={CHECKPOINT_EVERY}",
        f"data.root={root}",
    ]


def _check(report, kills: int) -> None:
    assert len(report.kills) == kills, f"{report.finished_early} process(es) finished before their kill"
    assert report.recovered
    assert report.identical_weights and report.tensors_compared > 10
    assert (report.rows_duplicated, report.rows_missing, report.rows_differing) == (0, 0, 0)
    assert report.max_steps_lost <= CHECKPOINT_EVERY, [(k.last_logged_step, k.resumed_from_step) for k in report.kills]


def test_two_kills_then_resume_equal_an_uninterrupted_run(cifar_root, tmp_path):
    """A kill at a random moment, then one in the middle of a checkpoint write (4 processes, ~15 s CPU)."""
    report = fault_injection.inject_faults("clapp++", _overrides(cifar_root, 2), tmp_path, kills=2, seed=1)
    _check(report, 2)
    assert [k.kind for k in report.kills] == ["random", "write"]


@pytest.mark.slow
def test_twelve_kills_then_resume_equal_an_uninterrupted_run(cifar_root, tmp_path):
    report = fault_injection.inject_faults("clapp++", _overrides(cifar_root, 8), tmp_path, kills=12, seed=2)
    _check(report, 12)
    assert sum(k.during_write for k in report.kills) >= 1, "no kill landed inside a checkpoint write"


def test_the_experiment_reports_its_table(tmp_path):
    """``localssl reproduce fault-injection --scale smoke``: 2 kills on the shipped CIFAR-10 subset."""
    fault_injection.run(tmp_path, "smoke", 1)
    text = (tmp_path / "results.md").read_text()
    assert "| 2 (" in text and "identical" in text and "DIFFERENT" not in text
    assert "`localssl reproduce fault-injection --scale smoke --seeds 1`" in text
