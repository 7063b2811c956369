"""``run_table(..., only=[...])`` / ``localssl reproduce NAME --only PRESET``: re-run some rows of a table and
keep the others' per-seed values from the results.csv already in the output folder."""

from __future__ import annotations

import csv
import shutil

import pytest

from localssl.cli import main as cli_main
from localssl.experiments.engine.grid import Row, Scale, Table, format_mean_std
from localssl.experiments.engine.harness import run_table
from localssl.registry import ConfigError
from localssl.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ("model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "probe.epochs=2")
TABLE = Table(
    name="test-table",
    title="Test table",
    source="none",
    datasets=("cifar10",),
    rows=(Row("Local", "clapp++"), Row("Random", "random")),
    scales={"tiny": Scale("tiny", "test scale", overrides=(*TINY, "train.epochs=1"))},
    floor="random",
)


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_only_reruns_its_rows_and_keeps_the_others(cifar_root, tmp_path, monkeypatch):
    out, runs = tmp_path / "out", tmp_path / "runs"
    run_table(TABLE, out, "tiny", seeds=2, runs_dir=runs, root=str(cifar_root))
    rows = _read(out / "results.csv")
    for r in rows:  # mark the kept row's values: they must come back from the file, not from a run
        if r["preset"] == "random":
            r["test_acc"] = "12.34" if r["seed"] == "0" else "23.45"
    _write(out / "results.csv", rows)
    old_local = {r["seed"]: r["run"] for r in rows if r["preset"] == "clapp++"}
    for run in {r["run"] for r in rows}:  # the run folders are gone, as after a move to another machine
        shutil.rmtree(runs / run)

    fits = []
    original = Trainer.fit

    def counting_fit(self):
        fits.append(self.cfg.name)
        return original(self)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    result = run_table(TABLE, out, "tiny", seeds=2, runs_dir=runs, root=str(cifar_root), only=["clapp++"])
    assert fits == ["clapp++", "clapp++"]  # only the re-run row trains, once per seed
    status = {(c.row.preset, c.seed): c.trained for c in result.cells}
    assert status == {
        ("clapp++", 0): "trained",
        ("clapp++", 1): "trained",
        ("random", 0): "kept",
        ("random", 1): "kept",
    }

    new = _read(out / "results.csv")
    assert [(r["preset"], r["seed"]) for r in new] == [(r["preset"], r["seed"]) for r in rows]  # same order
    assert {r["seed"]: r["test_acc"] for r in new if r["preset"] == "random"} == {"0": "12.34", "1": "23.45"}
    assert {r["seed"]: r["run"] for r in new if r["preset"] == "clapp++"} == old_local  # same keys, retrained
    md = (out / "results.md").read_text()
    assert f"| Random | `random` | {format_mean_std([12.34, 23.45])} |" in md
    assert "**Partial re-run:** `localssl reproduce test-table --scale tiny --seeds 2 --only clapp++`" in md
    assert "run folder not on disk (value kept from results.csv) (2 runs)" in md
    assert "for these 2 runs" in md and "2 runs without a record on disk are not counted" in md


def test_only_refuses_before_writing_anything(cifar_root, tmp_path):
    out = tmp_path / "out"
    kw = {"runs_dir": tmp_path / "runs", "root": str(cifar_root)}
    with pytest.raises(ConfigError, match="not a preset of table test-table; its presets: clapp\\+\\+, random"):
        run_table(TABLE, out, "tiny", seeds=1, only=["clapp++dfb"], **kw)
    with pytest.raises(ConfigError, match="results.csv, which does not exist; run the whole table without --only"):
        run_table(TABLE, out, "tiny", seeds=1, only=["clapp++"], **kw)
    out.mkdir(exist_ok=True)
    (out / "results.csv").write_text(
        "table,scale,method,preset,dataset,data,seed,test_acc,val_acc,epochs,steps,run\n"
        "table2,cpu,Random,random,cifar10,cifar10,0,50.0,50.0,1,0,random-0123456789ab\n"
    )
    with pytest.raises(ConfigError, match="holds table table2 at scale cpu, not test-table at tiny"):
        run_table(TABLE, out, "tiny", seeds=1, only=["clapp++"], **kw)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"] and not (tmp_path / "runs").exists()


def test_cli_only_is_refused_by_an_experiment_without_rows(tmp_path, capsys):
    assert cli_main(["reproduce", "fig2", "--scale", "smoke", "--out", str(tmp_path), "--only", "clapp++"]) != 0
    assert "cannot re-run single rows (--only)" in capsys.readouterr().err
