"""Open a run folder's files only as the regular files localssl writes: never through a symbolic link, never a
device, a pipe or a socket, and never read past a size limit.

A run folder may hold files someone else put there: ``.lock`` as a link to a file elsewhere (which a lock would
empty), ``steps.csv`` as a link (the rows would be appended to its target), ``config.yaml`` as a FIFO (a read
blocks for ever) or a link to ``/dev/zero`` (a read never ends). Every file a command opens in a run folder
(the lock, the CSV logs, ``config.yaml``, ``dataset.json``, the checkpoints, ``probe.json``, the feature and
decode caches) goes through this module:

- :func:`open_fd` opens with ``O_NOFOLLOW`` (a link is refused by the kernel, no race between a check and the
  open) and ``O_NONBLOCK`` (opening a FIFO does not wait for a writer), then checks with ``fstat`` that what it
  opened is a regular file, and refuses anything else with :class:`UnsafeFileError` naming the file, what it is
  and the fix;
- :func:`read_bytes` / :func:`read_text` read at most ``limit`` bytes (a larger file is refused by name);
- :func:`append_text` appends to a regular file (created if absent) and nothing else;
- :func:`check_file` refuses a link or special file at a path that a command will replace (an atomic write
  renames over the path, so it never writes through a link, but a planted file there is still refused, before
  anything is written).

Files replaced atomically (checkpoints, ``summary.json``, ``probe.json``) are written to a new temporary file
created with ``O_EXCL`` (``tempfile.mkstemp``) and renamed over the path: the rename replaces a link, never its
target."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

MiB = 1 << 20
TEXT_LIMIT = 64 * MiB  # config.yaml, dataset.json, probe.json, the lock: a few kB in practice; CSV logs: a few MB


class UnsafeFileError(ValueError):
    """A path a command would open is a symbolic link, a special file (device, FIFO, socket), a folder, or a
    file larger than the command reads."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _refuse(path: Path, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path} is {what}, not a regular file that localssl wrote; refusing to open it (a command never reads or "
        "writes through a link or special file in a run folder). Fix: move it aside (or replace it by the file "
        "itself), then run the command again"
    )


def check_file(path: Path) -> bool:
    """Whether ``path`` exists as a regular file (``False``: absent); a symbolic link or special file there is
    refused with :class:`UnsafeFileError`. Does not follow a link."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise _refuse(path, f"a symbolic link (to {target})")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, _kind(st.st_mode))
    return True


def check_folder(path: Path) -> bool:
    """Whether ``path`` exists as a folder (``False``: absent); a symbolic link or anything else there is refused
    with :class:`UnsafeFileError` (a run's own subfolders, e.g. ``tensorboard/``, are never written through a link)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    if stat.S_ISLNK(st.st_mode):
        check_file(path)  # names the link and its target
    raise UnsafeFileError(
        f"{path} is {_kind(st.st_mode)}, not a folder that localssl made; refusing to write into it. Fix: move it "
        "aside, then run the command again"
    )


def open_fd(path: Path, flags: int = os.O_RDONLY, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_NONBLOCK)`` refusing anything but a regular file (the check is made
    on the opened descriptor: nothing can be swapped in between); the descriptor is blocking again."""
    path = Path(path)
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | extra, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (exc.errno == errno.ENXIO):
            check_file(path)  # names what it is (a link; ENXIO: a socket or a FIFO opened for writing)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, _kind(st.st_mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_read(path: Path) -> BinaryIO:
    """A regular file opened for reading in binary (see :func:`open_fd`)."""
    return os.fdopen(open_fd(path), "rb")


def read_bytes(path: Path, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of the regular file ``path``, refused (:class:`UnsafeFileError`) if larger than ``limit``."""
    with open_read(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(
            f"{path} is larger than {limit // MiB} MiB, far more than localssl writes there; refusing to read it. "
            "Fix: move it aside, or restore the file the run wrote"
        )
    return data


def read_text(path: Path, limit: int = TEXT_LIMIT) -> str:
    """:func:`read_bytes` decoded as UTF-8 (a file that is not UTF-8 raises ``UnicodeDecodeError``)."""
    return read_bytes(path, limit).decode("utf-8")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to the regular file ``path`` (created with the umask's permissions if absent)."""
    fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", newline="", encoding="utf-8") as fh:
        fh.write(text)


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` with the process's umask applied: the permissions ``open()`` would give a new file
    (``tempfile.mkstemp`` creates owner-only files; every file localssl writes follows the umask instead)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def temporary_beside(path: Path) -> tuple[int, Path]:
    """A new temporary file in ``path``'s folder, ``.NAME.PID.XXXX.tmp`` (created with ``O_EXCL``, so never a
    file or link that was there), for a write that is then renamed over ``path``; the process id in its name
    lets :func:`remove_dead_temporaries` tell one left by a killed process from one being written."""
    import tempfile

    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    return fd, Path(name)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder: Path, pattern: str) -> list[Path]:
    """Delete the temporaries of :func:`temporary_beside` in ``folder`` matching ``pattern`` (a glob such as
    ``.features-*.tmp``) whose writer (the process id in the name) is no longer running on this machine: what a
    kill or a full disk left behind. A temporary of a live process is kept; returns the paths removed."""
    removed = []
    for tmp in Path(folder).glob(pattern):
        parts = tmp.name.rsplit(".", 3)  # .NAME . PID . XXXX . tmp
        if len(parts) != 4 or not parts[1].isdigit() or process_alive(int(parts[1])):
            continue
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed
