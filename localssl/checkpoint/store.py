"""Checkpoint files: the save protocol, safe loading, and the one place readers find a run's checkpoint.

**Invariant.** From a run's first save on, at every instant at least one complete, *verified* checkpoint
is on disk under a name every reader looks at (``checkpoint.pt``, else ``checkpoint.prev.pt``):

1. the new state is written to a temporary file beside the old ones (``.checkpoint.pt.*.tmp``) and fsynced;
2. it is verified: read back with ``weights_only=True`` and its ``global_step`` compared with the state's (a file
   written record by record, :mod:`.streamed`, is read back mapped: its pickle read, every record located);
3. only if ``checkpoint.pt`` is itself verified (this process wrote or loaded that very file, or it reads
   back now) is it copied (fsynced, then renamed) over ``checkpoint.prev.pt``; an unverified
   ``checkpoint.pt`` (corrupt, cut short) is never rotated over a good predecessor. A copy, not a hard
   link: the two names never share one file, so damage to one cannot reach the other;
4. the verified new file is renamed over ``checkpoint.pt`` and the folder is fsynced.

A kill, a full disk or a file-size limit at any point leaves the previous verified checkpoint in place;
a failed save removes its temporary files and raises :class:`CheckpointWriteError` naming the kept one.
Several processes that each hold part of the state (layer-parallel stages) commit together by handing
their parts to one process, which saves them as one file: one commit point (step 4), one format that
every reader, and a resume with another number of processes, understands.

Nothing read from disk may execute code, so every load goes through ``torch.load(..., weights_only=True)``;
a file that needs anything else (a pickled object with ``__reduce__``, a class) is refused with an error
naming it."""

from __future__ import annotations

import errno
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from localssl.checkpoint.streamed import Late, write_streamed
from localssl.safe_files import UnsafeFileError, open_read, temporary_beside
from localssl.utils import fsync_dir, umask_mode

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"

_verified: dict[str, tuple[int, int, int]] = {}  # path -> (inode, size, mtime_ns) of a file read back whole


class UnsafeCheckpointError(RuntimeError):
    """The file holds objects beyond tensors and plain containers: loading it could run code."""


class CorruptCheckpointError(RuntimeError):
    """The file is truncated, empty or not a torch checkpoint at all."""


class CheckpointFormatError(ValueError):
    """The file is a readable torch file but not a checkpoint this version of localssl wrote (a newer format,
    or a field missing or of the wrong kind: edited by hand, or another program's file)."""


CHECKPOINT_FORMAT = 1  # the "format" field of every checkpoint; bumped when the layout of the state changes
_FIELDS: dict[str, tuple[type, ...]] = {"encoder": (dict,), "rule": (dict,), "optimizer": (dict,), "epoch": (int,)}
_FIELDS["global_step"] = (int,)


