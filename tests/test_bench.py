"""``localssl bench``: JSON keys, counterparts, the results entry, ratios consistent with the rows."""

from __future__ import annotations

import json

import pytest
import torch

from localssl.bench import Runner, Spec, append_results, counterpart
from localssl.cli import main

TINY = ["model.width=0.0625", "train.batch_size=4", "train.device=cpu"]


def test_counterparts():
    for p in ("clapp++", "clapp++nospatial", "clapp++dfb", "clapp++both"):
        assert counterpart(p) == Spec("bp-clapp++", "bp-clapp++")
    assert counterpart("greedy-supervised") == Spec("supervised", "supervised")
    assert counterpart("bp-clapp++") is None and counterpart("random") is None


def test_bench_cli_writes_json_and_appends_results(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n## Other topic\n\nkept\n")
    args = ["bench", "clapp++", *TINY, f"--out={out}", f"--results={md}"]
    assert main([*args, "--rounds=2", "--steps=1", "--memory-repeats=1"]) == 0
    res = json.loads(out.read_text())
    assert res["setup"]["input"] == [3, 32, 32] and res["setup"]["presets"] == ["clapp++", "bp-clapp++"]
    for row in res["presets"].values():
        keys = ("images_per_s", "cpu_images_per_s", "peak_mem_mb", "peak_activation_mb", "saved_activation_mb")
        for key in (*keys, "views_per_s", "gflop_per_step"):
            assert row[key] > 0, key
        assert row["peak_mem_mb"] > row["param_mb"] + row["optimizer_state_mb"]
        assert len(row["images_per_s_rounds"]) == 2
    a, b = res["presets"]["clapp++"], res["presets"]["bp-clapp++"]
    r = res["ratio"]
    assert r["images_per_s"]["values"] == pytest.approx(
        [x / y for x, y in zip(a["images_per_s_rounds"], b["images_per_s_rounds"])]
    )
    assert r["peak_activation_mb"] == pytest.approx(a["peak_activation_mb"] / b["peak_activation_mb"])
    assert "| clapp++ |" in capsys.readouterr().out
    text = md.read_text()
    assert text.index("## Scale and speed") > text.index("kept")
    assert "`localssl bench clapp++ model.width=0.0625" in text


def test_random_inputs_have_the_datasets_shape():
    runner = Runner(Spec("clapp++", "clapp++"), [*TINY, "data.name=stl10"])
    assert tuple(runner.trainer.images.shape[1:]) == (3, 96, 96)
    assert runner.trainer.images.dtype == torch.uint8
    assert tuple(runner.views().x.shape) == (8, 3, 96, 96)  # two views of 4 images


def test_append_results_goes_inside_its_section(tmp_path):
    md = tmp_path / "R.md"
    md.write_text("# R\n\n## Scale and speed\n\nintro\n\n## Later section\n\nother\n")
    out = {
        "setup": dict(
            date="2026-01-01",
            machine="m",
            device="cpu",
            dataset="cifar10",
            input=[3, 32, 32],
            batch_size=32,
            width=1.0,
            precision="fp32",
            warmup=1,
            rounds=1,
            steps_per_round=1,
        ),
        "presets": {"a": {"images_per_s": 1.0}},
    }
    append_results(md, "localssl bench a", out)
    text = md.read_text()
    assert text.index("intro") < text.index("localssl bench a") < text.index("## Later section")


def test_processor_name_reads_the_model_name_and_falls_back(tmp_path):
    from localssl.utils import machine_name, processor_name

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert processor_name(info) == "AMD EPYC 9R14 96-Core Processor"
    info.write_text("processor\t: 0\nmodel name\t:   \n")  # blank: not a name
    assert processor_name(info) != ""
    assert processor_name(tmp_path / "missing") != ""  # not Linux: platform's answer, never an error
    assert machine_name().endswith(f"torch {torch.__version__}")
