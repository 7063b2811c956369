"""Online linear probe (issue 17 item 1): agrees with the offline probe, leaves training untouched,
resumes exactly, and refuses data it cannot read out."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.online_probe import holdout_indices
from localssl.train import pretrain, resume
from tests.conftest import write_class_pattern_cifar

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false"]
ONLINE = ["train.online_probe=true", "train.online_probe_holdout=12", "train.log_every=2", "train.online_probe_every=4"]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_is_identical_with_and_without_the_online_probe(cifar_root, tmp_path):
    """The read-outs draw no random numbers from the run's generators and send no gradient back."""
    cfg = ["train.epochs=2", f"data.root={cifar_root}", *TINY]
    plain = pretrain(load_config("clapp++", [*cfg, f"out_dir={tmp_path / 'a'}"]))
    online = pretrain(load_config("clapp++", [*cfg, *ONLINE, f"out_dir={tmp_path / 'b'}"]))
    a = torch.load(plain / "checkpoint.pt", weights_only=True)
    b = torch.load(online / "checkpoint.pt", weights_only=True)
    for key in ("encoder", "rule"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs with the online probe on"
    assert "online_probe" in b and "online_probe" not in a
    header = _rows(online / "metrics.csv")[0].keys()
    assert {"probe_acc_l1", "probe_acc_l6", "probe_acc_all", "probe_loss"} <= set(header)
    steps = _rows(online / "steps.csv")
    scored = [int(r["step"]) for r in steps if r["probe_acc_all"] != ""]
    # 7 steps per epoch, rows every 2 (steps 2 4 6 7 | 9 11 13 14): scored at the first row from each multiple of 4
    assert scored == [4, 9, 13]


def test_online_probe_resumes_exactly(cifar_root, tmp_path):
    cfg = [f"data.root={cifar_root}", *TINY, *ONLINE]
    full = pretrain(load_config("clapp++", [*cfg, "train.epochs=2", f"out_dir={tmp_path / 'a'}"]))
    half = pretrain(load_config("clapp++", [*cfg, "train.epochs=1", f"out_dir={tmp_path / 'b'}"]))
    resume(half, ["train.epochs=2"])
    a = torch.load(full / "checkpoint.pt", weights_only=True)["online_probe"]["modules"]
    b = torch.load(half / "checkpoint.pt", weights_only=True)["online_probe"]["modules"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(full / "metrics.csv") != [] and [r["probe_acc_all"] for r in _rows(full / "metrics.csv")] == [
        r["probe_acc_all"] for r in _rows(half / "metrics.csv")
    ]


def test_online_probe_agrees_with_the_offline_probe(tmp_path):
    """A frozen random encoder on separable classes: the online read-out (trained for 6 epochs beside a
    frozen rule) and the offline probe of the same features reach the same accuracy within sampling noise
    (3 standard errors of the difference of two binomial proportions)."""
    root = write_class_pattern_cifar(tmp_path / "data", n_train=1000, n_test=500)
    cfg = load_config(
        "random",
        [
            "model.width=0.0625",
            "train.device=cpu",
            "train.progress=false",
            f"data.root={root}",
            f"out_dir={tmp_path / 'runs'}",
            "train.epochs=6",
            "train.online_probe=true",
            "train.online_probe_batch=32",
            "train.online_probe_holdout=200",
            "probe.val_size=200",
        ],
    )
    run = pretrain(cfg)
    online = float(_rows(run / "metrics.csv")[-1]["probe_acc_all"]) / 100
    offline = probe(run)["test_acc"]
    se = math.sqrt(online * (1 - online) / 200 + offline * (1 - offline) / 500)
    assert online > 0.3 and offline > 0.3  # both far above chance (10 %): the read-outs learned
    assert abs(online - offline) <= 3 * se + 0.01, (online, offline, se)


def test_holdout_is_seeded_labelled_and_at_most_a_fifth():
    labels = torch.tensor([-1] * 50 + list(range(10)) * 10)
    held = holdout_indices(labels, 1000, seed=0)
    assert len(held) == 20 and bool((labels[held] >= 0).all())
    assert torch.equal(held, holdout_indices(labels, 1000, seed=0))
    with pytest.raises(ValueError, match="unlabelled"):
        holdout_indices(torch.full((10,), -1), 5, seed=0)


def test_patch_grid_views_are_refused_before_a_run_directory_exists(cifar_root, tmp_path):
    cfg = load_config(
        "clapp2021",
        [
            *TINY,
            "data.name=cifar10",
            f"data.root={cifar_root}",
            f"out_dir={tmp_path / 'runs'}",
            "train.online_probe=true",
        ],
    )
    with pytest.raises(ValueError, match="online_probe=true is not available here: patch_grid"):
        pretrain(cfg)
    assert not (tmp_path / "runs").exists()
