"""``localssl reproduce NAME --jobs N``: the cells of a table run in N processes at once, with the numbers of a
sequential run; and the ``gpu`` scale of table2."""

from __future__ import annotations

import csv

import pytest

from localssl.cli import main
from localssl.experiments.harness import Row, Scale, Table, run_table
from localssl.experiments.table2 import GPU_TFLOPS, TABLE2

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
