"""The data a run was made with, recorded in its directory and checked wherever the run reads data again.

``RUN/dataset.json`` holds the :func:`~localssl.data.manifest.dataset_manifest` of every split the run
reads (pretraining, probe training, test), written once when the run starts. ``--resume`` checks the
pretraining split(s) against it and ``localssl probe`` the probe's splits, so an allowed
``data.root=OTHER`` may point at a copy of the same data, never at other images or classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localssl.data.base import DatasetError
from localssl.data.catalog import FOLDER, dataset_info
from localssl.data.manifest import RunDataOptions, check_manifest, dataset_manifest
from localssl.data.user_folder import check_root, folder_pretrain_split
from localssl.safe_files import UnsafeFileError, check_file, read_text

DATASET_FILE = "dataset.json"


def record_run_data(run_dir: Path, data: RunDataOptions, write_json) -> dict[str, Any]:
    """Write ``run_dir/dataset.json`` (with ``write_json(obj, path)``, an atomic writer); returns it."""
    manifest = dataset_manifest(data)
    write_json(manifest, Path(run_dir) / DATASET_FILE)
    return manifest


def check_run_data(run_dir: Path, data: RunDataOptions, splits: list[str], purpose: str) -> None:
    """Refuse (:class:`DatasetError`) data whose ``splits`` differ from what ``run_dir`` recorded. A run
    made before runs recorded their data (no ``dataset.json``) is not checked."""
    path = Path(run_dir) / DATASET_FILE
    if not check_file(path):  # a link or special file is refused by name (UnsafeFileError)
        return
    try:
        recorded = json.loads(read_text(path))
    except UnsafeFileError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{path} is not readable ({exc}); it records the data the run was made with. Restore it, or delete it "
            "to skip the check"
        ) from None
    check_recorded_data(recorded, data, splits, f"run {run_dir} ({purpose})")


def check_recorded_data(recorded: dict[str, Any] | None, data: RunDataOptions, splits: list[str], where: str) -> None:
    """Refuse (:class:`DatasetError`) data whose ``splits`` differ from the manifest ``recorded`` (a run's
    ``dataset.json``, or the one an exported encoder carries); ``None`` (nothing recorded) is not checked."""
    if not recorded:
        return
    keep = [s for s in splits if s in recorded.get("splits", {})]
    recorded = {**recorded, "splits": {s: recorded["splits"][s] for s in keep}}
    check_manifest(recorded, dataset_manifest(data, keep), where)


def pretrain_splits(data: RunDataOptions) -> list[str]:
    """The split(s) a run pretrains on (``data.pretrain_split``; ``auto``: the dataset's own)."""
    if data.pretrain_split != "auto":
        return data.pretrain_split.split("+")
    if data.name == FOLDER:
        return folder_pretrain_split(check_root(data.root)).split("+")
    return dataset_info(data.name).pretrain_split.split("+")


def probe_splits(data: RunDataOptions) -> list[str]:
    """The splits the linear probe reads: its training split and the test split."""
    if data.name == FOLDER:
        return ["train", "test"]
    info = dataset_info(data.name)
    return [info.probe_train_split, info.test_split]
