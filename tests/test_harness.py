"""Reproduction harness: run keys, run-or-reuse, resume of an interrupted grid, mean ± std, reports."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from localssl.config import load_config
from localssl.experiments.engine import harness, report
from localssl.experiments.engine.grid import Row, Scale, Table, format_mean_std, mean_std
from localssl.experiments.engine.harness import run_table
from localssl.experiments.engine.report import versus_floor, write_results_page
from localssl.experiments.engine.runs import (
    RunLock,
    find_run_dir,
    key_dict,
    probe_or_reuse,
    read_provenance,
    run_key,
    run_or_reuse,
    runs_root,
)
from localssl.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ("model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "probe.epochs=2")


def _cfg(root, *extra):
    return load_config("clapp++", [*TINY, "data.name=cifar10", f"data.root={root}", *extra])


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------- mean ± std
def test_mean_std_is_the_sample_standard_deviation():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), abs=1e-12)  # sum of squares 5, n - 1 = 3
    assert mean_std([80.51]) == (80.51, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_versus_floor_is_a_two_standard_error_test():
    # means 60 and 58, sample variances 1 and 1 over 3 seeds each: SE = sqrt(1/3 + 1/3) = 0.816
    assert versus_floor([59.0, 60.0, 61.0], [57.0, 58.0, 59.0]) == (pytest.approx(2.0), "above")  # 2 > 1.63
    assert versus_floor([58.0, 59.0, 60.0], [57.0, 58.0, 59.0]) == (pytest.approx(1.0), "level")
    assert versus_floor([55.0, 56.0, 57.0], [57.0, 58.0, 59.0]) == (pytest.approx(-2.0), "below")
    assert versus_floor([62.0], [57.0, 58.0, 59.0]) == (pytest.approx(4.0), "one seed")


def test_a_floor_preset_must_have_a_row():
    with pytest.raises(ValueError, match=r"floor preset\(s\) \['random'\] have no row"):
        _table(Row("Local", "clapp++"), floor="random")


def test_format_mean_std():
    assert format_mean_std([80.0, 81.0, 82.0]) == "81.00 ± 1.00"
    assert format_mean_std([80.514]) == "80.51"
    assert format_mean_std([]) == "–"
    assert format_mean_std([70.0, 71.0], n_expected=3) == "70.50 ± 0.71 (n=2)"
    assert format_mean_std([70.0, 71.0, 72.0], n_expected=3, digits=1) == "71.0 ± 1.0"


# ------------------------------------------------------------------------------------- keys
def test_run_key_follows_what_the_run_learns(tmp_path):
    base = _cfg(tmp_path)
    assert run_key(base) == run_key(_cfg(tmp_path))
    # settings that cannot change what is learned share the run
    same = _cfg(tmp_path / "elsewhere", "out_dir=other", "train.progress=true", "train.log_every=7", "probe.epochs=9")
    assert run_key(same) == run_key(base)
    # anything that changes training gives another run
    changes = ("train.seed=1", "model.width=0.125", "train.epochs=2", "data.train_subset=30", "objective.f=softplus")
    for extra in changes:
        assert run_key(_cfg(tmp_path, extra)) != run_key(base), extra
    # the preset name is not part of the key: the same recipe under two names is one run
    assert run_key(load_config("clapp++dfb", [*TINY, "rule.reference=same", f"data.root={tmp_path}"])) == run_key(base)
    # weight decay 'auto' is resolved before hashing
    assert run_key(_cfg(tmp_path, "train.weight_decay=0.0")) == run_key(base)
    # only non-default values count: spelling out a default (or a new option added with a default) keeps the run
    assert run_key(_cfg(tmp_path, "train.momentum=0.9", "train.max_steps_per_epoch=")) == run_key(base)
    assert "momentum" not in key_dict(base)["train"] and key_dict(base)["model"]["width"] == 0.0625


def test_run_or_reuse_same_config_same_dir(cifar_root, tmp_path):
    runs = tmp_path / "runs"
    cfg = _cfg(cifar_root, "train.epochs=1")
    run_dir, status = run_or_reuse(cfg, runs)
    assert status == "trained" and run_dir.name == f"clapp++-{run_key(cfg)}"
    provenance = read_provenance(run_dir)
    assert provenance["key"] == run_key(cfg) and provenance["pretrain_cpu_s"] > 0 and "localssl" in provenance["code"]
    stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    again, status = run_or_reuse(_cfg(cifar_root, "train.epochs=1", "train.progress=true"), runs)
    assert (again, status) == (run_dir, "reused")
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == stamp  # not retrained
    other, status = run_or_reuse(_cfg(cifar_root, "train.epochs=1", "train.seed=3"), runs)
    assert status == "trained" and other != run_dir
    assert sorted(p.name for p in runs.iterdir()) == sorted([run_dir.name, other.name])


def test_probe_reused_only_for_the_same_settings(cifar_root, tmp_path):
    cfg = _cfg(cifar_root, "train.epochs=1")
    run_dir, _ = run_or_reuse(cfg, tmp_path / "runs")
    first, status = probe_or_reuse(cfg, run_dir, 1)
    assert status == "probed" and 0.0 <= first["test_acc_pct"] <= 100.0
    assert not list(run_dir.glob("features-*.pt"))  # the feature cache is dropped after probing
    again, status = probe_or_reuse(cfg, run_dir, 1)
    assert status == "reused" and again["test_acc_pct"] == first["test_acc_pct"]
    stored = json.loads((run_dir / "probe.json").read_text())
    del stored["probe"]["augment_copies"]  # written before that option existed (its default keeps the old probe)
    (run_dir / "probe.json").write_text(json.dumps(stored))
    assert probe_or_reuse(cfg, run_dir, 1)[1] == "reused"
    assert probe_or_reuse(cfg, run_dir, 2)[1] == "probed"  # another checkpoint epoch
    changed, status = probe_or_reuse(_cfg(cifar_root, "train.epochs=1", "probe.epochs=3"), run_dir, 1)
    assert status == "probed" and changed["probe"]["epochs"] == 3
    # probe.json now holds the probe.epochs=3 result; the first setting is still kept (probes.json), so a table
    # that probes one run two ways reuses both instead of probing again whenever it is regenerated
    back, status = probe_or_reuse(cfg, run_dir, 1)
    assert status == "reused" and back["test_acc_pct"] == first["test_acc_pct"]
    assert probe_or_reuse(_cfg(cifar_root, "train.epochs=1", "probe.epochs=3"), run_dir, 1)[1] == "reused"
    kept = json.loads((run_dir / "probes.json").read_text())["results"]
    assert sorted(r["probe"]["epochs"] for r in kept if r["checkpoint_epoch"] == 1) == sorted(
        {first["probe"]["epochs"], 3}
    )  # one entry per setting and checkpoint: probing the same setting again replaced its entry
    (run_dir / "probes.json").write_text("{not json")  # a damaged record is recomputed, never guessed from
    assert probe_or_reuse(cfg, run_dir, 1)[1] == "probed"


def test_interrupted_run_resumes_bit_identically(cifar_root, tmp_path, monkeypatch):
    cfg = _cfg(cifar_root, "train.epochs=2")
    reference, _ = run_or_reuse(cfg, tmp_path / "reference")

    calls = {"n": 0}
    original = Trainer.train_epoch

    def dies_in_second_epoch(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_or_reuse(cfg, tmp_path / "runs")
    run_dir = find_run_dir(cfg, tmp_path / "runs")
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)

    again, status = run_or_reuse(cfg, tmp_path / "runs")
    assert (again, status) == (run_dir, "resumed")
    a = torch.load(reference / "checkpoint.pt", weights_only=True)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["encoder"]:
        assert torch.equal(a["encoder"][k], b["encoder"][k]), k
    assert [r["epoch"] for r in _read_csv(run_dir / "metrics.csv")] == ["1", "2"]


def test_run_that_died_before_its_first_checkpoint_restarts(cifar_root, tmp_path):
    cfg = _cfg(cifar_root, "train.epochs=1")
    run_dir = find_run_dir(cfg, tmp_path / "runs")
    run_dir.mkdir(parents=True)
    (run_dir / "steps.csv").write_text("epoch,step\n1,1\n")
    _, status = run_or_reuse(cfg, tmp_path / "runs")
    assert status == "trained" and (run_dir / "summary.json").exists()
    assert (run_dir / "steps.csv").read_text().splitlines()[1] != "1,1"


def test_edited_run_directory_is_refused(cifar_root, tmp_path):
    cfg = _cfg(cifar_root, "train.epochs=1")
    run_dir, _ = run_or_reuse(cfg, tmp_path / "runs")
    text = (run_dir / "config.yaml").read_text().replace("lr: 0.0002", "lr: 0.1")
    (run_dir / "config.yaml").write_text(text)
    with pytest.raises(RuntimeError, match="does not match its key"):
        run_or_reuse(cfg, tmp_path / "runs")


# ------------------------------------------------------------------------------------- the grid
TINY_SCALE = Scale("tiny", "test scale", overrides=(*TINY, "train.epochs=1"))


def _table(*rows, floor=None):
    return Table(
        name="test-table",
        title="Test table",
        source="none",
        datasets=("cifar10", "stl10"),
        rows=rows,
        scales={"tiny": TINY_SCALE},
        floor=floor,
    )


def test_grid_resumes_where_it_stopped(cifar_root, tmp_path, monkeypatch):
    table = _table(
        Row("Local", "clapp++", published={"cifar10": 80.51}, published_std={"cifar10": 0.27}),
        Row("Not yet", "no-such-preset", published={"cifar10": 50.0}),
        Row("Backprop", "bp-clapp++", published={"stl10": 80.36}),
        Row("Random", "random"),
        floor="random",
    )
    out = tmp_path / "out"
    fits = {"n": 0}
    original = Trainer.fit

    def counting_fit(self):
        fits["n"] += 1
        if fits["n"] == 3:  # the grid is killed while training seed 0's third cell (Random)
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    with pytest.raises(KeyboardInterrupt):
        run_table(table, out, "tiny", seeds=2, runs_dir=tmp_path / "runs", root=str(cifar_root))
    partial = _read_csv(out / "results.csv")
    assert [(r["method"], r["seed"]) for r in partial] == [("Local", "0"), ("Backprop", "0")]

    fits["n"] = 100
    result = run_table(table, out, "tiny", seeds=2, runs_dir=tmp_path / "runs", root=str(cifar_root))
    assert fits["n"] == 100 + 4  # Random seed 0 and the three cells of seed 1: nothing is trained twice
    status = {(c.row.label, c.seed): (c.trained, c.probed) for c in result.cells}
    assert status[("Local", 0)] == status[("Backprop", 0)] == ("reused", "reused")
    assert status[("Random", 0)] == ("trained", "probed") and status[("Local", 1)] == ("trained", "probed")

    rows = _read_csv(out / "results.csv")
    assert len(rows) == 6 and {r["dataset"] for r in rows} == {"cifar10"}
    assert all(0.0 <= float(r["test_acc"]) <= 100.0 for r in rows)
    assert "no-such-preset" not in {r["preset"] for r in rows}  # never a number for a missing preset
    local = [float(r["test_acc"]) for r in rows if r["method"] == "Local"]
    steps = {r["method"]: r["steps"] for r in rows}
    assert steps == {"Local": "7", "Backprop": "7", "Random": "0"}  # 60 images // batch 8; random init never steps

    md = (out / "results.md").read_text()
    assert "not run: preset `no-such-preset` does not exist" in md
    assert "STL-10:** not run (dataset not on disk; get it with `localssl data download stl10`" in md
    floor = next(x for x in md.splitlines() if x.startswith("- **Against Random, CIFAR-10:**"))
    rnd = [float(r["test_acc"]) for r in rows if r["method"] == "Random"]
    delta, verdict = versus_floor(local, rnd)
    assert f"*{verdict}*: " in floor and f"Local {delta:+.2f}" in floor and "Backprop " in floor
    assert "Random -" not in floor and "Random +" not in floor  # the floor is not compared with itself
    line = next(x for x in md.splitlines() if x.startswith("| Local "))
    assert f"| {format_mean_std(local)} | 80.51 ± 0.27 |" in line
    assert "| Not yet | `no-such-preset` | not run | 50.00 |" in md
    assert "CIFAR-10 (JPEG copy)" not in md and "| CIFAR-10: ours |" in md  # official pickles under root
    assert "for these 6 runs" in md and "- **Runs created by:** localssl" in md
    assert (out / "results.png").stat().st_size > 0


def test_row_restricted_to_some_datasets(cifar_root, tmp_path):
    table = _table(Row("STL only", "clapp++", datasets=("stl10",), note="defined on STL-10 only."))
    result = run_table(table, tmp_path / "out", "tiny", seeds=1, runs_dir=tmp_path / "runs", root=str(cifar_root))
    assert result.cells == []
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| STL only | `clapp++` | n/a | – | not run | – |" in md and "defined on STL-10 only." in md


def test_per_preset_overrides_apply_at_their_scale_to_their_preset_only():
    """A scale's per-preset overrides come after the row's own, for that preset's rows at that scale only."""
    scale = Scale("s", "p", overrides=("train.lr=2e-3",), per_preset={"supervised-audio": ("train.lr=5e-4",)})
    other = Scale("t", "p", overrides=("train.lr=2e-3",))
    sup = Row("Supervised", "supervised-audio", ("train.lr=1e-2",))
    cpc = Row("CPC", "cpc-audio")
    lr = {
        (r.preset, sc.name): harness.row_config(r, sc, "phones", 0, None).train.lr
        for r in (sup, cpc)
        for sc in (scale, other)
    }
    assert lr == {
        ("supervised-audio", "s"): 5e-4,
        ("supervised-audio", "t"): 1e-2,
        ("cpc-audio", "s"): 2e-3,
        ("cpc-audio", "t"): 2e-3,
    }


