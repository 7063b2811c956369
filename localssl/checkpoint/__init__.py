"""Checkpoints: the files on disk (:mod:`.store`), the settings they were trained under
(:mod:`.fingerprint`) and the position inside an epoch that a mid-epoch one holds (:mod:`.position`)."""

from localssl.checkpoint.fingerprint import (
    NETWORK_SECTIONS,
    RESUME_OVERRIDABLE,
    check_config_unchanged,
    config_fingerprint,
)
from localssl.checkpoint.position import EpochPosition, rng_states
from localssl.checkpoint.read import checkpoint_meta, checkpoint_position, read_run_checkpoint
from localssl.checkpoint.store import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    PREVIOUS,
    RUN_FILES,
    CheckpointFormatError,
    CheckpointWriteError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    check_format,
    is_verified,
    latest_path,
    load_checkpoint,
    load_latest,
    remove_partial_writes,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "NETWORK_SECTIONS",
    "PREVIOUS",
    "RESUME_OVERRIDABLE",
    "RUN_FILES",
    "CheckpointFormatError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "EpochPosition",
    "UnsafeCheckpointError",
    "check_config_unchanged",
    "check_format",
    "checkpoint_meta",
    "checkpoint_position",
    "config_fingerprint",
    "is_verified",
    "latest_path",
    "load_checkpoint",
    "load_latest",
    "read_run_checkpoint",
    "remove_partial_writes",
    "rng_states",
    "save_checkpoint",
]
