"""Layer-parallel training (``train.parallel=layers``): K stages on K gloo processes give the one-process
weights, write one run, survive the death of a stage, and refuse the rules that cannot be split.

Oracle: the one-process run of the same config with ``train.step_each_layer=true`` (itself equal to the
single-optimizer run, tests/test_train_step_each_layer.py), compared bitwise on CPU with one thread."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from conftest import SIXTY_IMAGES, start_ranks

from localssl.config import load_config
from localssl.data import ImageData
from localssl.distributed import SINGLE, World
from localssl.rules.base import StepContext
from localssl.train import Trainer, pretrain, resume
from localssl.train import setup as train_setup
from localssl.train.pipeline import balanced_cuts
from localssl.train.setup import RunSetup, check_world

# 60 images, batch 6: 10 steps per epoch, 2 epochs; mid-epoch checkpoints every 4 steps (4, 8, 12, 16).
SETUP = [*SIXTY_IMAGES, "train.log_every=3", "train.checkpoint_every=4"]


def _run(n: int, argv: list[str], cwd: Path) -> Path:
    """``torchrun --nproc_per_node=n -m localssl ARGV``; returns the run directory (printed last)."""
    outs = []
    for p in start_ranks(n, argv, cwd):
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(out.strip())
    assert outs[1:] == [""] * (n - 1), outs  # only rank 0 prints
    return cwd / outs[0].splitlines()[-1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, weights_only=True)
    return {
        **{f"encoder.{k}": v for k, v in ckpt["encoder"].items()},
        **{f"rule.{k}": v for k, v in ckpt["rule"].items()},
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {float((a[k] - b[k]).abs().max()):.3g}"


def _losses(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split(",") for line in lines]


@pytest.fixture
def reference(cifar_root, tmp_path, one_thread):
    """The one-process run (per-layer optimizers) of the preset: its run directory."""

    def make(preset: str) -> Path:
        cfg = load_config(preset, [*SETUP, f"data.root={cifar_root}", "train.step_each_layer=true"])
        return pretrain(cfg, tmp_path / f"ref-{preset}")

    return make


def test_two_stages_give_the_one_process_run(cifar_root, tmp_path, reference):
    """clapp++ on 2 gloo stages: bitwise the one-process weights, steps.csv (every layer's columns) and
    metrics.csv's losses; one checkpoint in the one-process format with per-layer optimizer state, whose
    mid-epoch predecessor a one-process --resume finishes into the same weights."""
    run = _run(2, ["pretrain", "clapp++", *SETUP, f"data.root={cifar_root}", "train.parallel=layers"], tmp_path)
    ref = reference("clapp++")
    _assert_same(_weights(run / "checkpoint.pt"), _weights(ref / "checkpoint.pt"))
    start = Trainer(load_config("clapp++", [*SETUP, f"data.root={cifar_root}"]), Path("unused")).comp
    moved = max(
        float((v - start.encoder.state_dict()[k]).abs().max())
        for k, v in torch.load(run / "checkpoint.pt", weights_only=True)["encoder"].items()
    )
    assert moved > 1e-3, "the weights did not move: the comparison is empty"
    assert (run / "steps.csv").read_text() == (ref / "steps.csv").read_text()
    got, want = _losses(run / "metrics.csv"), _losses(ref / "metrics.csv")
    keep = [i for i, k in enumerate(want[0]) if k not in ("seconds", "images_per_s")]
    assert [[r[i] for i in keep] for r in got] == [[r[i] for i in keep] for r in want]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert sorted(ckpt["optimizer"]["per_layer"], key=int) == [str(i) for i in range(6)]
    summary = (run / "summary.json").read_text()
    assert '"parallel": "layers"' in summary and summary.count('"rss_mb"') == 2
    assert summary.count('"last_epoch_rss_mb"') == 2  # each stage's last epoch's training peak
    # each stage held only its own layers, objectives and B (counted from the whole model), and only stage 0
    # the training images
    info = json.loads(summary)
    held = []
    for stage in info["stages"]:
        a, b = (int(x) for x in stage.split("-"))
        modules = [*start.encoder.layers[a - 1 : b], *(start.rule.objectives[str(i)] for i in range(a, b + 1))]
        held.append(sum(t.numel() for m in modules for t in [*m.parameters(), *m.buffers()]))
    assert [h["values"] for h in info["held_per_rank"]] == held and 0 < held[1] < sum(held)
    assert [h["images"] for h in info["held_per_rank"]] == [60, 0]
    # the mid-epoch checkpoint before the last (epoch 2, step 6 = global step 16), resumed on one process
    mid = tmp_path / "mid"
    mid.mkdir()
    shutil.copy(run / "config.yaml", mid / "config.yaml")
    shutil.copy(run / "checkpoint.prev.pt", mid / "checkpoint.pt")
    assert torch.load(mid / "checkpoint.pt", weights_only=True)["global_step"] == 16
    resume(mid)
    _assert_same(_weights(mid / "checkpoint.pt"), _weights(ref / "checkpoint.pt"))


@pytest.mark.slow
def test_a_dead_or_hung_stage_stops_the_other_and_resume_finishes(cifar_root, tmp_path, reference):
    """Stage 1 dies (then, in a second run, hangs) before global step 14: stage 0 stops with a StageLostError
    naming stage 1 and the resume command, at once (dead) or within train.stage_timeout (hung); --resume on 2
    stages, and on 3 stages, finishes into the one-process weights."""
    ref = reference("clapp++")
    args = ["pretrain", "clapp++", *SETUP, f"data.root={cifar_root}", "train.parallel=layers"]
    for how, resume_k in (("die", 2), ("hang", 3)):
        out = tmp_path / how
        procs = start_ranks(2, [*args, f"out_dir={out}", "train.stage_timeout=4"], tmp_path, fault=f"1:14:{how}")
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=120)
        waited = time.monotonic() - t0
        assert procs[0].returncode == 1, err[-2000:]
        assert "stage 1 stopped answering" in err and "--resume" in err, err[-2000:]
        if how == "hang":
            assert procs[1].poll() is None  # still hung: stage 0 did not wait for it
            procs[1].kill()
        procs[1].communicate(timeout=60)
        run = next(out.iterdir())
        assert torch.load(run / "checkpoint.pt", weights_only=True)["global_step"] == 12
        del waited
        resumed = _run(resume_k, ["pretrain", "--resume", str(run)], tmp_path)
        _assert_same(_weights(resumed / "checkpoint.pt"), _weights(ref / "checkpoint.pt"))
        assert (run / "steps.csv").read_text() == (ref / "steps.csv").read_text()


def test_a_stop_signal_on_stage_0_checkpoints_every_stage_and_resume_finishes(cifar_root, tmp_path, reference):
    """SIGTERM to stage 0 during global step 7 (torchrun forwards it to every rank; stage 0 decides): both
    stages write their part of a checkpoint at global step 7 and exit 130, naming the resume command; --resume
    on 2 stages finishes into the one-process weights."""
    ref = reference("clapp++")
    out = tmp_path / "stopped"
    args = ["pretrain", "clapp++", *SETUP, f"data.root={cifar_root}", "train.parallel=layers", f"out_dir={out}"]
    errs = []
    for p in start_ranks(2, args, tmp_path, fault="0:7:term"):
        _, err = p.communicate(timeout=240)
        assert p.returncode == 130, err[-3000:]
        errs.append(err)
    assert "stopped by SIGTERM" in errs[0] and "global step 7" in errs[0] and "--resume" in errs[0], errs[0][-2000:]
    run = next(out.iterdir())
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["global_step"] == 7 and "position" in ckpt
    resumed = _run(2, ["pretrain", "--resume", str(run)], tmp_path)
    _assert_same(_weights(resumed / "checkpoint.pt"), _weights(ref / "checkpoint.pt"))
    assert (run / "steps.csv").read_text() == (ref / "steps.csv").read_text()


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_stages(cifar_root, tmp_path, reference):
    """Another K: the one-process run's mid-epoch checkpoint (global step 16) continued on 2 stages."""
    ref = reference("clapp++")
    mid = tmp_path / "mid"
    mid.mkdir()
    shutil.copy(ref / "config.yaml", mid / "config.yaml")
    shutil.copy(ref / "checkpoint.prev.pt", mid / "checkpoint.pt")
    _run(2, ["pretrain", "--resume", str(mid), "train.parallel=layers"], tmp_path)
    _assert_same(_weights(mid / "checkpoint.pt"), _weights(ref / "checkpoint.pt"))


@pytest.mark.parametrize(
    ("preset", "why"),
    [
        ("bp-clapp++", "backward locking"),
        ("dfa-clapp", "backward locking"),
        ("pc-clapp", "backward locking"),
        ("clapp++dfb", "top layer's activity"),
        ("clapp++both", "top layer's activity"),
    ],
)
def test_rules_that_cannot_be_split_are_refused_with_the_reason(preset, why):
    cfg = load_config(preset, ["train.parallel=layers"])
    with pytest.raises(ValueError, match=why) as err:
        check_world(cfg, SINGLE)
    assert "data-parallel" in str(err.value) or "one process" in str(err.value)


def test_only_the_first_stage_loads_the_images(cifar_root, monkeypatch):
    """RunSetup.prepare on stage 1 of a layer-parallel run never calls the loader and holds no image; stage 0 loads
    them (and, in a process group, tells the other stages how many: test_two_stages_give_the_one_process_run)."""
    cfg = load_config("clapp++", [*SIXTY_IMAGES, f"data.root={cifar_root}", "train.parallel=layers"])
    calls: list[int] = []

    def load(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    original = train_setup.load_pretrain_data
    monkeypatch.setattr(train_setup, "load_pretrain_data", load)
    later = RunSetup.prepare(cfg, World(rank=1, size=2))
    assert calls == [] and len(later.data.images) == 0
    first = RunSetup.prepare(cfg, World(rank=0, size=2))
    assert calls == [1] and first.n_images == len(first.data.images) == 60


def test_same_reference_local_rules_and_modules_are_accepted():
    for preset in ("clapp++", "clapp++nospatial", "scff", "lpl", "ff", "gim", "clapp2021"):
        check_world(load_config(preset, ["train.parallel=layers"]), SINGLE)


@pytest.mark.parametrize(
    ("preset", "cuts", "extra"),
    [("clapp++", [2, 4], []), ("gim", [2, 4], ["data.name=cifar10", "views.crop_size=40", "objective.steps=2"])],
)
def test_blocks_run_one_after_the_other_give_the_step(preset, cuts, extra):
    """Rule.step_layers over consecutive blocks leaves Rule.step's gradients (the stages' arithmetic)."""
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g), torch.zeros(8).long(), [])
    cfg = load_config(preset, ["model.width=0.0625", "train.device=cpu", "train.batch_size=4", *extra])
    trainer = Trainer(cfg, Path("unused"), data=data)
    rule, encoder = trainer.comp.rule, trainer.comp.encoder
    assert all(c in rule.stage_cuts(len(encoder)) for c in cuts)
    torch.manual_seed(1)
    views = trainer.make_views(torch.arange(4))
    torch.manual_seed(2)
    whole = rule.step(encoder, views)
    grads = {
        n: p.grad.clone() for n, p in [*encoder.named_parameters(), *rule.named_parameters()] if p.grad is not None
    }
    for p in [*encoder.parameters(), *rule.parameters()]:
        p.grad = None
    torch.manual_seed(2)
    h, parts = views.x, {}
    edges = [0, *cuts, len(encoder)]
    for a, b in itertools.pairwise(edges):
        h, metrics = rule.step_layers(encoder, h, views, StepContext(), range(a, b))
        parts.update(metrics)
    assert parts.keys() == whole.keys()
    for n, p in [*encoder.named_parameters(), *rule.named_parameters()]:
        if n in grads:
            assert torch.equal(p.grad, grads[n]), n


def test_balanced_cuts_minimise_the_slowest_stage():
    assert balanced_cuts([1, 1, 1, 1, 1, 1], 2) == [3]
    assert balanced_cuts([5, 1, 1, 1, 1, 1], 2) == [1]
    assert balanced_cuts([1, 2, 3, 4, 5, 6], 3) == [3, 5]
    assert balanced_cuts([1.0, 1.0], 2) == [1]
    with pytest.raises(ValueError):
        balanced_cuts([1.0], 2)
