"""Checkpoints: the files on disk (:mod:`.store`), the settings they were trained under
(:mod:`.fingerprint`) and the position inside an epoch that a mid-epoch one holds (:mod:`.position`)."""

from localssl.checkpoint.fingerprint import RESUME_OVERRIDABLE, check_config_unchanged, config_fingerprint
from localssl.checkpoint.position import EpochPosition, rng_states
from localssl.checkpoint.store import (
    CHECKPOINT,
    PREVIOUS,
    RUN_FILES,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    latest_path,
    load_checkpoint,
    load_latest,
    remove_partial_writes,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT",
    "PREVIOUS",
    "RESUME_OVERRIDABLE",
    "RUN_FILES",
    "CorruptCheckpointError",
    "EpochPosition",
    "UnsafeCheckpointError",
    "check_config_unchanged",
    "config_fingerprint",
    "latest_path",
    "load_checkpoint",
    "load_latest",
    "remove_partial_writes",
    "rng_states",
    "save_checkpoint",
]
