"""The job runner (:mod:`localssl.experiments.engine.local`): results in job order, a failing job named, a fresh
process per job on request; ``localssl reproduce NAME --jobs N``: the cells of a table run in N processes at
once, with the numbers of a sequential run; and the ``gpu`` scale of table2."""

from __future__ import annotations

import csv
import functools
import os
import time
from pathlib import Path

import pytest
import torch

from localssl.cli import main
from localssl.experiments.clapp_pp.table2 import GPU_TFLOPS, TABLE2
from localssl.experiments.engine.grid import Row, Scale, Table
from localssl.experiments.engine.harness import run_table
from localssl.experiments.engine.local import JobError, run_jobs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Scale(
    "tiny",
    "test",
    overrides=(
        "model.width=0.0625",
        "train.batch_size=8",
        "train.device=cpu",
        "train.progress=false",
        "probe.epochs=2",
        "train.epochs=1",
    ),
)


def _slow_square(x: int) -> int:
    time.sleep(0.5 if x == 0 else 0.0)  # the first job ends last
    return x * x


def _ends_last(x: int, folder: str) -> int:
    """Job 0 ends only after jobs 1-3 have ended (each leaves a file), however slowly the pool starts."""
    if x == 0:
        deadline = time.monotonic() + 120
        while len(list(Path(folder).glob("done-*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # their results reach the parent before this one
    else:
        (Path(folder) / f"done-{x}").touch()
    return x * x


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"no {x}")
    return x


def _pid_and_threads(_: int) -> tuple[int, int]:
    return os.getpid(), torch.get_num_threads()


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_back_in_job_order(jobs, tmp_path):
    ended = []
    job = functools.partial(_ends_last, folder=str(tmp_path)) if jobs == 2 else _slow_square
    out = run_jobs(job, [0, 1, 2, 3], jobs, on_result=lambda i, r: ended.append((i, r)))
    assert out == [0, 1, 4, 9]
    assert sorted(ended) == [(0, 0), (1, 1), (2, 4), (3, 9)]  # each result reported once, as it ends
    if jobs == 2:
        assert ended[-1] == (0, 0)  # in the pool the slow first job ends last; its result is still first


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_job_is_named(jobs):
    with pytest.raises(JobError, match=r"job third failed: ValueError: no 2") as err:
        run_jobs(_fails_on_two, [0, 1, 2], jobs, names=["first", "second", "third"])
    assert err.value.job == "third" and isinstance(err.value.__cause__, ValueError)


def test_fresh_gives_each_job_its_own_process_with_the_threads_asked():
    out = run_jobs(_pid_and_threads, [0, 1], 1, fresh=True, threads=1)
    pids = {pid for pid, _ in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {threads for _, threads in out} == {1}


def test_bad_arguments():
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_jobs(_slow_square, [1], 0)
    with pytest.raises(ValueError, match="2 names for 1 jobs"):
        run_jobs(_slow_square, [1], 1, names=["a", "b"])


def _rows(path):
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "run"} for r in csv.DictReader(fh)]


def test_jobs_2_gives_the_numbers_of_a_sequential_grid(cifar_root, tmp_path):
    table = Table(
        "test-table",
        "Test table",
        "none",
        ("cifar10",),
        (Row("Local", "clapp++"), Row("Backprop", "bp-clapp++")),
        {"tiny": TINY},
    )
    kw = {"seeds": 1, "root": str(cifar_root)}
    run_table(table, tmp_path / "seq", "tiny", runs_dir=tmp_path / "runs-seq", jobs=1, **kw)
    par = run_table(table, tmp_path / "par", "tiny", runs_dir=tmp_path / "runs-par", jobs=2, **kw)
    seq_rows, par_rows = _rows(tmp_path / "seq" / "results.csv"), _rows(tmp_path / "par" / "results.csv")
    assert len(seq_rows) == 2 and par_rows == seq_rows  # test and validation accuracy, epochs, steps: identical
    # the workers trained and probed every cell; the report says so (not 'reused')
    assert {(c.trained, c.probed) for c in par.cells} == {("trained", "probed")}


def test_jobs_option(tmp_path, capsys):
    assert main(["reproduce", "table2", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert main(["reproduce", "rhm", "--scale", "gpu", "--out", str(tmp_path)]) == 2
    assert "experiment 'rhm' has no scale 'gpu'; scales: smoke, cpu, paper" in capsys.readouterr().err


def test_gpu_scale_of_table2(capsys):
    gpu = TABLE2.scale("gpu")
    assert gpu.datasets == ("cifar10",) and "model.width=1.0" in gpu.overrides and "train.epochs=1" in gpu.overrides
    assert f"assumed {GPU_TFLOPS} TFLOP/s" in gpu.protocol
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = capsys.readouterr().out
    assert "gpu" in text and "--jobs" in text and "H100" in text
