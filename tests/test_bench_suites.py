"""``localssl bench --suite NAME``: the named speed studies, their results entries and JSON, the option checks.

The ``smoke`` suite is exercised end to end by ``tests/test_device_check.py`` (the device check's stage 2)."""

from __future__ import annotations

import json

import pytest

from localssl.bench_suites import load_all
from localssl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu"]


def test_every_suite_is_registered_with_a_description(capsys):
    suites = load_all()
    names = {"b-cost", "b-precision", "streaming", "patch-grid", "zoo", "table2-flops", "online-probe"}
    names |= {"probe-memory", "smoke", "fast-path", "layer-parallel", "pipeline-model", "speedrun-steps", "roofline"}
    assert names == set(suites)
    assert all(s.description for s in suites.values())
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    for name in suites:
        assert f"\n  {name} " in text


def test_b_cost_suite_writes_its_entry_and_json(tmp_path, capsys):
    md, js = tmp_path / "R.md", tmp_path / "b.json"
    md.write_text("# R\n\n## Scale and speed\n\nintro\n\n## Later\n\nother\n")
    argv = [
        "bench",
        "--suite",
        "b-cost",
        *TINY,
        "--rounds",
        "1",
        "--steps",
        "1",
        "--results",
        str(md),
        "--out",
        str(js),
    ]
    assert main(argv) == 0
    out = json.loads(js.read_text())
    labels = ["clapp++", "clapp++ rank 32", "clapp++ step_each_layer", "clapp++nospatial", "bp-clapp++"]
    assert out["setup"]["presets"] == labels  # rank = 512 × width
    assert set(out["ratios"]) == set(labels[:-1])  # every variant against bp-clapp++
    text = md.read_text()
    entry = text[text.index("intro") : text.index("## Later")]  # inside its section
    assert "`localssl bench --suite b-cost model.width=0.0625" in entry and "| clapp++ rank 32 |" in entry
    assert "--threads" not in entry  # not given: the suite's own default, not torch's thread count echoed
    assert "Ratio clapp++nospatial / bp-clapp++" in entry
    assert "| clapp++ step_each_layer |" in capsys.readouterr().out


def test_zoo_suite_runs_each_preset_in_its_own_process(tmp_path):
    js = tmp_path / "z.json"
    argv = ["bench", "--suite", "zoo", "--presets", "clapp++", "lpl", *TINY, "--rounds", "1", "--steps", "1"]
    assert main([*argv, "--out", str(js)]) == 0
    rows = json.loads(js.read_text())["presets"]
    assert list(rows) == ["clapp++", "lpl"]
    for row in rows.values():
        assert row["cpu_images_per_s"] > 0 and row["peak_mem_mb"] > row["param_mb"] and row["gflop_per_step"] > 0


def test_suite_options_are_checked(capsys):
    assert main(["bench", "--suite", "b-cost", "clapp++"]) == 2  # a suite runs its own presets
    assert "give 'clapp++' with --presets" in capsys.readouterr().err
    assert main(["bench", "--suite", "b-cost", "--vs", "lpl"]) == 2
    assert main(["bench", "--suite", "nope"]) == 2
    assert "unknown bench suite 'nope'" in capsys.readouterr().err
    assert main(["bench", "clapp++", "--presets", "lpl"]) == 2  # --presets is for suites
    assert main(["bench"]) == 2
    assert "give a preset" in capsys.readouterr().err


def test_fast_path_suite_pairs_each_preset_with_fp32_and_times_the_warm_up(tmp_path, capsys):
    js = tmp_path / "f.json"
    argv = ["bench", "--suite", "fast-path", "--presets", "clapp++", *TINY, "--rounds", "1", "--steps", "1"]
    main([*argv, "--warmup", "2", "--memory-repeats", "0", "--out", str(js)])
    out = json.loads(js.read_text())
    assert (
        set(out["presets"]) == {"clapp++", "clapp++ fp32"}
        and out["fast_path_ratios"]["clapp++"]["images_per_s"]["median"] > 0
    )
    for row in out["presets"].values():
        assert len(row["warmup_step_s"]) == 2 and "warmup_cost_s" in row
    assert "clapp++: default / fp32 images/s" in capsys.readouterr().out


