"""``localssl reproduce``: the registered paper tables run end to end at the smoke scale."""

from __future__ import annotations

import csv

import pytest
import torch

from localssl.cli import main
from localssl.config import available_presets
from localssl.experiments import load_all
from localssl.experiments.table2 import TABLE2


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core machine two OpenMP threads spin-wait under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    assert len(TABLE2.rows) == 13  # the paper's 12 rows + random init


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
    for row in TABLE2.rows:
        if row.preset not in available_presets():
            assert f"not run: preset `{row.preset}` does not exist" in md
    assert (out / "results.png").stat().st_size > 0
    # a second call reuses every run and probe
    assert main(["reproduce", "table2", "--scale", "smoke", "--out", str(out)]) == 0
    with open(out / "results.csv") as fh:
        assert [r["test_acc"] for r in csv.DictReader(fh)] == [r["test_acc"] for r in rows]
