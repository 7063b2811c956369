"""The engine under every study (:mod:`localssl.experiments.engine`): cells run or read back, their state listed.

Oracles: what a cell's ``fn`` returns and whether it was called (a function that raises when it must not run);
records and a queue planted as a SLURM job and the scheduler would leave them (the real scheduler's side is
``test_slurm.py``); ``localssl reproduce NAME --status`` on studies that are no table, which runs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localssl.cli import main
from localssl.experiments import engine
from localssl.experiments.engine.cells import Cell, cell_status, format_status
from localssl.experiments.engine.local import JobError


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"no square of {x} wanted here")
    return x * x


def test_a_cell_with_its_result_on_disk_is_read_back_and_the_others_run_in_order(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("41")
    cells = [Cell("a", "a", _square, 2), Cell("kept", "kept", _square, -1, result=kept)]
    cells.append(Cell("c", "c", _square, 3, result=tmp_path / "c.json"))
    ended = []
    assert engine.run_cells("t", cells, on_result=lambda i, r: ended.append((i, r))) == [4, 41, 9]
    assert ended == [(0, 4), (2, 9)]  # the read-back cell is no new result
    assert json.loads((tmp_path / "c.json").read_text()) == 9
    with pytest.raises(JobError, match=r"job minus one failed: ValueError: no square of -1"):
        engine.run_cells("t", [Cell("m", "minus one", _square, -1)])
    with pytest.raises(ValueError, match="two cells with one key"):
        engine.run_cells("t", [Cell("a", "a", _square, 1), Cell("a", "b", _square, 2)])


def _record(folder: Path, key: str, **info) -> None:
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    (folder / "cells" / f"{key}.json").write_text(json.dumps(info))


def test_each_cells_state_from_its_record_its_run_folder_and_the_queue(tmp_path):
    folder, run = tmp_path / "slurm", tmp_path / "run"
    run.mkdir()
    (run / "steps.csv").write_text("epoch,step,loss\n0,1,2.0\n0,7,1.5\n")
    log = tmp_path / "9_4.err"
    log.write_text("starting\nKilled by the OOM killer\n")
    cells = [
        Cell("done", "done", _square, 1, finished=lambda: True),
        Cell("new", "new", _square, 1),
        Cell("queued", "queued", _square, 1),
        Cell("runs", "runs", _square, 1, run_dir=run),
        Cell("again", "again", _square, 1),
        Cell("bad", "bad", _square, 1),
        Cell("gone", "gone", _square, 1),
        Cell("ok", "ok", _square, 1),
    ]
    jobs = {k: f"9_{i}" for i, k in enumerate(("queued", "runs", "again", "bad", "gone", "ok"))}
    submitted = {k: {"job_id": j, "label": k, "log": str(log)} for k, j in jobs.items()}
    folder.mkdir()
    (folder / "submitted.json").write_text(json.dumps(submitted))
    _record(folder, "runs", job_id="9_1", state="running", restarts=2)
    _record(folder, "again", job_id="9_2", state="requeued", restarts=1)
    _record(folder, "bad", job_id="9_3", state="failed", error="NonFiniteLossError: loss is nan at step 3")
    _record(folder, "ok", job_id="9_5", state="finished")
    queue = {"9_0": "PENDING", "9_1": "RUNNING", "9_2": "PENDING", "9_3": "FAILED", "9_5": "COMPLETED"}
    got = {s.label: (s.state, s.detail) for s in cell_status(cells, folder, queue)}
    assert got == {
        "done": ("finished", ""),
        "new": ("not submitted", ""),
        "queued": ("pending", "job 9_0"),
        "runs": ("running", "requeued 2×, job 9_1, last logged step 7"),
        "again": ("requeued", "requeued 1×, job 9_2 pending"),
        "bad": ("failed", "job 9_3: NonFiniteLossError: loss is nan at step 3"),
        "gone": ("ended", "job 9_4 ended without finishing it: Killed by the OOM killer"),
        "ok": ("finished", "job 9_5"),
    }
    text = format_status(cell_status(cells, folder, queue))
    assert text.splitlines()[-1] == (
        "2 finished, 1 not submitted, 1 pending, 1 running, 1 requeued, 1 failed, 1 ended"
    ), text


@pytest.mark.parametrize(
    ("name", "cells", "first"),
    [
        ("rhm", 10, "bp-P32-s0"),
        ("speedrun", 6, "train clapp++-w0.0625-lr1x-s0 to 1 min"),
        ("core-cifar10", 3, "random seed 0"),
        ("tableA3", 10, "cross_entropy-PC-T2-a0.1-s0"),
        ("fig2", 1, "fig2 (smoke, 1 seed(s))"),
        ("fig3b", 1, "seed 0"),
    ],
)
def test_status_lists_the_cells_of_a_study_that_is_no_table_and_runs_nothing(name, cells, first, capsys, tmp_path):
    out = tmp_path / name
    assert main(["reproduce", name, "--scale", "smoke", "--out", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{name}, ") and lines[0].endswith(f" {cells} cell(s):"), lines[0]
    assert lines[1].startswith(first) and "not submitted" in lines[1], lines[1]
    assert lines[-2] == f"{cells} not submitted" and lines[-1] == str(out), lines[-2:]
    assert not (out / "results.csv").exists() and not (out / "results.md").exists()
    assert engine.current() == engine.Launcher()  # the command's launcher ended with it


def test_status_of_an_rhm_point_whose_result_is_on_disk_says_finished(capsys, tmp_path):
    out = tmp_path / "rhm"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "bp-P32-s0.json").write_text("{}")
    assert main(["reproduce", "rhm", "--scale", "smoke", "--out", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("bp-P32-s0") and " finished " in line for line in lines), lines


def test_a_launcher_without_a_folder_names_none_for_its_records(tmp_path):
    """The records folder is never a default relative to the working directory (it once wrote ./slurm into the
    repository): a launcher without one refuses, one with a folder gives it."""
    with pytest.raises(RuntimeError, match="no records folder"):
        _ = engine.Launcher().records
    assert engine.Launcher(folder=tmp_path / "slurm").records == tmp_path / "slurm"
