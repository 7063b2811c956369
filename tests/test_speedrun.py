"""``localssl reproduce speedrun``: budgets as steps, nested budgets of one run equal to runs trained straight
to them, the choice made on validation accuracy only, finished budgets reused, bad requests refused early."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import pytest
import torch

from localssl.cli import main
from localssl.config import load_config
from localssl.experiments import load_all
from localssl.experiments.library.speedrun import SCALES, STEPS_PER_MINUTE, Candidate, chosen, finished, train_and_probe
from localssl.registry import ConfigError
from localssl.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speedrun")
    torch.set_num_threads(1)
    assert main(["reproduce", "speedrun", "--scale", "smoke", "--seeds", "2", "--out", str(out)]) == 0
    return out


def test_registered_and_every_cpu_rule_has_its_steps():
    assert load_all()["speedrun"].scales == tuple(SCALES)
    sc = SCALES["cpu"]
    for rule in (*sc.main, *sc.others):
        for width in sc.widths:
            assert sc.steps_per_minute(rule, width) == STEPS_PER_MINUTE[(rule, width)] > 0
    assert sc.budgets == (1, 3, 10) and sc.select_at == 3
    assert {"clapp++", "clapp++both", "bp-clapp++"} <= set(sc.main)
    groups = sc.groups()  # the main rules first, then the others two at a time, each rule once
    assert groups[0] == ("clapp++", "bp-clapp++") and all(len(g) <= 2 for g in groups[2:])
    assert [r for g in groups for r in g] == [*sc.main, *sc.others]


def test_budgets_are_steps_and_the_choice_is_on_validation(smoke_run):
    sc = SCALES["smoke"]
    rows = _csv(smoke_run / "results.csv")
    trained = [r for r in rows if r["rule"] != "random"]
    for r in trained:  # a budget of B 'minutes' is B × steps per minute
        assert int(r["steps"]) == int(r["budget_min"]) * sc.fixed_steps
    cells = finished(smoke_run / "runs")
    for rule in (*sc.main, *sc.others):
        pick = chosen(cells, rule, sc)
        at = [c for c in cells if c["rule"] == rule and c["seed"] == 0 and c["budget_min"] == sc.select_at]
        assert pick["val_acc"] == max(c["val_acc"] for c in at)
        setting = (pick["width"], pick["lr_factor"])
        finals = [c for c in cells if c["rule"] == rule and (c["width"], c["lr_factor"]) == setting]
        seeds = 2 if rule in sc.main else 1
        assert {(c["seed"], c["budget_min"]) for c in finals} == {(s, b) for s in range(seeds) for b in sc.budgets}
    randoms = [r for r in rows if r["rule"] == "random"]
    assert {int(r["seed"]) for r in randoms} == {0, 1} and {r["budget_min"] for r in randoms} == {"0"}
    md = (smoke_run / "results.md").read_text()
    assert "random init" in md and "The choice" in md and (smoke_run / "results.png").stat().st_size > 0


def _pick(smoke_run, rule):
    """The setting the smoke speedrun chose for ``rule`` (on validation accuracy: x1 or x2 may win)."""
    return chosen(finished(smoke_run / "runs"), rule, SCALES["smoke"])


def test_a_nested_budget_equals_a_run_trained_straight_to_it(smoke_run, tmp_path):
    sc = SCALES["smoke"]
    pick = _pick(smoke_run, "clapp++")
    c = Candidate("clapp++", pick["width"], pick["lr_factor"], 1)
    snap = smoke_run / "runs" / c.slug / f"at-{sc.budgets[-1]}min"
    cfg = load_config(
        "clapp++",
        [
            *sc.overrides,
            f"model.width={c.width}",
            f"train.lr={load_config('clapp++', [*sc.overrides]).train.lr * c.lr_factor:.6g}",  # as the speedrun sets it
            f"train.max_steps_per_epoch={sc.fixed_steps}",
            f"train.epochs={sc.budgets[-1]}",
            "train.seed=1",
            "train.progress=false",
        ],
    )
    straight = pretrain(cfg, run_dir=tmp_path / "straight")
    a = torch.load(snap / "checkpoint.pt", weights_only=True)["encoder"]
    b = torch.load(straight / "checkpoint.pt", weights_only=True)["encoder"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_call_reuses_every_budget(smoke_run):
    before = {p: p.stat().st_mtime_ns for p in (smoke_run / "runs").glob("*/at-*min/cell.json")}
    assert main(["reproduce", "speedrun", "--scale", "smoke", "--seeds", "2", "--out", str(smoke_run)]) == 0
    after = {p: p.stat().st_mtime_ns for p in (smoke_run / "runs").glob("*/at-*min/cell.json")}
    assert before == after and before


def test_bad_requests_fail_before_anything_is_written(tmp_path, monkeypatch, capsys):
    assert main(["reproduce", "speedrun", "--scale", "smoke", "--only", "nope", "--out", str(tmp_path / "a")]) != 0
    assert "--only nope: not a rule of the speedrun" in capsys.readouterr().err
    monkeypatch.setitem(SCALES, "cpu", dataclasses.replace(SCALES["cpu"], steps={}))
    with pytest.raises(ConfigError, match="bench --suite speedrun-steps --presets clapp"):
        SCALES["cpu"].steps_per_minute("clapp++", 0.25)
    assert main(["reproduce", "speedrun", "--scale", "cpu", "--out", str(tmp_path / "b")]) != 0
    assert "no steps-per-minute figure for clapp++" in capsys.readouterr().err
    assert not [*tmp_path.rglob("*.*")] and not [*tmp_path.rglob("runs")]  # the folders hold nothing


def test_a_lost_snapshot_is_copied_again_without_training(smoke_run):
    sc = SCALES["smoke"]
    pick = _pick(smoke_run, "bp-clapp++")
    c = Candidate("bp-clapp++", pick["width"], pick["lr_factor"], 1)
    folder = smoke_run / "runs" / c.slug
    last = f"at-{sc.budgets[-1]}min"
    cell = json.loads((folder / last / "cell.json").read_text())
    timing = (folder / "timing.json").read_text()
    shutil.rmtree(folder / last)
    rows = train_and_probe(c, sc, smoke_run / "runs", sc.budgets[-1], sc.budgets)
    assert (folder / "timing.json").read_text() == timing  # no step was trained again
    again = rows[-1]
    assert (again["steps"], again["test_acc"], again["train_cpu_s"]) == (
        cell["steps"],
        cell["test_acc"],
        cell["train_cpu_s"],
    )


def _group_lrs(state):
    """Every optimizer param group's learning rate in a checkpoint's optimizer state."""
    if isinstance(state, dict):
        if "param_groups" in state:
            return [g["lr"] for g in state["param_groups"]]
        return [lr for v in state.values() for lr in _group_lrs(v)]
    return []


def test_the_record_scale_is_one_run_of_the_whole_machine_after_a_choice_of_runs_of_their_own():
    from localssl.experiments.library.speedrun import RECORD_STEPS_PER_MINUTE

    sc = SCALES["record"]
    assert sc.threads == 2 and sc.budgets == (60,) and (sc.select_at, sc.choice_budget) == (15, 15)
    assert (sc.main, sc.others, sc.widths) == (("clapp++",), (), (0.25,))
    cands = sc.candidates()  # at most 4 recipes (the limit); the record of before, x1 without warm-up, is one
    assert len(cands) == 4 and (0.25, 1.0, 0.0) in cands and len(set(cands)) == 4
    assert sc.steps_per_minute("clapp++", 0.25) == RECORD_STEPS_PER_MINUTE[("clapp++", 0.25)] > 0
    assert "train.schedule=cosine" in sc.overrides
    assert sc.ship == (("clapp++", "clapp_pp_cifar10"),)  # the record ships its encoder under this name
    assert sc.widths[0] in SCALES["cpu"].widths  # the width the cpu scale may choose for clapp++
    with pytest.raises(ConfigError, match="select_at=4 is not one of the budgets"):
        dataclasses.replace(SCALES["smoke"], select_at=4)
    with pytest.raises(ConfigError, match="choice runs' length"):
        dataclasses.replace(sc, select_at=60)


def test_a_choice_on_runs_of_their_own_then_the_final_run_from_scratch(tmp_path, monkeypatch):
    """A schedule that depends on the run's length (cosine) cannot be chosen on the first minutes of the final
    run: each candidate is its own short run, its decay over its own length; the final run starts again."""
    from localssl.experiments.library import speedrun
    from localssl.experiments.library.speedrun_scales import recipe
    from localssl.schedule import learning_rate

    smoke = SCALES["smoke"]
    tiny = dataclasses.replace(
        smoke,
        overrides=(*smoke.overrides, "train.schedule=cosine"),
        lr_factors=(1.0,),
        warmups=(0.0, 1.0),
        budgets=(3,),
        select_at=2,
        choice_budget=2,
        main=("clapp++",),
        others=(),
    )
    monkeypatch.setitem(SCALES, "smoke", tiny)
    speedrun.run(tmp_path, "smoke", 1)
    runs, per_min, base = tmp_path / "runs", tiny.fixed_steps, load_config("clapp++").train.lr
    cells = finished(runs)
    choice = [c for c in cells if c["horizon_min"] == 2]
    assert sorted(recipe(c)[2] for c in choice) == [0.0, 1.0]
    for u in (0.0, 1.0):  # each candidate decayed over its own 2 minutes, after its own warm-up
        slug = Candidate("clapp++", 0.0625, 1.0, 0, u, 2).slug
        assert slug == "clapp++-w0.0625-lr1x" + ("-wu1" if u else "") + "-h2-s0"
        ck = torch.load(runs / slug / "at-2min" / "checkpoint.pt", weights_only=True)
        total = 2 * per_min
        assert ck["global_step"] == total and all(
            lr == pytest.approx(learning_rate("cosine", base, total - 1, total, round(u * per_min)))
            for lr in _group_lrs(ck["optimizer"])
        )
    pick = chosen(cells, "clapp++", tiny)
    assert pick["val_acc"] == max(c["val_acc"] for c in choice) and pick["horizon_min"] == 2
    final = runs / Candidate("clapp++", 0.0625, 1.0, 0, recipe(pick)[2]).slug
    epochs = [int(r["epoch"]) for r in _csv(final / "train" / "metrics.csv")]
    assert epochs == [1, 2, 3]  # trained from scratch in its own folder, not continued from the choice run
    assert load_config(final / "train" / "config.yaml").train.warmup_epochs == recipe(pick)[2]
    rows = _csv(tmp_path / "results.csv")
    assert {(r["rule"], r["budget_min"], r["horizon_min"]) for r in rows} == {
        ("clapp++", "2", "2"),
        ("clapp++", "3", ""),
        ("random", "0", ""),
    }
    md = (tmp_path / "results.md").read_text()
    assert "each candidate its own run of 2 minutes" in md and "warm-up 1 min" in md


def test_a_record_shaped_run_uses_its_threads_and_decays_to_its_end(tmp_path, monkeypatch):
    from localssl.experiments.library import speedrun
    from localssl.schedule import learning_rate

    smoke = SCALES["smoke"]
    tiny = dataclasses.replace(
        smoke,
        overrides=(*smoke.overrides, "train.schedule=cosine"),
        lr_factors=(1.0,),
        budgets=(3,),
        select_at=3,
        main=("clapp++",),
        others=(),
        threads=2,
        unit="minutes of the whole 2-core machine",
        ship=(("clapp++", "tiny_record"),),
    )
    monkeypatch.setitem(SCALES, "smoke", tiny)
    monkeypatch.setenv("LOCALSSL_WEIGHTS", str(tmp_path / "weights"))
    speedrun.run(tmp_path, "smoke", 1)
    assert torch.get_num_threads() == 2  # the run (in this process: one job) trained with the scale's threads
    rows = _csv(tmp_path / "results.csv")
    assert {(r["rule"], r["budget_min"]) for r in rows} == {("clapp++", "3"), ("random", "0")}
    ck = torch.load(tmp_path / "runs" / "clapp++-w0.0625-lr1x-s0" / "at-3min" / "checkpoint.pt", weights_only=True)
    total = 3 * tiny.fixed_steps
    base = load_config("clapp++").train.lr
    assert ck["global_step"] == total
    assert _group_lrs(ck["optimizer"]) and all(
        lr == pytest.approx(learning_rate("cosine", base, total - 1, total)) for lr in _group_lrs(ck["optimizer"])
    )
    md = (tmp_path / "results.md").read_text()
    assert "The choice" not in md and "one run at a time with 2 threads" in md and "--jobs 1" in md
    # the record ships its run: file + card, random init beside it, made by the speedrun command
    from localssl.evaluate.pretrained import load_encoder, shipped

    files = shipped()
    assert list(files) == ["tiny_record"]
    card = json.loads(files["tiny_record"].with_suffix(".json").read_text())
    cell = json.loads((tmp_path / "runs" / "clapp++-w0.0625-lr1x-s0" / "at-3min" / "cell.json").read_text())
    rand = json.loads((tmp_path / "runs" / "random-w0.0625-lr1x-s0" / "at-0min" / "cell.json").read_text())
    assert card["probe"]["test_acc_pct"] == pytest.approx(cell["test_acc"])
    assert card["random_init"]["test_acc_pct"] == pytest.approx(rand["test_acc"])
    assert card["made_by"] == "localssl reproduce speedrun --scale smoke --seeds 1 --jobs 1"
    assert card["training"]["steps"] == total and card["training"]["wall_s"] == pytest.approx(
        cell["train_wall_s"], abs=0.1
    )
    assert all(torch.equal(load_encoder("tiny_record").state_dict()[k], v) for k, v in ck["encoder"].items())
    # a rerun of the same command ships again through the same path: one file and card for the name
    (tmp_path / "weights" / "tiny_record-0123456789ab.json").write_text(json.dumps({**card, "file": "old"}))
    speedrun.run(tmp_path, "smoke", 1)
    assert shipped() == files and len([*(tmp_path / "weights").iterdir()]) == 3
