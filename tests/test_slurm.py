"""The SLURM launcher against a real scheduler (the ``slurm`` fixture: slurmctld + slurmd + munged on localhost).

* a grid of 5 cells submitted as one job array: the 4 that train finish with the numbers of the same grid run
  locally, one of them preempted mid-run by the scheduler's ``scancel --signal=USR2`` (it checkpoints, requeues
  itself and ends with the local run's weights); the diverging one is reported failed once, not requeued, not
  submitted again; rerunning the command while the jobs run submits nothing, after they end writes the report;
* the cells of a study that is no table as one array, waited for, listed by ``--status``, a failing one named;
* ``localssl pretrain --launcher slurm`` over 2 tasks (data-parallel, gloo), preempted mid-epoch by the
  scheduler's ``scancel --signal=USR2``: the job checkpoints, requeues itself (``Restarts=1``) and ends with
  the weights of the same run uninterrupted (slow: ``.ci/run`` runs it after the default suite).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SIXTY_IMAGES, TINY, start_ranks

from localssl.experiments import engine
from localssl.experiments.engine.cells import Cell, cell_status
from localssl.experiments.engine.grid import Row, Scale, Table
from localssl.experiments.engine.harness import run_table, table_cells
from localssl.experiments.engine.local import JobError
from localssl.experiments.engine.runs import find_run_dir, run_key

pytestmark = pytest.mark.usefixtures("one_thread")

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# timeout_min 30: submitit counts a signal in the last 20 % of the limit (at most 10 min) as a time limit
EXECUTOR = {"cpus_per_task": 1, "timeout_min": 30, "slurm_signal_delay_s": 30}


def _states() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"], capture_output=True, text=True, check=True)
    return dict(line.split("|", 1) for line in out.stdout.split())


def _wait_ended(jobs: list[str], timeout_s: float) -> dict[str, str]:
    """Wait until every job in ``jobs`` is in a terminal state; their states."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = _states()
        if all(states.get(j) in TERMINAL for j in jobs):
            return {j: states[j] for j in jobs}
        time.sleep(1)
    raise AssertionError(f"jobs not ended after {timeout_s:g} s: {_states()}")


def _signal(job: str, name: str) -> None:
    """``scancel --signal=NAME JOB``, as a user or an admin sends it. slurmctld (22.05) delivers the signal to the
    job's tasks but may answer "Job can not be altered now, try again later", and scancel then retries every few
    seconds until the job runs again, signalling its next start too: one attempt only (scancel stopped after 3 s)."""
    try:
        subprocess.run(["scancel", f"--signal={name}", job], capture_output=True, timeout=3, check=False)
    except subprocess.TimeoutExpired:
        pass


