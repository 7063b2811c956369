"""``localssl reproduce tableA3``: the paper's grid, model selection on validation only, pretraining
never sees the validation images, long-form results."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
import torch

from localssl.config import load_config
from localssl.data import load_split
from localssl.evaluate.probe import split_train_val
from localssl.experiments.clapp_pp import tableA3
from localssl.experiments.clapp_pp.tableA3 import GRID_ALPHA, GRID_T, PROTOCOLS, make_jobs, select, write_results


def test_jobs_cover_the_paper_grid_for_every_objective():
    jobs = make_jobs(PROTOCOLS["cpu"], seeds=2)
    assert len(jobs) == 2 * (1 + 3 * (1 + len(GRID_T) * len(GRID_ALPHA)))
    assert len({j.name for j in jobs}) == len(jobs)
    for obj in ("cross_entropy", "clapp", "lpl"):
        pc = {(j.T, j.alpha) for j in jobs if j.objective == obj and j.rule == "PC" and j.seed == 0}
        assert pc == {(t, a) for t in GRID_T for a in GRID_ALPHA}
    assert [j.cost for j in jobs] == sorted((j.cost for j in jobs), reverse=True)
    # every job's config is valid: BP runs switch the PC preset to backprop, nothing else
    for job in jobs[:: len(jobs) // 7]:
        cfg = load_config(job.preset, list(job.overrides))
        assert cfg.rule.name == {"PC": "predictive_coding", "BP": "backprop", "random": "frozen"}[job.rule]
        if job.rule == "PC":
            assert (cfg.rule.T, cfg.rule.alpha) == (job.T, job.alpha)


def fake(objective: str, rule: str, T, alpha, seed: int, val: float, test: float) -> dict:
    return dict(
        objective=objective,
        rule=rule,
        T=T,
        alpha=alpha,
        seed=seed,
        val_acc=val,
        test_acc=test,
        pretrain_s=1.0,
        pretrain_cpu_s=1.0,
        probe_s=1.0,
    )


def test_pc_grid_point_is_chosen_on_validation_never_on_test(tmp_path: Path):
    results = [
        fake("clapp", "PC", 9, 0.1, 0, val=40.0, test=60.0),  # best test, worse validation
        fake("clapp", "PC", 17, 0.5, 0, val=45.0, test=50.0),
        fake("clapp", "BP", None, None, 0, val=55.0, test=56.0),
        fake("random", "random", None, None, 0, val=30.0, test=31.0),
        {**fake("clapp", "PC", 1, 0.5, 0, val=None, test=None), "diverged": True},
    ]
    best = select(results)
    assert (best[("clapp", "PC", 0)]["T"], best[("clapp", "PC", 0)]["alpha"]) == (17, 0.5)
    write_results(tmp_path, "cpu", PROTOCOLS["cpu"], results, seconds=1.0)
    md = (tmp_path / "results.md").read_text()
    assert "| CLAPP objective (self-supervised) | 56.00 | 50.00 | (17, 0.5) | – / – | 65.68 | 45.62 |" in md
    assert "| CLAPP objective (self-supervised) | 1 | – | – | diverged |" in md
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 * 4 + 3  # one value per row: val, test, wall and CPU seconds; a diverged run: 3
    chosen = {
        (r["T"], r["alpha"])
        for r in rows
        if r["objective"] == "clapp" and r["rule"] == "PC" and r["selected"] == "True"
    }
    assert chosen == {("17", "0.5")}
    assert (tmp_path / "tableA3.png").stat().st_size > 0


def test_pretraining_excludes_the_probe_validation_images(monkeypatch, tmp_path: Path):
    captured = {}

    class FakeTrainer:
        def __init__(self, cfg, run_dir, data=None):
            captured["data"] = data

        def fit(self):
            return {}

    monkeypatch.setattr("localssl.train.Trainer", FakeTrainer)
    cfg = load_config("pc-supervised", ["data.name=cifar10-mini", "probe.val_size=300", "data.train_subset=3000"])
    tableA3.pretrain_excluding_validation(cfg, tmp_path / "run")
    train = load_split("cifar10-mini", "train")
    val_idx, _ = split_train_val(len(train), cfg.probe)

    def digests(images: torch.Tensor) -> set[str]:
        return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images}

    used = captured["data"]
    assert len(used) == 3000
    assert not digests(used.images) & digests(train.images[val_idx])


@pytest.mark.slow
def test_smoke_reproduction_runs_end_to_end(tmp_path: Path):
    tableA3.run(tmp_path, "smoke", seeds=1)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {r["objective"] for r in rows} == {"cross_entropy", "clapp", "lpl", "random"}
    assert "BP (paper)" in (tmp_path / "results.md").read_text()
    tableA3.run(tmp_path, "smoke", seeds=1)  # finished runs are reused


def test_a_run_is_reused_only_for_the_same_settings(tmp_path: Path, monkeypatch):
    """A finished run is reused; a job whose protocol changed (other overrides) never picks up the old run."""
    import json

    cpu, smoke = make_jobs(PROTOCOLS["cpu"], seeds=1), make_jobs(PROTOCOLS["smoke"], seeds=1)
    job = next(j for j in cpu if j.rule == "BP" and j.objective == "clapp")
    other = next(j for j in smoke if j.name == job.name)  # same table cell, other protocol
    assert (
        job.run_name != other.run_name and job.run_name == make_jobs(PROTOCOLS["cpu"], seeds=1)[cpu.index(job)].run_name
    )
    (tmp_path / job.run_name).mkdir()
    (tmp_path / job.run_name / "result.json").write_text(json.dumps({"name": job.name, "test_acc": 12.5}))
    assert tableA3.run_job(job, tmp_path) == {"name": job.name, "test_acc": 12.5, "reused": True}

    class Trained(Exception):
        pass

    def train(cfg, run_dir):
        raise Trained(run_dir)

    monkeypatch.setattr(tableA3, "pretrain_excluding_validation", train)
    with pytest.raises(Trained) as err:
        tableA3.run_job(other, tmp_path)
    assert err.value.args[0] == tmp_path / other.run_name
