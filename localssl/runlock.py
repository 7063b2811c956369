"""One writer per run directory: an exclusive lock held for as long as a process trains the run.

``run_dir/.lock`` is locked with ``fcntl.flock`` (the kernel releases it when its holder exits, however
it exits) and holds the holder's pid, host, start time and command line, so a refusal can name it. A
lock file left by a dead process is therefore not locked, and the next writer takes it over. Under
``torchrun`` rank 0 takes the lock for the whole group before any rank writes. A ``.lock`` that is a
symbolic link or a special file (someone else's) is refused by name and left as it is
(:mod:`localssl.safe_files`): locking never empties a file outside the run."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from localssl.safe_files import open_fd, read_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another process is writing this run directory."""


class RunLock:
    """``with RunLock(run_dir):`` — refuse to start if another live process holds ``run_dir``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_fd(self.path, os.O_RDWR | os.O_CREAT)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(self.path)
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is being written by {holder}; two processes must not train one run. "
                    "Wait for it to finish (or stop it), then run the command again."
                ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        info["command"] = " ".join(sys.argv)[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _describe(path: Path) -> str:
    """The holder named by the lock file ("process 123 on host, since ..., running ...")."""
    try:
        info = json.loads(read_text(path, 1 << 16) or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')}: {info.get('command', '?')})"