def _show(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


# ---------------------------------------------------------------------------------------- a grid
TINY_SCALE = Scale(
    "tiny",
    "test: 2 steps of 8 images, width 1/16; probe 1 epoch",
    overrides=(*TINY, "train.max_steps_per_epoch=2", "probe.epochs=1", "probe.val_size=3"),
)
ROWS = (
    Row("Random init", "random"),
    Row("CLAPP++", "clapp++", ("train.epochs=20", "train.max_steps_per_epoch=6", "train.log_every=1")),  # preempted
    Row("CLAPP++DFB", "clapp++dfb"),
    Row("BP-CLAPP++", "bp-clapp++"),
)
DIVERGES = Row("CLAPP++ at lr 1e30 (diverges)", "clapp++", ("train.lr=1e30", "train.log_every=1"))


def _table(rows: tuple[Row, ...]) -> Table:
    return Table("tiny-grid", "a test grid", "none", ("cifar10",), rows, {"tiny": TINY_SCALE}, floor="random")


def _accuracies(out: Path) -> dict[str, tuple[str, str]]:
    with (out / "results.csv").open() as fh:
        return {r["method"]: (r["test_acc"], r["val_acc"]) for r in csv.DictReader(fh)}


def test_a_job_array_grid_with_a_preempted_cell_reports_as_locally_and_a_failed_cell_once(slurm, cifar_root, tmp_path):
    table = _table((*ROWS, DIVERGES))
    out = tmp_path / "slurm"
    try:
        engine.use(engine.Launcher("slurm", dict(EXECUTOR)))
        first = run_table(table, out, "tiny", 1, root=str(cifar_root))
        assert not first.cells and not (out / "results.csv").exists()  # submitted, nothing to report yet
        submitted = json.loads((out / "slurm" / "submitted.json").read_text())
        jobs = [s["job_id"] for s in submitted.values()]
        assert len(jobs) == 5 and len({j.split("_")[0] for j in jobs}) == 1  # one array of 5 tasks
        run_table(table, out, "tiny", 1, root=str(cifar_root))  # again while they run: nothing submitted
        assert json.loads((out / "slurm" / "submitted.json").read_text()) == submitted
        preempted = _cfg(table, ROWS[1], cifar_root)  # 120 steps: USR2 from the scheduler after its third
        cell_job, cell_run = submitted[run_key(preempted)]["job_id"], find_run_dir(preempted, out / "runs")
        deadline = time.monotonic() + 240
        while not (cell_run / "steps.csv").exists() or len((cell_run / "steps.csv").read_text().splitlines()) < 4:
            assert time.monotonic() < deadline and _states().get(cell_job) not in TERMINAL, _states()
            time.sleep(0.2)
        _signal(cell_job, "USR2")
        watched = table_cells([("preempted", preempted)], out / "runs", False)
        while "requeued 1×" not in (now := cell_status(watched, out / "slurm")[0]).detail:
            assert time.monotonic() < deadline and now.state in ("running", "pending", "requeued"), now
            time.sleep(0.5)
        states = _wait_ended(jobs, 240)
        assert _show(cell_job)["Restarts"] == "1"  # it checkpointed and requeued itself
        log = Path(submitted[run_key(preempted)]["log"]).read_text()
        assert "stopped by SIGUSR2" in log and "handing over to submitit's requeue" in log, log[-3000:]
        bad = submitted[next(k for k, s in submitted.items() if s["label"].startswith(DIVERGES.label))]["job_id"]
        assert states.pop(bad) == "FAILED" and set(states.values()) == {"COMPLETED"}, states
        assert _show(bad)["Restarts"] == "0"  # failed for its own reason: not requeued

        engine.use(engine.Launcher(status=True))
        status = cell_status(
            table_cells([(r.label, _cfg(table, r, cifar_root)) for r in table.rows], out / "runs", False), out / "slurm"
        )
        assert [s.state for s in status] == ["finished"] * 4 + ["failed"], status
        assert "NonFiniteLossError" in status[-1].detail and bad in status[-1].detail, status[-1]

        engine.use(engine.Launcher("slurm", dict(EXECUTOR)))
        done = run_table(table, out, "tiny", 1, root=str(cifar_root))  # the same command after: the report
        assert len(done.cells) == 4 and all(c.trained == "reused" for c in done.cells)
        assert json.loads((out / "slurm" / "submitted.json").read_text()) == submitted  # failed: not resubmitted
        report = (out / "results.md").read_text()
        assert report.count("failed: job") == 1 and "| failed |" in report, report
    finally:
        engine.use(engine.Launcher())
    local = run_table(_table(ROWS), tmp_path / "local", "tiny", 1, root=str(cifar_root))
    assert all(c.trained == "trained" for c in local.cells)
    assert _accuracies(out) == _accuracies(tmp_path / "local")
    local_run = find_run_dir(preempted, tmp_path / "local" / "runs")
    want, got = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (local_run, cell_run))
    assert got["global_step"] == want["global_step"] == 120 and "position" not in got
    for part in ("encoder", "rule"):
        assert all(torch.equal(got[part][k], v) for k, v in want[part].items()), part


def _cfg(table: Table, row: Row, root: Path):
    from localssl.experiments.engine.harness import row_config

    return row_config(row, table.scale("tiny"), "cifar10", 0, str(root))


