"""Dataset identity: a small JSON manifest of the data a run uses, to store with the run and check later.

:func:`dataset_manifest` describes the splits a run reads (pretraining, probe training, test): their
number of images, the class names and a content fingerprint of each split:

- ``data.name=folder``: a hash over the sorted relative paths and byte sizes of the image files (the
  listing the reader reads, symbolic links followed). Nothing is decoded, and modification times are
  left out, so a copied or moved data folder keeps its fingerprint; an added, removed, renamed or
  re-encoded image changes it. An edit that keeps a file's path and exact size (possible for
  uncompressed formats such as BMP) is not seen here (the decode cache still sees it, by mtime).
- every other dataset: a hash of the decoded arrays (images and labels) of each split, so it does not
  matter which on-disk copy (pickles or a JPEG folder) was read, only what was read.

:func:`check_manifest` compares a recorded manifest with the current one and raises a
:class:`~localssl.data.base.DatasetError` naming every difference and the fix. (Not to be confused with
:func:`~localssl.data.user_folder.folder_manifest`, the key of caches derived from a folder, which also
covers modification times and the folder's location.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

import torch

from localssl.data.base import DatasetError
from localssl.data.catalog import FOLDER, DataOptions, dataset_info, load_split
from localssl.data.user_folder import check_root, folder_classes, folder_pretrain_split, list_split

MANIFEST_VERSION = 1
FOLDER_FINGERPRINT = "sha256 of sorted (relative path, size) of the image files"
ARRAY_FINGERPRINT = "blake2b-128 of the decoded images and labels"
SHIPPED_FINGERPRINT = "sha256 of the data set's own file hashes (its manifest)"


class RunDataOptions(DataOptions, Protocol):
    """The ``data`` section of a run config as the manifest sees it: also the pretraining split."""

    pretrain_split: str


def run_splits(data: RunDataOptions) -> list[str]:
    """The single splits a run reads: its pretraining split(s) (``'a+b'`` gives both), the probe's
    training split and the test split, each once, in that order (nothing is decoded)."""
    if data.name == FOLDER:
        auto, probe_train, test = folder_pretrain_split(check_root(data.root)), "train", "test"
    else:
        info = dataset_info(data.name)
        auto, probe_train, test = info.pretrain_split, info.probe_train_split, info.test_split
    pretrain = auto if data.pretrain_split == "auto" else data.pretrain_split
    return list(dict.fromkeys([*pretrain.split("+"), probe_train, test]))


def _folder_split(root: Path, split: str) -> dict[str, Any]:
    _, files = list_split(root, split)
    digest = hashlib.sha256()
    for path, _ in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return {"images": len(files), "fingerprint": digest.hexdigest()}


def _array_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.numpy())  # C-contiguous: hashed in place, no copy
    return digest.hexdigest()


def dataset_manifest(data: RunDataOptions, splits: list[str] | None = None) -> dict[str, Any]:
    """JSON-serialisable identity of the data a run with this ``data`` config reads (``splits``: these
    single splits instead of :func:`run_splits`): ``{"manifest_version", "name", "classes",
    "fingerprint_method", "splits": {split: {"images", "fingerprint"}}}``."""
    names = splits if splits is not None else run_splits(data)
    if data.name == FOLDER:
        root = check_root(data.root)
        classes = folder_classes(root)
        per_split = {s: _folder_split(root, s) for s in names}
        method = FOLDER_FINGERPRINT
    elif dataset_info(data.name).fingerprint is not None:  # hashes the data set ships (eSpeak corpus manifest)
        info = dataset_info(data.name)
        from localssl.config import default_data_root

        root = Path(data.root).expanduser() if data.root else default_data_root()
        per_split = {s: info.fingerprint(root, s) for s in names}  # type: ignore[misc]
        classes = next((p.pop("classes") for p in per_split.values()), [])
        for p in per_split.values():
            p.pop("classes", None)
        method = SHIPPED_FINGERPRINT
    else:
        per_split, classes = {}, []
        for s in names:
            loaded = load_split(data.name, s, data.root)
            classes = list(loaded.classes)
            per_split[s] = {"images": len(loaded), "fingerprint": _array_fingerprint(loaded.images, loaded.labels)}
        method = ARRAY_FINGERPRINT
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": data.name,
        "classes": [str(c) for c in classes],
        "fingerprint_method": method,
        "splits": per_split,
    }


def _split_differences(recorded: dict[str, Any], current: dict[str, Any], compare_content: bool) -> list[str]:
    out = []
    old, new = recorded.get("splits", {}), current.get("splits", {})
    for split in [*old, *(s for s in new if s not in old)]:
        if split not in new:
            out.append(f"split '{split}' was recorded but is not in the current data")
        elif split not in old:
            out.append(f"split '{split}' is in the current data but was not recorded")
        elif old[split].get("images") != new[split].get("images"):
            out.append(f"split '{split}': {old[split].get('images')} images recorded, {new[split]['images']} now")
        elif compare_content and old[split].get("fingerprint") != new[split].get("fingerprint"):
            what = "other files" if current.get("name") == FOLDER else "other pixels or labels"
            out.append(
                f"split '{split}': the same number of images ({new[split]['images']}) but {what} "
                f"(fingerprint {old[split].get('fingerprint')} recorded, {new[split]['fingerprint']} now)"
            )
    return out


def manifest_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two manifests, one line each (empty: the same data). Fingerprints are
    compared only when both were made by the same method (a manifest of an older version that made
    them otherwise is checked on names, classes and counts)."""
    out = []
    if recorded.get("name") != current.get("name"):
        out.append(f"dataset '{recorded.get('name')}' recorded, '{current.get('name')}' now")
    if recorded.get("classes") != current.get("classes"):
        old, new = recorded.get("classes") or [], current.get("classes") or []
        gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
        detail = f"missing now: {gone or 'none'}; new: {added or 'none'}" if gone or added else "another order"
        out.append(f"classes differ ({detail})")
    same_method = recorded.get("fingerprint_method") == current.get("fingerprint_method")
    return out + _split_differences(recorded, current, same_method)


def check_manifest(recorded: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Raise :class:`DatasetError` if ``current`` (:func:`dataset_manifest` now) is not the data recorded
    for ``where`` (e.g. ``'run runs/x (pretrained on it)'``), naming each difference and the fix."""
    if not isinstance(recorded, dict) or "splits" not in recorded:
        raise DatasetError(
            f"what is recorded for {where} is not a dataset manifest (it has no 'splits'), so the data cannot be "
            "checked against it. Fix: restore the recorded manifest, or pretrain a new run"
        )
    differences = manifest_differences(recorded, current)
    if differences:
        lines = "\n  - ".join(differences)
        raise DatasetError(
            f"the data is not the data recorded for {where}:\n  - {lines}\n"
            "Fix: point data.root at the data it was made with (or restore the changed files); "
            "to use this data, pretrain a new run on it"
        )
