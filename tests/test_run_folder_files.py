"""A run folder may hold files someone else put there (issue 36, item 1): for every file a command opens in a run
folder, a symbolic link (to a file outside the run) or a special file (a FIFO) in its place is refused by name in
one line, before anything is written, without hanging, and the link's target is left as it was.

Oracle: the command's exit status and its one line; the target's bytes and the run's checkpoint bytes, before and
after. A SIGALRM watchdog turns a hang (a blocking open of a FIFO) into a failure."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import TINY

from localssl import cli
from localssl.config import load_config
from localssl.safe_files import UnsafeFileError, append_text, check_file, check_folder, read_bytes
from localssl.train import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

# the files each command opens in a run folder
OPENS = {
    "resume": (".lock", "config.yaml", "dataset.json", "checkpoint.pt", "steps.csv", "metrics.csv"),
    "probe": ("config.yaml", "dataset.json", "checkpoint.pt", "probe.json"),
    "plot": ("config.yaml", "steps.csv"),
}
CASES = [(command, name, kind) for command, names in OPENS.items() for name in names for kind in ("link", "fifo")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from conftest import write_cifar_pickles

    base = tmp_path_factory.mktemp("planted")
    root = write_cifar_pickles(base / "data")
    overrides = [*TINY, "train.max_steps_per_epoch=2", "train.log_every=1", f"data.root={root}"]
    overrides += ["probe.epochs=1", "probe.val_size=20", "probe.train_subset=40"]
    run = pretrain(load_config("clapp++", overrides), base / "run")
    (run / ".lock").write_text("")  # what a finished run leaves
    (run / "probe.json").write_text("{}\n")
    return run


class _Hang(Exception):
    pass


def _main_within(argv: list[str], seconds: int = 120) -> int:
    def hang(signum, frame):
        raise _Hang(f"localssl {' '.join(argv)} did not return within {seconds} s")

    before = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        return cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize(("command", "name", "kind"), CASES)
def test_a_planted_link_or_special_file_is_refused_by_name(trained, tmp_path, capsys, command, name, kind):
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    path = run / name
    outside = tmp_path / f"outside-{name.lstrip('.')}"
    outside.write_bytes(path.read_bytes())  # a file of someone else's, with the contents the run expects
    path.unlink()
    if kind == "link":
        path.symlink_to(outside)
    else:
        os.mkfifo(path)
    checkpoint = (run / "checkpoint.pt").read_bytes() if name != "checkpoint.pt" else None
    argv = {
        "resume": ["pretrain", "--resume", str(run), "train.epochs=2"],
        "probe": ["probe", str(run)],
        "plot": ["plot", str(run), "--out", str(tmp_path / "curves.png")],
    }[command]
    capsys.readouterr()
    code = _main_within(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and "not a regular file" in err[0] and "Fix:" in err[0], err[0]
    assert ("symbolic link" in err[0]) == (kind == "link") and ("FIFO" in err[0]) == (kind == "fifo"), err[0]
    assert outside.read_bytes() == (trained / name).read_bytes()  # the link's target is untouched
    if checkpoint is not None:
        assert (run / "checkpoint.pt").read_bytes() == checkpoint  # nothing was trained
    assert not (tmp_path / "curves.png").exists()
    assert not list(run.glob(".*.tmp"))


def test_the_safe_open_refuses_every_kind_of_file_but_a_regular_one(tmp_path):
    regular = tmp_path / "regular"
    regular.write_text("a")
    (tmp_path / "link").symlink_to(regular)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "device").symlink_to("/dev/zero")  # a read would never end
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    assert check_file(regular) and not check_file(tmp_path / "absent")
    for name in ("link", "dangling", "device", "fifo", "folder"):
        with pytest.raises(UnsafeFileError, match="not a regular file"):
            check_file(tmp_path / name)
        with pytest.raises(UnsafeFileError, match="not a regular file"):
            read_bytes(tmp_path / name)
        if name != "folder":
            with pytest.raises(UnsafeFileError, match="not a regular file"):
                append_text(tmp_path / name, "row\n")
    assert not (tmp_path / "nowhere").exists()  # appending did not create the dangling link's target
    assert check_folder(tmp_path / "folder") and not check_folder(tmp_path / "absent")
    (tmp_path / "folder-link").symlink_to(tmp_path / "folder")  # e.g. RUN/tensorboard as a link elsewhere
    for name in ("folder-link", "regular", "fifo"):
        with pytest.raises(UnsafeFileError):
            check_folder(tmp_path / name)
    assert regular.read_text() == "a"
    append_text(regular, "b")
    assert regular.read_text() == "ab"
    with pytest.raises(UnsafeFileError, match="larger than 1 MiB"):
        regular.write_bytes(b"x" * (2 << 20))
        read_bytes(regular, limit=1 << 20)
