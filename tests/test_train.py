"""Trainer: run directory contents, exact resume, NaN handling, CLI contract, probe."""

from __future__ import annotations

import json

import pytest
import torch

from localssl.cli import main
from localssl.config import load_config
from localssl.train import NonFiniteLossError, Trainer, pretrain, resume

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false"]


def _cfg(preset, root, out, *extra):
    return load_config(preset, [*TINY, f"data.root={root}", f"out_dir={out}", *extra])


def test_run_directory_contents(cifar_root, tmp_path):
    run = pretrain(_cfg("clapp++", cifar_root, tmp_path / "runs", "train.epochs=1"))
    for name in ("config.yaml", "metrics.csv", "steps.csv", "checkpoint.pt", "summary.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["global_step"] == 60 // 8
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "loss_l1", "loss_l6", "images_per_s"} <= set(header)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(_cfg("clapp++", cifar_root, tmp_path / "runs", "train.epochs=1"), run_dir=run)


@pytest.mark.parametrize("preset", ["clapp++", "bp-clapp++"])
def test_resume_is_bit_identical(cifar_root, tmp_path, preset):
    full = pretrain(_cfg(preset, cifar_root, tmp_path / "a", "train.epochs=2"))
    half = pretrain(_cfg(preset, cifar_root, tmp_path / "b", "train.epochs=1"))
    resume(half, ["train.epochs=2"])
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(half / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for key in ("encoder", "rule"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert (half / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_resume_refuses_changes_that_break_exactness(cifar_root, tmp_path):
    run = pretrain(_cfg("clapp++", cifar_root, tmp_path, "train.epochs=1"))
    with pytest.raises(ValueError, match="cannot change on resume"):
        resume(run, ["train.lr=0.1"])


def test_resume_names_a_hand_edited_config(cifar_root, tmp_path):
    run = pretrain(_cfg("clapp++", cifar_root, tmp_path, "train.epochs=1"))
    text = (run / "config.yaml").read_text()
    assert "lr: 0.0002" in text
    (run / "config.yaml").write_text(text.replace("lr: 0.0002", "lr: 0.1"))
    with pytest.raises(ValueError, match=r"differs from the config its checkpoint was trained with \(train\.lr"):
        resume(run, ["train.epochs=2"])
    (run / "config.yaml").write_text(text)
    resume(run, ["train.epochs=2"])  # restored: resumes


def test_resume_with_nothing_to_do_changes_nothing(cifar_root, tmp_path, capsys):
    run = pretrain(_cfg("clapp++", cifar_root, tmp_path, "train.epochs=1"))
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    for extra in ([], ["train.epochs=1"]):
        resume(run, extra)
        assert "nothing to do" in capsys.readouterr().err
        assert {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()} == before


def _trainer_altering_epoch_1(cfg, run, alter):
    """A trainer whose rule's metrics pass through ``alter`` during epoch 1 (the second epoch)."""
    run.mkdir()
    trainer = Trainer(cfg, run)
    original = trainer.comp.rule.step

    def step(encoder, views, ctx):
        metrics = original(encoder, views, ctx)
        return alter(metrics) if trainer.epoch == 1 else metrics

    trainer.comp.rule.step = step
    return trainer


def test_divergence_warns_once(cifar_root, tmp_path, capsys):
    cfg = _cfg("clapp++", cifar_root, tmp_path, "train.epochs=2", "train.log_every=1")
    # finite, but 1e6 x larger: a diverging run
    trainer = _trainer_altering_epoch_1(
        cfg, tmp_path / "run", lambda m: {k: v * 1e6 if k.startswith("loss") else v for k, v in m.items()}
    )
    trainer.fit()
    err = capsys.readouterr().err
    assert err.count("the run is diverging") == 1 and "train.lr" in err


def test_no_divergence_warning_on_a_normal_run(cifar_root, tmp_path, capsys):
    pretrain(_cfg("clapp++", cifar_root, tmp_path, "train.epochs=2", "train.log_every=1"))
    assert "diverging" not in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cifar_root, tmp_path):
    cfg = _cfg("clapp++", cifar_root, tmp_path, "train.epochs=3", "train.log_every=1")
    run = tmp_path / "run"
    trainer = _trainer_altering_epoch_1(cfg, run, lambda m: {**m, "loss_l3": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteLossError, match="loss_l3") as err:
        trainer.fit()
    assert "epoch 1" in str(err.value) and "train.lr" in str(err.value)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    for name, tensor in ckpt["encoder"].items():
        assert torch.isfinite(tensor).all(), name


def test_cli_pretrain_prints_run_dir_last(cifar_root, tmp_path, capsys):
    code = main(["pretrain", "clapp++dfb", *TINY, f"data.root={cifar_root}", f"out_dir={tmp_path}", "train.epochs=1"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / last.split("/")[-1] / "checkpoint.pt").exists()
    assert main(["pretrain", "clapp++", "train.epoch=1"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_cli_missing_dataset_message(tmp_path, capsys):
    code = main(["pretrain", "clapp++", *TINY, "data.name=stl10", f"data.root={tmp_path}", f"out_dir={tmp_path}"])
    assert code == 2  # a missing file (usage.md: exit 2), in one line
    err = capsys.readouterr().err
    assert "stl10_binary" in err and "localssl data download stl10" in err and len(err.splitlines()) == 1


def test_probe_learns_above_chance(pattern_cifar_root, tmp_path):
    run = pretrain(_cfg("random", pattern_cifar_root, tmp_path))
    assert main(["probe", str(run), "probe.epochs=15", "probe.val_size=40", "probe.batch_size=32"]) == 0
    result = json.loads((run / "probe.json").read_text())
    assert result["n_val"] == 40 and result["n_train"] == 160 and result["n_test"] == 100
    assert result["test_acc_pct"] > 50  # chance is 10 %
    assert 1 <= result["best_epoch"] <= 15
    assert not any(p.name.startswith("features-") for p in run.iterdir())  # nothing left behind by default
    assert main(["probe", str(run), "probe.epochs=1", "probe.val_size=40", "probe.cache_features=true"]) == 0
    assert any(p.name.startswith("features-") for p in run.iterdir())


def test_clapp_loss_decreases_on_real_images(tmp_path):
    """CLAPP++ on the shipped CIFAR-10 subset: the summed layer loss must go down."""
    run = pretrain(
        load_config(
            "clapp++",
            [
                "data.name=cifar10-mini",
                "data.train_subset=640",
                "model.width=0.125",
                "train.epochs=3",
                "train.progress=false",
                f"out_dir={tmp_path}",
                "train.lr=5e-4",
            ],
        )
    )
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    cols = [i for i, h in enumerate(header) if h.startswith("loss_l")]
    totals = [sum(float(r.split(",")[i]) for i in cols) for r in rows[1:]]
    assert totals[-1] < totals[0] - 0.05, totals
