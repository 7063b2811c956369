"""``localssl reproduce``: the registered paper tables run end to end at the smoke scale."""

from __future__ import annotations

import csv

import pytest

from localssl.cli import main
from localssl.config import available_presets
from localssl.experiments import load_all
from localssl.experiments.clapp_pp.table2 import TABLE2

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tables_are_registered():
    experiments = load_all()
    for name in ("table2", "clapp2021-table1", "clapp2021-table5"):
        assert name in experiments and experiments[name].description


def test_table2_published_numbers_match_the_paper():
    rows = {r.label: r for r in TABLE2.rows}
    assert rows["CLAPP++both"].published == {"cifar10": 81.18, "stl10": 79.62, "tinyimagenet": 37.78}
    assert rows["CLAPP++"].published_std == {"cifar10": 0.27, "stl10": 0.16, "tinyimagenet": 0.32}
    assert rows["Naive CLAPP DFA"].published == {"stl10": 52.30}
    assert rows["Stochastic FF (Zhu et al., 2025)"].published == {"cifar10": 76.96}
    assert len(TABLE2.rows) == 14  # the paper's 12 rows + random init read by the two probes
    assert TABLE2.floor_of(rows["CLAPP (Illing et al., 2021)"]).preset == "random-patch"
    assert TABLE2.floor_of(rows["CLAPP++"]).preset == "random"
    assert TABLE2.floor_of(rows["Random init (not in Table 2)"]) is None
    assert TABLE2.floor_of(rows["Random init, patch-grid probe (floor of the CLAPP 2021 row)"]) is None


def test_reproduce_table2_smoke(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALSSL_RUNS", raising=False)
    out = tmp_path / "table2"
    assert main(["reproduce", "table2", "--scale", "smoke", "--out", str(out)]) == 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    present = [r for r in TABLE2.rows if r.preset in available_presets()]
    assert [r["method"] for r in rows] == [r.label for r in present]
    assert {r["data"] for r in rows} == {"cifar10-mini"} and {r["seed"] for r in rows} == {"0"}
    assert all(0.0 <= float(r["test_acc"]) <= 100.0 for r in rows)
    md = (out / "results.md").read_text()
    assert "scale **`smoke`**" in md and "pipeline check only" in md
    assert "- **Against Random init (not in Table 2), " in md  # each trained row against its floor
    for row in TABLE2.rows:
        if row.preset not in available_presets():
            assert f"not run: preset `{row.preset}` does not exist" in md
    assert (out / "results.png").stat().st_size > 0
    # a second call reuses every run and probe
    assert main(["reproduce", "table2", "--scale", "smoke", "--out", str(out)]) == 0
    with open(out / "results.csv") as fh:
        assert [r["test_acc"] for r in csv.DictReader(fh)] == [r["test_acc"] for r in rows]


def test_clapp2021_tables_share_runs():
    """Table 5's one-module row is Table 1's hinge-loss CPC, and its six-module row is CLAPP: same recipes, so
    the run-or-reuse keys are equal and each is trained once."""
    from localssl.config import load_config
    from localssl.experiments.clapp2021.tables import TABLE1, TABLE5
    from localssl.experiments.engine.runs import run_key

    t1 = {r.label: r for r in TABLE1.rows}
    t5 = {r.label: r for r in TABLE5.rows}
    assert t5["1 module, end-to-end (hinge loss CPC)"].published["stl10"] == t1["Hinge loss CPC"].published["stl10"]

    def key(row):
        return run_key(load_config(row.preset, list(row.overrides)))

    assert key(t5["1 module, end-to-end (hinge loss CPC)"]) == key(t1["Hinge loss CPC"])
    assert key(t5["6 modules, layer-wise (CLAPP)"]) == key(t1["CLAPP"])
    assert len({key(r) for r in TABLE5.rows}) == len(TABLE5.rows)


@pytest.mark.slow
def test_reproduce_clapp2021_table5_smoke(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCALSSL_RUNS", raising=False)
    assert main(["reproduce", "clapp2021-table5", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["data"] for r in rows} == {"cifar10-mini"}
    assert len({r["run"] for r in rows}) == 6
