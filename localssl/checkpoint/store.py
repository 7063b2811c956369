"""Checkpoint files: safe loading (tensors and plain containers only) and one rotated predecessor.

Nothing read from disk may execute code, so every load goes through ``torch.load(..., weights_only=True)``;
a file that needs anything else (a pickled object with ``__reduce__``, a class) is refused with an
error naming it. Each save keeps the previous checkpoint as ``checkpoint.prev.pt``, and a resume whose
``checkpoint.pt`` is truncated or garbage falls back to it, saying so."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from localssl.utils import atomic_torch_save

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class UnsafeCheckpointError(RuntimeError):
    """The file holds objects beyond tensors and plain containers: loading it could run code."""


class CorruptCheckpointError(RuntimeError):
    """The file is truncated, empty or not a torch checkpoint at all."""


def _unsafe(exc: BaseException) -> bool:
    return "Weights only load failed" in str(exc) and ("global" in str(exc) or "GLOBAL" in str(exc))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the cause."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([TorchVersion]):  # older runs stored torch.__version__ as is
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as exc:
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


def save_checkpoint(state: dict[str, Any], run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically, first moving the current one to ``checkpoint.prev.pt``.

    A crash at any moment leaves at least one complete checkpoint: the new file is only renamed into
    place once fully written and fsynced, and the old one survives as the predecessor."""
    run_dir = Path(run_dir)
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS)
    atomic_torch_save(state, current)


RUN_FILES = (CHECKPOINT, "config.yaml", "steps.csv", "metrics.csv", "summary.json")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete the temporaries (``.NAME.*.tmp``, see :func:`localssl.utils.atomic_write_bytes`) that a run
    killed in the middle of writing one of its files leaves behind; returns the paths removed. Only for a
    run directory no process is writing to (``--resume`` of a stopped run)."""
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


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run and its path.

    A corrupt ``checkpoint.pt`` is reported on stderr naming the predecessor that is used instead; an
    unsafe file is never skipped silently (it is refused, whichever of the two it is)."""
    run_dir = Path(run_dir)
    current, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not current.exists() and not previous.exists():
        raise FileNotFoundError(f"{current} does not exist: nothing to resume (start with `localssl pretrain`)")
    if current.exists():
        try:
            return load_checkpoint(current, map_location), current
        except CorruptCheckpointError as exc:
            if not previous.exists():
                raise CorruptCheckpointError(
                    f"{exc}; there is no earlier checkpoint ({previous}) to fall back to"
                ) from exc
            print(f"warning: {exc}; resuming from the earlier checkpoint {previous}", file=sys.stderr)
    else:
        print(f"warning: {current} is missing; resuming from the earlier checkpoint {previous}", file=sys.stderr)
    return load_checkpoint(previous, map_location), previous
