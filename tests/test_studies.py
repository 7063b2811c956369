"""The accuracy studies that were benchmark scripts, now ``localssl reproduce NAME``: declared, registered, and
run end to end at their ``smoke`` scale (a pipeline check; the ``cpu`` numbers are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import csv

import pytest
import yaml

from localssl.cli import main
from localssl.config import available_presets, load_config
from localssl.experiments import load_all
from localssl.experiments.library.cpu_tables import B_RANK, LAYER_PROBE, PATCH, SPEECH_TABLE, ZOO

pytestmark = pytest.mark.usefixtures("one_thread")

STUDIES = {
    "b-rank": ("smoke", "cpu"),
    "patch-cifar10": ("smoke", "cpu"),
    "speech-synthetic": ("smoke", "cpu"),
    "zoo-cifar10": ("smoke", "cpu"),
    "layer-probe": ("smoke", "cpu"),
    "core-cifar10": ("smoke", "cpu", "cpu-epoch1", "cpu-epoch1-fp32"),
    "learning_curves": ("smoke", "cpu"),
    "fault-injection": ("smoke", "cpu"),
    "rhm-settings": ("smoke", "cpu"),
    "tableA3-bp": ("smoke", "cpu"),
    "tableA3-alignment": ("smoke", "cpu"),
    "probe-protocols": ("smoke", "cpu"),
    "fig3b-loss": ("smoke", "cpu", "paper"),
}


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _reproduce(name, out, *extra):
    assert main(["reproduce", name, "--scale", "smoke", "--out", str(out), *extra]) == 0
    return (out / "results.md").read_text()


def test_studies_are_registered_with_their_scales():
    experiments = load_all()
    for name, scales in STUDIES.items():
        assert experiments[name].scales == scales and experiments[name].description, name


def test_study_tables_use_existing_presets_and_state_their_budget():
    presets = set(available_presets())
    for table in (B_RANK, PATCH, SPEECH_TABLE, ZOO, LAYER_PROBE):
        assert {r.preset for r in table.rows} <= presets, table.name
        assert set(table.scales) == {"smoke", "cpu"} and table.scales["cpu"].protocol
    # the factored B's rank is 512 × width at the cpu scale's width
    width = load_config("clapp++", list(B_RANK.scales["cpu"].overrides)).model.width
    assert f"objective.B_rank={round(512 * width)}" in B_RANK.rows[2].overrides
    assert len(LAYER_PROBE.rows) == 2 * 2 * 7  # two presets, at init and pretrained, six layers and all


def test_speech_synthetic_smoke(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALSSL_RUNS", raising=False)
    md = _reproduce("speech-synthetic", tmp_path)
    rows = _csv(tmp_path / "results.csv")
    assert [r["method"] for r in rows] == [r.label for r in SPEECH_TABLE.rows]
    assert len({r["run"] for r in rows}) == 4  # the GRU and last-conv probes of a method read one run
    assert "published frame accuracy on LibriSpeech" in md


def test_core_cifar10_smoke_probes_every_epoch(tmp_path):
    md = _reproduce("core-cifar10", tmp_path)
    rows = _csv(tmp_path / "results.csv")
    assert [(r["preset"], r["epoch"]) for r in rows] == [
        ("random", "0"),
        ("clapp++", "1"),
        ("clapp++", "2"),
        ("bp-clapp++", "1"),
        ("bp-clapp++", "2"),
    ]
    assert "| random init | " in md and "first epoch > random init" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # every row has the header's columns
    recorded = yaml.safe_load((tmp_path / "runs" / "clapp++-s0" / "config.yaml").read_text())["train"]
    precision_line = next(line for line in md.splitlines() if line.startswith("- **Precision**"))
    assert f"{recorded['precision']}" in precision_line and "unknown" not in precision_line
    assert (" + channels_last" in precision_line) == bool(recorded["channels_last"])
    assert main(["reproduce", "core-cifar10", "--scale", "smoke", "--only", "nope", "--out", str(tmp_path)]) == 2


def test_learning_curves_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_WORKERS", "1")
    md = _reproduce("learning_curves", tmp_path)
    rows = _csv(tmp_path / "curves.csv")
    assert {r["preset"] for r in rows} == {"clapp++", "clapp++both", "bp-clapp++", "clapp++nospatial", "random"}
    scorings = [(r["preset"], r["step"]) for r in rows]
    assert len(scorings) == len(set(scorings))  # an epoch end scored by online_probe_every too: one row
    assert (tmp_path / "curves.png").stat().st_size > 0 and "| clapp++ |" in md


def test_rhm_settings_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_WORKERS", "1")
    md = _reproduce("rhm-settings", tmp_path)
    rows = _csv(tmp_path / "results.csv")
    assert {(r["setting"], r["rule"]) for r in rows} == {
        (s, r) for s in ("base", "init0.1") for r in ("bp", "dfa", "clapp")
    }
    assert len(list((tmp_path / "jobs").iterdir())) == 6  # one cached run per setting and rule
    assert "| init0.1 {'model': {'init_scale': 0.1}} |" in md


def test_tableA3_budget_smoke(tmp_path):
    md = _reproduce("tableA3-bp", tmp_path / "bp")
    assert [r["row"] for r in _csv(tmp_path / "bp" / "results.csv")] == [
        "random init (floor)",
        "Cross-entropy (supervised)",
        "CLAPP objective (self-supervised)",
        "LPL objective (self-supervised)",
    ]
    assert "optimizer steps" in md
    md = _reproduce("tableA3-alignment", tmp_path / "align")
    rows = _csv(tmp_path / "align" / "results.csv")
    assert len(rows) == 3 * 2 * 6  # objectives × grid points (T 1, 2 at α 0.1) × layers
    assert all(float(r["rel_norm"]) == 0.0 for r in rows if r["T"] == "1")  # T = 1 never reaches the encoder


def test_probe_protocols_smoke(tmp_path):
    md = _reproduce("probe-protocols", tmp_path)
    rows = _csv(tmp_path / "results.csv")
    assert [r["preset"] for r in rows] == ["random", "clapp++"]
    assert all(0 <= float(r["paper_last"]) <= 100 for r in rows) and "selected on test" in md


def test_core_cifar10_report_names_the_presets_it_did_not_run(tmp_path):
    from localssl.experiments.library.core import SCALES, write_report

    budget = SCALES["cpu"]
    rows = [
        {"preset": "random", "seed": 0, "epoch": 0, "test_acc": 61.0, "val_acc": 61.0, "train_images_per_s": None},
        *(
            {"preset": "clapp++", "seed": 0, "epoch": e, "test_acc": 60.0 + e, "val_acc": 60, "train_images_per_s": 90}
            for e in (1, 2, 3)
        ),
    ]
    write_report(tmp_path, "cpu", budget, 1, rows)
    md = (tmp_path / "results.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("- **Not run here:**"))
    missing = line.removeprefix("- **Not run here:** ").split(" (")[0].split(", ")
    assert missing == [p for p in budget.presets if p != "clapp++"]
    assert "| clapp++ | 61.00 | 62.00 | 63.00 | 2 | 90 / 90 / 90 |" in md  # first epoch above 61.00: epoch 2
    assert "unknown: random, clapp++" in md  # no run folders here: the precision is not guessed