def check_format(ckpt: Any, path: Path) -> None:
    """Refuse (:class:`CheckpointFormatError`, naming the file, the field and the fix) a loaded checkpoint that is
    not one of this version's: a ``format`` newer than :data:`CHECKPOINT_FORMAT`, or a field a resume or a reader
    needs that is missing or of the wrong kind. A checkpoint written before the ``format`` field existed (format
    0) is read when its fields are right."""
    fix = "Restore the file the run wrote (or delete it: the readers then use checkpoint.prev.pt)"
    if not isinstance(ckpt, dict):
        raise CheckpointFormatError(f"{path} holds a {type(ckpt).__name__}, not a localssl checkpoint. {fix}")
    version = ckpt.get("format", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointFormatError(f"{path} has format {version!r}, not a checkpoint format number. {fix}")
    if version > CHECKPOINT_FORMAT:
        raise CheckpointFormatError(
            f"{path} has checkpoint format {version}, newer than this localssl reads ({CHECKPOINT_FORMAT}): "
            "upgrade localssl to read it"
        )
    for key, kinds in _FIELDS.items():
        value = ckpt.get(key)
        if key not in ckpt or isinstance(value, bool) or not isinstance(value, kinds):
            what = "is missing" if key not in ckpt else f"is {value!r} ({type(value).__name__})"
            raise CheckpointFormatError(f"{path}: the field '{key}' {what}, not a {kinds[0].__name__}. {fix}")
        if isinstance(value, int) and value < 0:
            raise CheckpointFormatError(f"{path}: the field '{key}' is {value}, a negative count. {fix}")
    position = ckpt.get("position")
    if position is not None:
        step = position.get("step") if isinstance(position, dict) else None
        if isinstance(step, bool) or not isinstance(step, int) or step <= 0 or position.get("epoch") != ckpt["epoch"]:
            raise CheckpointFormatError(
                f"{path}: the field 'position' (where a mid-epoch checkpoint stopped) is not one localssl wrote. {fix}"
            )


class CheckpointWriteError(OSError):
    """A save failed (full disk, file-size limit, read-only folder); the previous checkpoint is kept."""


def _unsafe(exc: BaseException) -> bool:
    return "Weights only load failed" in str(exc) and ("global" in str(exc) or "GLOBAL" in str(exc))


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _mark_verified(path: Path) -> None:
    ident = _identity(path)
    if ident is not None:
        _verified[str(path.resolve())] = ident


def is_verified(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint: read back whole by this process (and unchanged since),
    or readable now."""
    path = Path(path)
    ident = _identity(path)
    if ident is None:
        return False
    if _verified.get(str(path.resolve())) == ident:
        return True
    try:
        load_checkpoint(path)
    except (CorruptCheckpointError, UnsafeCheckpointError, UnsafeFileError):
        return False
    return True


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the cause. ``mmap``: the
    tensors are mapped from the file, read only where used (Linux; elsewhere read whole): a layer-parallel
    stage reads its own slice of the checkpoint."""
    path = Path(path)
    try:
        with open_read(path) as fh, torch.serialization.safe_globals([TorchVersion]):  # older runs: torch.__version__
            mapped = Path(f"/proc/self/fd/{fh.fileno()}")  # the file opened (and checked) here, by name
            source: Any = str(mapped) if mmap and mapped.exists() else fh
            state = torch.load(source, map_location=map_location, weights_only=True, mmap=mmap and source != fh)
        if mmap and source != fh:
            return state  # the tensors are not read: the file is not verified
    except (FileNotFoundError, PermissionError, IsADirectoryError, UnsafeFileError):
        raise  # UnsafeFileError: a link or special file (a FIFO would block, a device never ends) is refused
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        # (torch's zip reader raises OSError EINVAL on some truncations)
        if _unsafe(exc):
            raise UnsafeCheckpointError(
                f"{path} contains pickled objects other than tensors and plain containers; refusing to load it "
                "(weights_only=True: loading it could run code). Only load checkpoints written by localssl, "
                "and delete or replace this file."
            ) from exc
        raise CorruptCheckpointError(
            f"{path} is not a readable checkpoint (truncated, empty or garbage: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    _mark_verified(path)
    return state


def _fault_point(name: str) -> None:
    """Called between the steps of :func:`save_checkpoint` (``written``, ``verified``, ``rotated``,
    ``committed``); fault-injection tests replace it to kill the process there."""


def _write_temporary(state: dict[str, Any], run_dir: Path, late: Late | None = None) -> Path:
    """The state serialised in memory first, then written and fsynced: a refusal of the disk (full, size
    limit) is then an ``OSError`` of the write, not an error inside torch's zip writer. With ``late``
    (:func:`~localssl.checkpoint.streamed.write_streamed`), written straight to the file, record by record."""
    buf = io.BytesIO()
    if late is None:
        torch.save(state, buf)
    fd, tmp = temporary_beside(run_dir / CHECKPOINT)
    try:
        with os.fdopen(fd, "wb") as fh:
            if late is None:
                fh.write(buf.getbuffer())
            else:
                write_streamed(state, fh.fileno(), tmp, late)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _copy_over(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a complete copy of ``src``, atomically (copied to a temporary, fsynced, renamed)."""
    fd, tmp = temporary_beside(dst)
    try:
        with open_read(src) as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(1 << 22):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], run_dir: Path, late: Late | None = None) -> Path:
    """Save ``state`` as the run's ``checkpoint.pt`` by the protocol of this module's docstring; returns its
    path. Raises :class:`CheckpointWriteError` (the previous checkpoint kept) if the disk refuses it. ``late``:
    tensors of ``state`` that are placeholders, each written as its function's tensor, produced when due
    (:mod:`~localssl.checkpoint.streamed`; the file is read back mapped, not whole): no copy of the state
    in memory, which a layer-parallel rank 0 writing every stage's state needs."""
    run_dir = Path(run_dir)
    current, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    tmp: Path | None = None
    try:
        tmp = _write_temporary(state, run_dir, late)
        _fault_point("written")
        back = load_checkpoint(tmp, mmap=late is not None)
        if back.get("global_step") != state.get("global_step"):
            raise CorruptCheckpointError(f"{tmp} did not read back as the state just written")
        _fault_point("verified")
        if is_verified(current):
            _copy_over(current, previous)
            _mark_verified(previous)
        _fault_point("rotated")
        os.replace(tmp, current)
        tmp = None
        _mark_verified(current)
        fsync_dir(run_dir)
        _fault_point("committed")
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        kept = next((p for p in (current, previous) if is_verified(p)), None)  # a complete one, never a corrupt one
        why = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file-size limit was reached"}
        raise CheckpointWriteError(
            exc.errno,
            f"could not write the checkpoint in {run_dir} ({why.get(exc.errno or 0, exc.strerror or exc)}); "
            + (f"the last checkpoint {kept} is kept" if kept else "no checkpoint was written yet"),
        ) from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return current


RUN_FILES = (CHECKPOINT, PREVIOUS, "config.yaml", "dataset.json", "steps.csv", "metrics.csv", "summary.json")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporaries (``.NAME.*.tmp``, see :func:`localssl.utils.atomic_write_bytes`) that a run
    killed in the middle of writing one of its training files (:data:`RUN_FILES`) leaves behind; returns the
    paths removed. Called by the process holding the run lock (:mod:`localssl.runlock`); a probe's files
    (``probe.json``, feature caches) are left alone: a probe may be writing them while the run trains."""
    removed = []
    for name in RUN_FILES:
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def latest_path(run_dir: Path) -> Path | None:
    """The newest checkpoint file present (``checkpoint.pt``, else ``checkpoint.prev.pt``), or None."""
    for name in (CHECKPOINT, PREVIOUS):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return None


def load_latest(
    run_dir: Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run and its path: what resume, probe, align and plot read (they then
    check its format and fields with :func:`check_format`).

    A corrupt or missing ``checkpoint.pt`` is reported on stderr naming the predecessor used instead; an
    unsafe file is never skipped silently (it is refused, whichever of the two it is)."""
    run_dir = Path(run_dir)
    current, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not current.exists() and not previous.exists():
        raise FileNotFoundError(
            f"{current} does not exist: no checkpoint yet (train first with `localssl pretrain`, or wait for "
            "the run's first checkpoint)"
        )
    if current.exists():
        try:
            return load_checkpoint(current, map_location, mmap), current
        except FileNotFoundError:  # replaced between the check and the read: read the new one
            if current.exists():
                return load_checkpoint(current, map_location, mmap), current
        except CorruptCheckpointError as exc:
            if not previous.exists():
                raise CorruptCheckpointError(
                    f"{exc}; there is no earlier checkpoint ({previous}) to fall back to"
                ) from exc
            print(f"warning: {exc}; using the earlier checkpoint {previous}", file=sys.stderr)
    else:
        print(f"warning: {current} is missing; using the earlier checkpoint {previous}", file=sys.stderr)
    return load_checkpoint(previous, map_location, mmap), previous
