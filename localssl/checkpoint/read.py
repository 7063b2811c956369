"""The one way readers (probe, align, plot, features) open a run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from localssl.checkpoint.fingerprint import NETWORK_SECTIONS, check_config_unchanged
from localssl.checkpoint.store import check_format, load_latest
from localssl.config import RunConfig


def read_run_checkpoint(
    run_dir: Path, cfg: RunConfig, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path]:
    """The run's newest verified checkpoint (``checkpoint.pt``, else ``checkpoint.prev.pt``: a save in
    progress never hides it) and its path, checked against the run's ``config.yaml``: a checkpoint whose
    network settings differ (copied from another run), or that is not in a format this version reads
    (:func:`~localssl.checkpoint.store.check_format`), is refused by name."""
    ckpt, path = load_latest(Path(run_dir), map_location)
    check_format(ckpt, path)
    check_config_unchanged(ckpt, cfg, Path(run_dir), only=NETWORK_SECTIONS, path=path)
    return ckpt, path


def checkpoint_position(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Where in training a checkpoint was taken: ``{"epoch", "global_step", "mid_epoch_step"}`` (epochs
    completed; ``mid_epoch_step`` is the step reached inside the next epoch, or None at an epoch's end)."""
    position = ckpt.get("position")
    return {
        "epoch": int(ckpt.get("epoch", 0)),
        "global_step": int(ckpt.get("global_step", 0)),
        "mid_epoch_step": int(position["step"]) if position else None,
    }


def checkpoint_meta(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a probe records of the checkpoint it read: the file, the epochs completed
    (``checkpoint_epoch``), the global step, and for a mid-epoch checkpoint the step reached in the epoch
    under way (``checkpoint_mid_epoch_step``; None at an epoch's end)."""
    where = checkpoint_position(ckpt)
    return {
        "checkpoint": path.name,
        "checkpoint_epoch": where["epoch"],
        "checkpoint_step": where["global_step"],
        "checkpoint_mid_epoch_step": where["mid_epoch_step"],
    }