def test_speedrun_steps_suite_measures_every_width_of_a_rule(tmp_path):
    import math

    from localssl.experiments.library.speedrun import SCALES

    js = tmp_path / "s.json"
    argv = ["bench", "--suite", "speedrun-steps", "--presets", "clapp++", "train.batch_size=4", "--steps", "3"]
    md = tmp_path / "R.md"
    md.write_text("# R\n")
    assert main([*argv, "--warmup", "2", "--threads", "1", "--out", str(js), "--results", str(md)]) == 0
    assert "--threads 1`" in md.read_text()  # given: echoed, so the command in the entry reproduces it
    rows = json.loads(js.read_text())["rows"]
    assert sorted(r["width"] for r in rows) == sorted(SCALES["cpu"].widths)
    for r in rows:
        assert r["rule"] == "clapp++" and r["batch"] == 4 and r["steps_per_minute"] == math.floor(60 / r["s_per_step"])


def test_speedrun_steps_threads_pick_the_scale_measured():
    from localssl.bench_suites.speedrun_steps import _scale_items
    from localssl.experiments.library.speedrun import SCALES

    record = SCALES["record"]
    assert _scale_items(2, None) == ([(r, w) for r in record.main for w in record.widths], 1)  # the record's runs
    assert _scale_items(1, ["clapp++"]) == ([("clapp++", w) for w in SCALES["cpu"].widths], 2)  # one core's
    # a rule the record does not run yet is measured at the record's widths (its figure comes before the rule)
    assert _scale_items(2, ["bp-clapp++"]) == ([("bp-clapp++", w) for w in record.widths], 1)
    with pytest.raises(ValueError, match="--threads 2 the record"):
        _scale_items(3, None)


def test_speedrun_steps_on_cifar10_itself_reads_the_data_set(tmp_path, cifar_root, capsys):
    """``images=cifar10`` times the steps on the data set's own images (how the record's figure was measured):
    it reads the data root, where the default (random images) needs nothing on disk."""
    argv = ["bench", "--suite", "speedrun-steps", "--presets", "clapp++", "--threads", "2", "--steps", "3"]
    argv += ["--warmup", "2", "train.batch_size=4"]
    md = tmp_path / "R.md"
    md.write_text("# R\n")
    js = tmp_path / "s.json"
    assert main([*argv, "images=cifar10", f"data.root={cifar_root}", "--out", str(js), "--results", str(md)]) == 0
    assert "timed steps of `Trainer.train_epoch` on CIFAR-10's train images" in md.read_text()
    assert [(r["rule"], r["width"]) for r in json.loads(js.read_text())["rows"]] == [("clapp++", 0.25)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*argv, f"data.root={empty}", "--out", str(js), "--results", str(md)]) == 0  # random images
    before = md.read_text()
    assert main([*argv, "images=cifar10", f"data.root={empty}", "--out", str(js), "--results", str(md)]) != 0
    assert "cifar10 not found under data root" in capsys.readouterr().err
    assert main([*argv, "images=jpeg", "--out", str(js), "--results", str(md)]) != 0
    assert "images=jpeg is not one of random, cifar10" in capsys.readouterr().err
    assert md.read_text() == before  # refused before anything was written
    # the step itself reads the data set (not only the check before it): random images need nothing on disk
    from localssl.bench_suites.smoke import smoke_one
    from localssl.data.base import DatasetError

    tiny = ["data.name=cifar10", f"data.root={empty}", "model.width=0.0625", "train.batch_size=4"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert smoke_one("clapp++", 1, tiny, tmp_path / "a", 1)["steps"] == 1
    with pytest.raises(DatasetError, match="cifar10 not found"):
        smoke_one("clapp++", 1, tiny, tmp_path / "b", 1, random_images=False)