def test_unknown_scale_and_bad_seeds_are_errors(tmp_path):
    table = _table(Row("Local", "clapp++"))
    with pytest.raises(ValueError, match="has no scale 'huge'; scales: tiny"):
        run_table(table, tmp_path, "huge", 1)
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        run_table(table, tmp_path, "tiny", 0)


def test_runs_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALSSL_RUNS", raising=False)
    assert runs_root(tmp_path / "out") == tmp_path / "out" / "runs"
    monkeypatch.setenv("LOCALSSL_RUNS", str(tmp_path / "shared"))
    assert runs_root(tmp_path / "out") == tmp_path / "shared"


def test_data_label_names_the_jpeg_copy(cifar_zip_root):
    assert harness.data_label("cifar10", str(cifar_zip_root)) == "CIFAR-10 (JPEG copy)"
    assert harness.data_missing("cifar10", str(cifar_zip_root)) is None


def test_data_label_official_pickles(cifar_root):
    assert harness.data_label("cifar10", str(cifar_root)) == "CIFAR-10"
    why = harness.data_missing("stl10", str(cifar_root))
    assert "localssl data download stl10" in why
    assert str(cifar_root) not in why  # the committed report names no path of this machine


# ------------------------------------------------------------------------------------- results page
def test_results_page_collects_cpu_tables(tmp_path):
    for name in ("zeta", "table2"):
        folder = tmp_path / "results" / name / "cpu"
        folder.mkdir(parents=True)
        body = f"# {name} title\n\n![plot](results.png)\n\nPer-seed values: `results.csv`.\n"
        (folder / "results.md").write_text(body)
    (tmp_path / "results" / "table2" / "smoke").mkdir()
    (tmp_path / "results" / "table2" / "smoke" / "results.md").write_text("# smoke only\n")
    (tmp_path / "results" / "zeta" / "cpu" / "results.md").write_text(
        "# zeta title\n\n![c](curves.png) [r](../record/results.md) [w](https://x.org/a.md) [h](#zeta-title)\n"
    )
    page = write_results_page(tmp_path).read_text()
    assert "![c](../results/zeta/cpu/curves.png)" in page  # any file beside results.md, not only results.*
    assert "[r](../results/zeta/cpu/../record/results.md)" in page  # any relative link still reaches its file
    assert "[w](https://x.org/a.md)" in page and "[h](#zeta-title)" in page  # web links and anchors kept
    assert "Do not edit" in page and "smoke only" not in page
    assert page.index("## table2 title") < page.index("## zeta title")  # known tables first
    assert "![plot](../results/table2/cpu/results.png)" in page
    assert "[`results.csv`](../results/table2/cpu/results.csv)" in page
    assert "No `--scale paper` results are in the repository yet" in page


