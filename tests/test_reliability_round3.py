"""The small failures of the third fault trial (issue 36, item 5), one test each: a diverging loss warns from the
first rows; a refused setting leaves no run folder; a count setting must be a whole number; a failed save names a
complete checkpoint as the one kept; checkpoints carry a format checked by every reader; ``plot`` and Ctrl-C during
``probe`` say what happened in one line; temporaries of the decode and feature caches do not outlive a full disk or
a kill; decode-cache files follow the umask."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY

from localssl import cli
from localssl.checkpoint import CHECKPOINT_FORMAT, CheckpointWriteError, load_checkpoint
from localssl.checkpoint import store as store_module
from localssl.config import load_config
from localssl.data import ImageData
from localssl.data import base as data_base
from localssl.train import pretrain
from localssl.train.metrics import DivergenceWatch

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(root: Path, out: Path, *extra: str):
    return load_config("clapp++", [*TINY, "train.max_steps_per_epoch=2", f"data.root={root}", f"out_dir={out}", *extra])


def _one_line(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.strip().splitlines() if x.startswith("localssl:")]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- divergence
def test_a_loss_that_blows_up_in_the_first_rows_warns(capsys):
    watch = DivergenceWatch()
    for step, loss in enumerate([4.1, 3.9, 2.0e7, 3.0e30], start=1):  # 30 orders of magnitude in 4 rows
        watch.observe({"epoch": 1, "step": step, "loss_l1": loss})
    err = capsys.readouterr().err
    assert watch.warned and err.count("the run is diverging") == 1 and "lower train.lr" in err, err
    calm = DivergenceWatch()
    for step, loss in enumerate([9.0, 5.0, 3.0, 2.5, 2.4, 2.4], start=1):  # a falling loss never warns
        calm.observe({"epoch": 1, "step": step, "loss_l1": loss})
    assert not calm.warned


# ------------------------------------------------------------------------------------------- refused settings
def test_a_batch_larger_than_the_data_leaves_no_run_folder(cifar_root, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(
        ["pretrain", "clapp++", *TINY, "train.batch_size=1000", f"data.root={cifar_root}", f"out_dir={out}"]
    )
    assert code == 2
    line = _one_line(capsys)
    assert "fewer than one global batch" in line and "lower train.batch_size" in line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("setting", ["train.epochs=1.5", "train.batch_size=7.5", "train.max_steps_per_epoch=2.5"])
def test_a_fraction_of_a_count_is_refused_before_anything_is_written(cifar_root, tmp_path, capsys, setting):
    out = tmp_path / "runs"
    assert cli.main(["pretrain", "clapp++", *TINY, setting, f"data.root={cifar_root}", f"out_dir={out}"]) == 2
    line = _one_line(capsys)
    assert f"{setting} is invalid: it must be a whole number" in line
    assert not out.exists()


# ------------------------------------------------------------------------------------------- checkpoints
def test_a_failed_save_names_the_complete_checkpoint_it_kept(tmp_path, monkeypatch):
    store_module.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, tmp_path)
    store_module.save_checkpoint({"global_step": 2, "w": torch.ones(3)}, tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")  # corrupted after the save

    def full_disk(state, run_dir, late=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_write_temporary", full_disk)
    with pytest.raises(CheckpointWriteError) as err:
        store_module.save_checkpoint({"global_step": 3, "w": torch.ones(3)}, tmp_path)
    assert f"the last checkpoint {tmp_path / 'checkpoint.prev.pt'} is kept" in str(err.value), err.value


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c.pop("optimizer"), "the field 'optimizer' is missing"),
        (lambda c: c.update(epoch="one"), "the field 'epoch' is 'one'"),
        (lambda c: c.update(global_step=-5), "the field 'global_step' is -5"),
        (lambda c: c.update(format=CHECKPOINT_FORMAT + 1), f"checkpoint format {CHECKPOINT_FORMAT + 1}, newer"),
        (lambda c: c.update(format="1"), "has format '1'"),
    ],
)
def test_a_checkpoint_of_another_format_or_with_a_wrong_field_is_refused(cifar_root, tmp_path, capsys, edit, says):
    run = pretrain(_cfg(cifar_root, tmp_path))
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT
    edit(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")
    for argv in (["pretrain", "--resume", str(run), "train.epochs=2"], ["probe", str(run)]):
        assert cli.main(argv) == 2, argv
        line = _one_line(capsys)
        assert str(run / "checkpoint.pt") in line and says in line, line


# ------------------------------------------------------------------------------------------- one-line errors
@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("config.yaml", "name: [unclosed\n", "is not valid YAML"),
        ("config.yaml", "- a list\n", "does not hold a run's settings"),
        ("steps.csv", "epoch,loss_l1\n1,2.0\n", "no step column"),
        ("steps.csv", "epoch,step,loss_l1\n1,2,not-a-number\n", "not a number"),
    ],
)
def test_plot_of_a_malformed_file_is_one_line(cifar_root, tmp_path, capsys, name, text, says):
    run = pretrain(_cfg(cifar_root, tmp_path))
    (run / name).write_text(text)
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 2
    line = _one_line(capsys)
    assert str(run / name) in line and says in line, line


def test_ctrl_c_during_probe_says_what_happened(cifar_root, tmp_path, capsys, monkeypatch):
    from localssl.evaluate import probe as probe_module

    run = pretrain(_cfg(cifar_root, tmp_path))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_module, "train_linear_probe", interrupted)
    assert cli.main(["probe", str(run), "probe.train_subset=40"]) == 130
    line = _one_line(capsys)
    assert line != "localssl:" and "interrupted (Ctrl-C)" in line, line


# ------------------------------------------------------------------------------------------- cache temporaries
def _decode() -> ImageData:
    return ImageData(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"])


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "images"
    source.mkdir()
    (source / "x.png").write_bytes(b"x")
    return source


def test_a_full_disk_leaves_no_decode_cache_temporary(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()

    def full_disk(fh, **arrays):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    assert data_base.cached_decode(_source(tmp_path), "train", _decode).labels.tolist() == [0, 1]
    assert list((tmp_path / "cache").iterdir()) == []


# a process killed (SIGKILL) in the middle of writing a cache temporary, as `cached_decode` and the probe's feature
# cache make them
KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from localssl.safe_files import temporary_beside
fd, tmp = temporary_beside(Path(sys.argv[1]))
os.write(fd, b"half a cache")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_while_writing(path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], env=env, timeout=120)
    assert proc.returncode == -9


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_one(cifar_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOCALSSL_CACHE", str(cache))
    cache.mkdir()
    _killed_while_writing(cache / "images-train-0123.npz")
    assert len(list(cache.glob(".*.tmp"))) == 1
    data_base.cached_decode(_source(tmp_path), "train", _decode)
    assert not list(cache.glob(".*.tmp")) and len(list(cache.glob("*.npz"))) == 1
    # the feature cache of a probe, in the run folder
    run = pretrain(_cfg(cifar_root, tmp_path / "runs"))
    _killed_while_writing(run / "features-0123.pt")
    assert len(list(run.glob(".features-*.tmp"))) == 1
    assert cli.main(["probe", str(run), "probe.train_subset=40", "probe.epochs=1", "probe.cache_features=true"]) == 0
    assert not list(run.glob(".*.tmp")) and len(list(run.glob("features-*.pt"))) == 1


def test_decode_cache_files_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALSSL_CACHE", str(tmp_path / "cache"))
    before = os.umask(0o022)
    try:
        data_base.cached_decode(_source(tmp_path), "train", _decode)
    finally:
        os.umask(before)
    (cached,) = (tmp_path / "cache").glob("*.npz")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644
