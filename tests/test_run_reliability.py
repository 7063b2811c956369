"""A run directory has one writer, records stay right across resumes, and every error a user can cause
says what happened, the file, what was kept and how to continue (issue 25, items 1, 3, 5, 6)."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY as CONFTEST_TINY

from localssl import cli
from localssl.checkpoint import load_checkpoint
from localssl.checkpoint import store as store_module
from localssl.config import load_config
from localssl.runlock import RunLock, RunLockedError
from localssl.train import Trainer, pretrain, resume

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*CONFTEST_TINY, "train.lr=1e-3", "probe.epochs=1", "probe.val_size=20"]


def _cfg(root, out, *extra):
    return load_config("clapp++", [*TINY, f"data.root={root}", f"out_dir={out}", *extra])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_naming_the_holder(cifar_root, tmp_path):
    run = pretrain(_cfg(cifar_root, tmp_path))
    with RunLock(run):  # another process holds it (flock is per open file: this stands for it)
        with pytest.raises(RunLockedError, match=rf"process {os.getpid()} on .*two processes must not train"):
            resume(run, ["train.epochs=2"])
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # nothing of the run was touched


def test_the_cli_refuses_a_second_resume_in_one_line(cifar_root, tmp_path, capsys):
    run = pretrain(_cfg(cifar_root, tmp_path))
    with RunLock(run):
        assert cli.main(["pretrain", "--resume", str(run), "train.epochs=2"]) == 1
    assert "is being written by process" in _one_line_error(capsys)


def test_a_stale_lock_of_a_dead_process_is_taken_over(cifar_root, tmp_path):
    run = pretrain(_cfg(cifar_root, tmp_path))
    child = "import sys; from localssl.runlock import RunLock; RunLock(sys.argv[1]).acquire(); import os; os._exit(9)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    assert subprocess.run([sys.executable, "-c", child, str(run)], env=env).returncode == 9
    assert json.loads((run / ".lock").read_text())["pid"] != os.getpid()  # the dead holder's record is there
    resume(run, ["train.epochs=2"])
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


# ---------------------------------------------------------------------------------------- records
def test_a_resume_with_another_log_every_averages_its_first_row_correctly(cifar_root, tmp_path, monkeypatch):
    """Oracle: the uninterrupted run's per-step losses. Stopped after global step 4 (checkpoint_every=4,
    log_every=3: one step in the window), resumed with log_every=2: the row at step 6 is the mean of steps
    4..6 (three steps), not of two."""
    base = ["train.log_every=1", "train.checkpoint_every=4", "train.max_steps_per_epoch=7"]
    full = pretrain(_cfg(cifar_root, tmp_path / "full", *base))
    per_step = {int(r["step"]): r for r in _rows(full / "steps.csv")}

    optimize = Trainer.optimize

    def dies(self, views):
        if self.global_step == 5:
            raise KeyboardInterrupt
        return optimize(self, views)

    monkeypatch.setattr(Trainer, "optimize", dies)
    cfg = _cfg(cifar_root, tmp_path / "cut", "train.log_every=3", *base[1:])
    with pytest.raises(KeyboardInterrupt, match=r"interrupted; the last checkpoint \(epoch 1, step 4, global step 4\)"):
        pretrain(cfg)
    monkeypatch.undo()
    (run,) = (tmp_path / "cut").iterdir()
    resume(run, ["train.log_every=2"])
    rows = {int(r["step"]): r for r in _rows(run / "steps.csv")}
    assert sorted(rows) == [3, 6, 7]
    expect = sum(float(per_step[s]["loss_l1"]) for s in (4, 5, 6)) / 3
    assert float(rows[6]["loss_l1"]) == pytest.approx(expect, rel=1e-4)


def test_a_probe_of_a_mid_epoch_checkpoint_records_where_it_was(cifar_root, tmp_path, monkeypatch):
    from localssl.evaluate.probe import probe

    optimize = Trainer.optimize

    def dies(self, views):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return optimize(self, views)

    monkeypatch.setattr(Trainer, "optimize", dies)
    with pytest.raises(KeyboardInterrupt, match="interrupted"):
        pretrain(_cfg(cifar_root, tmp_path / "runs", "train.checkpoint_every=2", "train.max_steps_per_epoch=5"))
    monkeypatch.undo()
    (run,) = (tmp_path / "runs").iterdir()
    result = probe(run, ["probe.train_subset=60"])
    assert (result["checkpoint_epoch"], result["checkpoint_step"], result["checkpoint_mid_epoch_step"]) == (0, 2, 2)


def test_stale_temporaries_are_removed_and_files_follow_the_umask(cifar_root, tmp_path):
    child = textwrap.dedent(
        """
        import os, sys
        os.umask(0o022)
        from localssl.config import load_config
        from localssl.train import pretrain
        print(pretrain(load_config("clapp++", sys.argv[1:])))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    args = [*TINY, "train.max_steps_per_epoch=2", f"data.root={cifar_root}", f"out_dir={tmp_path}"]
    out = subprocess.run([sys.executable, "-c", child, *args], env=env, capture_output=True, text=True, check=True)
    run = Path(out.stdout.strip().splitlines()[-1])
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in run.iterdir() if f.is_file() and f.name != ".lock"}
    assert modes and set(modes.values()) == {0o644}, modes
    for name in (".checkpoint.pt.x1.tmp", ".steps.csv.x2.tmp", ".checkpoint.prev.pt.x3.tmp"):
        (run / name).write_bytes(b"half")
    resume(run, ["train.epochs=2"])
    assert not list(run.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------- errors
def _one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("localssl:")]
    assert len(err) == 1, err
    return err[0]


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(cifar_root, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    train_epoch = Trainer.train_epoch

    def second_epoch_interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", second_epoch_interrupted)
    code = cli.main(["pretrain", "clapp++", *TINY, "train.epochs=2", "train.max_steps_per_epoch=2",
                     f"data.root={cifar_root}", f"out_dir={tmp_path / 'runs'}"])  # fmt: skip
    assert code == 130
    line = _one_line_error(capsys)
    (run,) = (tmp_path / "runs").iterdir()
    assert "interrupted; the last checkpoint (end of epoch 1, global step 2)" in line
    assert f"localssl pretrain --resume {run}" in line


def test_a_full_disk_during_a_checkpoint_is_one_line_that_says_what_was_kept(cifar_root, tmp_path, monkeypatch, capsys):
    real = store_module.torch.save
    calls = {"n": 0}

    def save(obj, fh):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(obj, fh)

    monkeypatch.setattr(store_module.torch, "save", save)
    code = cli.main(["pretrain", "clapp++", *TINY, "train.epochs=2", "train.max_steps_per_epoch=2",
                     f"data.root={cifar_root}", f"out_dir={tmp_path / 'runs'}"])  # fmt: skip
    assert code == 1
    line = _one_line_error(capsys)
    assert "no space left on the device" in line and "checkpoint.pt is kept" in line and "Fix: free space" in line
    (run,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp"))


def test_an_invalid_out_dir_is_one_line(cifar_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = cli.main(["pretrain", "clapp++", *TINY, f"data.root={cifar_root}", f"out_dir={blocker / 'runs'}"])
    assert code == 1
    line = _one_line_error(capsys)
    assert str(blocker) in line and "Fix:" in line


def test_a_malformed_config_yaml_is_one_line(cifar_root, tmp_path, capsys):
    run = pretrain(_cfg(cifar_root, tmp_path, "train.max_steps_per_epoch=2"))
    (run / "config.yaml").write_text("model: {width: [unclosed\n")
    assert cli.main(["pretrain", "--resume", str(run), "train.epochs=2"]) == 2
    line = _one_line_error(capsys)
    assert str(run / "config.yaml") in line and "not valid YAML" in line


def test_a_malformed_steps_csv_is_one_line(cifar_root, tmp_path, capsys):
    run = pretrain(_cfg(cifar_root, tmp_path, "train.max_steps_per_epoch=2"))
    (run / "steps.csv").write_bytes(b"epoch,step\n1,\xff\xfe2\n")  # not UTF-8: a disk error or another tool
    assert cli.main(["pretrain", "--resume", str(run), "train.epochs=2"]) == 2
    line = _one_line_error(capsys)
    assert str(run / "steps.csv") in line and "Move the file aside" in line


def test_a_probe_that_cannot_write_keeps_its_accuracy(cifar_root, tmp_path, capsys, monkeypatch):
    import errno

    from localssl.evaluate import probe as probe_module

    run = pretrain(_cfg(cifar_root, tmp_path, "train.max_steps_per_epoch=2"))

    def full_disk(obj, path):  # the result file cannot be written (a planted folder is refused up front)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(probe_module, "atomic_write_json", full_disk)
    assert cli.main(["probe", str(run), "probe.train_subset=60"]) == 1
    captured = capsys.readouterr().err
    line = next(x for x in captured.splitlines() if x.startswith("localssl:"))
    assert "could not write" in line and '"test_acc_pct"' in line


def test_probe_refuses_a_checkpoint_from_another_run(cifar_root, tmp_path, capsys):
    a = pretrain(_cfg(cifar_root, tmp_path / "a", "train.max_steps_per_epoch=2"))
    b = pretrain(_cfg(cifar_root, tmp_path / "b", "train.max_steps_per_epoch=2", "model.width=0.125"))
    (a / "checkpoint.pt").write_bytes((b / "checkpoint.pt").read_bytes())
    assert cli.main(["probe", str(a)]) == 2
    line = _one_line_error(capsys)
    assert "model.width" in line and "another run" in line
    assert torch.load(a / "checkpoint.pt", weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------------------------------- dataset identity
def _other_cifar(src: Path, dst: Path, flip_label: bool) -> Path:
    """A copy of the CIFAR-10 test data with one training image's pixels (or label) changed."""
    import pickle
    import shutil

    shutil.copytree(src, dst)
    batch = dst / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")  # the test's own fixture, written by conftest
    if flip_label:
        d[b"labels"][0] = (d[b"labels"][0] + 1) % 10
    else:
        d[b"data"][0, :10] = 255 - d[b"data"][0, :10]
    with open(batch, "wb") as fh:
        pickle.dump(d, fh, protocol=4)
    return dst


def test_resume_and_probe_refuse_other_data_but_accept_a_copy(cifar_root, tmp_path, capsys):
    import shutil

    run = pretrain(_cfg(cifar_root, tmp_path / "runs", "train.max_steps_per_epoch=2"))
    assert json.loads((run / "dataset.json").read_text())["name"] == "cifar10"
    other = _other_cifar(cifar_root, tmp_path / "other", flip_label=False)
    assert cli.main(["pretrain", "--resume", str(run), "train.epochs=2", f"data.root={other}"]) == 2
    line = _one_line_error(capsys)
    assert "is not the data recorded for run" in line
    assert cli.main(["probe", str(run), f"data.root={other}"]) == 2
    assert "split 'train'" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1  # nothing was trained on the other data
    copy = tmp_path / "copy"
    shutil.copytree(cifar_root, copy)
    resume(run, ["train.epochs=2", f"data.root={copy}"])
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2