# ---------------------------------------------------------------------------------------- one run, 2 tasks
@pytest.mark.slow  # 90 s on the 2 shared cores (the grid's tests above stay in the default suite); CI runs it too
def test_pretrain_on_two_tasks_stopped_by_the_scheduler_comes_back_with_the_uninterrupted_weights(
    slurm, pattern_cifar_root, tmp_path
):
    # 200 images, 6 per rank and step on 2 ranks: 16 steps an epoch, 2 epochs; a row logged every step. The same run
    # uninterrupted under torchrun (the reference) trains meanwhile.
    cfg = [*SIXTY_IMAGES, "train.log_every=1", f"data.root={pattern_cifar_root}"]
    procs = start_ranks(2, ["pretrain", "clapp++", *cfg, f"out_dir={tmp_path / 'reference'}"], tmp_path)
    sub = subprocess.run(
        [sys.executable, "-m", "localssl", "pretrain", "clapp++", *cfg, f"out_dir={tmp_path / 'runs'}"]
        + ["--launcher", "slurm", "--nodes", "1", "--executor", "tasks_per_node=2"]
        + [f"--executor={k}={v}" for k, v in EXECUTOR.items()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert sub.returncode == 0, sub.stderr[-2000:]
    run = Path(sub.stdout.strip().splitlines()[-1])
    job = sub.stderr.split("submitted job ")[1].split(";")[0]
    deadline = time.monotonic() + 240
    while not (run / "steps.csv").exists() or len((run / "steps.csv").read_text().splitlines()) < 4:
        assert time.monotonic() < deadline and _states().get(job) not in TERMINAL, _states()
        time.sleep(0.2)
    _signal(job, "USR2")  # what SLURM sends ahead of a limit
    assert _wait_ended([job], 300) == {job: "COMPLETED"}
    assert _show(job)["Restarts"] == "1"  # it requeued itself once
    log = "".join(p.read_text() for p in (tmp_path / "runs" / "slurm").glob(f"{job}_0_log.*"))
    assert "stopped by SIGUSR2" in log and "handing over to submitit's requeue" in log, log[-3000:]
    stop_line = next(line for line in log.splitlines() if "stopped by SIGUSR2" in line)
    assert "end of epoch" not in stop_line, stop_line  # mid-epoch: a checkpoint of its own
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read()[-2000:]
    reference = next((tmp_path / "reference").glob("clapp++-*"))
    want, got = (torch.load(r / "checkpoint.pt", weights_only=True) for r in (reference, run))
    assert got["global_step"] == want["global_step"] > 0 and "position" not in got
    for part in ("encoder", "rule"):
        for k, v in want[part].items():
            assert torch.equal(got[part][k], v), f"{part}.{k}"


# ---------------------------------------------------------------------------------------- any study's cells
def test_a_studys_cells_go_to_slurm_as_an_array_listed_by_status_and_a_failing_one_is_named(slurm, tmp_path):
    """What core, speedrun, learning_curves, rhm, tableA3, the alignment and theory figures hand to the engine:
    cells waited for, results in order (a cell's result file written and then reused, not submitted again),
    each cell's state listed from its job's record."""
    ended = []
    folder = tmp_path / "slurm"
    cells = [Cell(f"abs{x}", f"abs({x})", abs, x) for x in (-1, -2)]
    cells.append(Cell("abs3", "abs(3)", abs, 3, result=tmp_path / "abs3.json"))
    try:
        engine.use(engine.Launcher("slurm", dict(EXECUTOR), folder=folder))
        assert engine.run_cells("abs", cells, on_result=lambda i, r: ended.append(i)) == [1, 2, 3]
        assert sorted(ended) == [0, 1, 2] and json.loads((tmp_path / "abs3.json").read_text()) == 3
        status = cell_status(cells, folder)
        assert [s.state for s in status] == ["finished"] * 3, status
        assert status[0].detail == f"job {json.loads((folder / 'submitted.json').read_text())['abs-1']['job_id']}"
        submitted = json.loads((folder / "submitted.json").read_text())
        assert engine.run_cells("abs", cells[2:]) == [3]  # read back from its result file: nothing submitted
        assert json.loads((folder / "submitted.json").read_text()) == submitted
        roots = [Cell("sqrt4", "sqrt(4)", math.sqrt, 4.0), Cell("sqrt-1", "sqrt(-1)", math.sqrt, -1.0)]
        with pytest.raises(JobError, match=r"job sqrt\(-1\) failed: RuntimeError: job \d+_1: ValueError: math domain"):
            engine.run_cells("sqrt", roots)
        assert cell_status(roots, folder)[1].state == "failed"
    finally:
        engine.use(engine.Launcher())
    assert len(list((folder / "logs").glob("*_result.pkl"))) >= 4


# ---------------------------------------------------------------------------------------- refusals (no cluster)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce", "fault-injection", "--launcher", "slurm"], "experiment 'fault-injection' runs on this machine"),
        (["reproduce", "fault-injection", "--status"], "experiment 'fault-injection' runs on this machine only"),
        (["reproduce", "table2", "--scale", "smoke", "--launcher", "slurm", "--executor", "nope"], "give KEY=VALUE"),
        (["pretrain", "--resume", "RUN", "--launcher", "slurm"], "starts a fresh run from a preset"),
    ],
)
def test_launcher_refusals_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    from localssl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
