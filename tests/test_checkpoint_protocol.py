"""The checkpoint protocol's invariant (localssl/checkpoint/store.py): from the first save on, at every
instant at least one complete, verified checkpoint is on disk where every reader finds it.

Oracle: the state each save wrote (its ``global_step``); after every injected fault, ``load_latest``
must return one of the states written, complete, and never one older than the last committed save
minus one. Faults: a kill at every step of the save (a real ``os._exit`` in a child process), a
file-size limit (``ulimit -f``: EFBIG), a full disk (simulated ENOSPC mid-write), and each of them
starting from a corrupt ``checkpoint.pt`` beside a good predecessor (the case that lost runs before)."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from localssl.checkpoint import (
    CheckpointWriteError,
    is_verified,
    load_latest,
    save_checkpoint,
)
from localssl.checkpoint import store as store_module

POINTS = ("written", "verified", "rotated", "committed")


def _state(step: int, size: int = 1000) -> dict:
    return {"global_step": step, "w": torch.full((size,), float(step))}


def _check_latest(run: Path, allowed: set[int]) -> int:
    ckpt, path = load_latest(run)
    step = int(ckpt["global_step"])
    assert step in allowed, (step, allowed, path)
    assert torch.equal(ckpt["w"], torch.full_like(ckpt["w"], float(step)))  # complete, not a mix
    assert is_verified(path)
    return step


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


_CHILD = textwrap.dedent(
    """
    import os, sys, torch
    from localssl.checkpoint import store
    run, point, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def fault(name):
        if name == point:
            os._exit(9)
    store._fault_point = fault
    store.save_checkpoint({"global_step": step, "w": torch.full((1000,), float(step))}, run)
    os._exit(0)
    """
)


def _save_in_child_killed_at(run: Path, point: str, step: int) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(run), point, str(step)], env=env, timeout=120)
    return proc.returncode


@pytest.mark.parametrize("corrupt_current", [False, True], ids=["good", "corrupt-current"])
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_every_step_of_a_save_leaves_a_verified_checkpoint(tmp_path, point, corrupt_current):
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    if corrupt_current:  # resume fell back to checkpoint.prev.pt (step 1); its first save must not lose it
        _corrupt(tmp_path / "checkpoint.pt")
    assert _save_in_child_killed_at(tmp_path, point, 3) == 9
    allowed = {1, 3} if corrupt_current else {2, 3}
    if point == "committed":
        allowed = {3}
    _check_latest(tmp_path, allowed)
    # and the next save (the resumed run's) keeps the invariant and commits
    save_checkpoint(_state(4), tmp_path)
    assert _check_latest(tmp_path, {4}) == 4
    prev = torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)["global_step"]
    assert prev in allowed | {3} and prev != 4


def test_the_corrupt_file_is_never_rotated_over_the_good_predecessor(tmp_path):
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    _corrupt(tmp_path / "checkpoint.pt")
    save_checkpoint(_state(3), tmp_path)
    assert torch.load(tmp_path / "checkpoint.prev.pt", weights_only=True)["global_step"] == 1
    assert _check_latest(tmp_path, {3}) == 3


def _full_disk_after(monkeypatch, n_bytes: int) -> None:
    """The checkpoint's write puts ``n_bytes`` on disk and then the disk is full (ENOSPC)."""
    real = store_module.os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(bytes(data)[:n_bytes])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(store_module.os, "fdopen", lambda fd, mode: FullDisk(real(fd, mode)))


@pytest.mark.parametrize("corrupt_current", [False, True], ids=["good", "corrupt-current"])
def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, monkeypatch, corrupt_current):
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    if corrupt_current:
        _corrupt(tmp_path / "checkpoint.pt")
    _full_disk_after(monkeypatch, 500)
    with pytest.raises(CheckpointWriteError, match=r"no space left on the device.*is kept") as info:
        save_checkpoint(_state(3), tmp_path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    _check_latest(tmp_path, {1} if corrupt_current else {2})
    assert not list(tmp_path.glob(".*.tmp")), "a failed save left its temporary file"


_FSIZE_CHILD = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from localssl.checkpoint import store, CheckpointWriteError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as under `ulimit -f`
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    try:
        store.save_checkpoint({"global_step": 3, "w": torch.full((100000,), 3.0)}, sys.argv[1])
    except CheckpointWriteError as exc:
        print(exc)
        sys.exit(3)
    """
)


def test_a_file_size_limit_keeps_the_last_checkpoint(tmp_path):
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(tmp_path), "20000"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "file-size limit" in proc.stdout and "is kept" in proc.stdout
    _check_latest(tmp_path, {2})
    assert not list(tmp_path.glob(".*.tmp"))


def test_readers_find_the_predecessor_while_checkpoint_pt_is_missing(tmp_path, capsys):
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    os.unlink(tmp_path / "checkpoint.pt")
    ckpt, path = load_latest(tmp_path)
    assert (ckpt["global_step"], path.name) == (1, "checkpoint.prev.pt")
    assert "using the earlier checkpoint" in capsys.readouterr().err


def test_checkpoint_pt_exists_at_every_step_of_a_save(tmp_path, monkeypatch):
    """Rotation links the old file before the new one is renamed in: no instant without checkpoint.pt."""
    save_checkpoint(_state(1), tmp_path)
    seen = []
    monkeypatch.setattr(store_module, "_fault_point", lambda name: seen.append((tmp_path / "checkpoint.pt").exists()))
    save_checkpoint(_state(2), tmp_path)
    assert seen == [True] * len(POINTS)


_LOOP_CHILD = textwrap.dedent(
    """
    import sys, torch
    from localssl.checkpoint import store
    run, step = sys.argv[1], int(sys.argv[2])
    while True:
        step += 1
        store.save_checkpoint({"global_step": step, "w": torch.full((200000 + 997 * (step % 50),), float(step))}, run)
        print(step, flush=True)
    """
)


@pytest.mark.slow
def test_many_random_kills_during_saves_never_lose_the_run(tmp_path):
    """200 SIGKILLs at random moments of a process that saves in a loop; a third of them start from a
    corrupt checkpoint.pt (when a predecessor exists). After each: a complete checkpoint no older than the
    last committed step - 1."""
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    save_checkpoint(_state(0, 200000), tmp_path)
    step = 0
    for i in range(200):
        if i % 3 == 2 and (tmp_path / "checkpoint.prev.pt").exists() and (tmp_path / "checkpoint.pt").exists():
            _corrupt(tmp_path / "checkpoint.pt")  # damage the newest file: the predecessor must carry the run
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP_CHILD, str(tmp_path), str(step)], env=env, stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0 + rng.random() * 1.5)  # the import takes ~1 s: kills land in writes, renames, verifies
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        committed = [int(s) for s in out.split()]
        ckpt, _ = load_latest(tmp_path)
        got = int(ckpt["global_step"])
        last = committed[-1] if committed else step
        assert got >= last - 1 or (not committed and got >= step - 1), (i, got, last)
        assert torch.equal(ckpt["w"], torch.full_like(ckpt["w"], float(got)))
        step = max(got, last)