def test_runs_location_names_no_path_of_this_machine(tmp_path):
    root = report.repo_root()
    assert report.runs_location(Path("results/t/cpu/runs")) == "`results/t/cpu/runs`"
    if root is not None:
        assert report.runs_location(root / "results" / "t" / "cpu" / "runs") == "`results/t/cpu/runs`"
    assert report.runs_location(tmp_path / "out" / "runs") == "`runs/` beside results.md"
    assert str(tmp_path) not in report.runs_location(tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------- several processes
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_lock(tmp_path):
    host = socket.gethostname()
    with RunLock(tmp_path, "abc", wait=False) as held:
        assert held and (tmp_path / ".abc.lock").read_text() == f"{host} {os.getpid()}"
        with RunLock(tmp_path, "abc", wait=False) as again:  # held by a live process: not taken
            assert not again and str(os.getpid()) in again.holder
    assert not (tmp_path / ".abc.lock").exists()  # released on exit
    (tmp_path / ".abc.lock").write_text(f"{host} {_dead_pid()}")  # its process died: taken over
    with RunLock(tmp_path, "abc", wait=False) as held:
        assert held


def test_cell_held_by_another_process_is_done_last(cifar_root, tmp_path, monkeypatch):
    table = _table(Row("Local", "clapp++"), Row("Random", "random"))
    runs = tmp_path / "runs"
    runs.mkdir()
    key = run_key(harness.row_config(table.rows[0], TINY_SCALE, "cifar10", 0, str(cifar_root)))
    lock = runs / f".{key}.lock"
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process holds the Local run
    order = []
    original = harness.run_or_reuse

    def recording(cfg, runs_dir):
        order.append(cfg.name)
        if cfg.name == "random":  # the other process finishes while we train Random
            lock.unlink()
        return original(cfg, runs_dir)

    monkeypatch.setattr(harness, "run_or_reuse", recording)
    monkeypatch.setattr(RunLock, "poll_s", 0.05)
    result = run_table(table, tmp_path / "out", "tiny", seeds=1, runs_dir=runs, root=str(cifar_root))
    assert order == ["random", "clapp++"]
    assert [c.row.label for c in result.cells] == ["Local", "Random"]  # reported in table order
    assert not list(runs.glob(".*.lock"))


def _write_stl10(root, n_train=15, n_test=5, n_unlabeled=9, seed=0):
    """Official STL-10 binaries (column-major 3×96×96 uint8, labels 1..10)."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())


def test_a_dataset_on_disk_gets_its_column(cifar_root, tmp_path):
    _write_stl10(cifar_root)
    table = _table(Row("Local", "clapp++", published={"stl10": 78.66}))
    result = run_table(table, tmp_path / "out", "tiny", seeds=1, runs_dir=tmp_path / "runs", root=str(cifar_root))
    assert [(c.dataset, c.data) for c in result.cells] == [("cifar10", "cifar10"), ("stl10", "stl10")]
    stl = result.cells[1]
    assert stl.steps == 9 // 8  # STL-10 pretrains on its 9 unlabeled images only (CLAPP++ App. B), batch 8
    assert not result.not_run
    assert "| STL-10: ours | published |" in (tmp_path / "out" / "results.md").read_text()


def test_code_version_ignores_the_generated_results(tmp_path, monkeypatch):
    """Rewriting results.md / docs/results.md / RESULTS.md is the harness's own output, not a code change."""
    from localssl.experiments.engine import report

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for rel in ("results/t/cpu/results.md", "docs/results.md", "benchmarks/RESULTS.md", "localssl/rule.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path)
    for rel in ("results/t/cpu/results.md", "docs/results.md", "benchmarks/RESULTS.md"):
        (tmp_path / rel).write_text("v2\n")
    assert "commit" in report.code_version() and "uncommitted" not in report.code_version()
    (tmp_path / "localssl/rule.py").write_text("v2\n")
    assert report.code_version().endswith("with uncommitted changes")
