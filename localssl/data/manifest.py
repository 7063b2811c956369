"""Dataset identity: a small JSON manifest of the data a run uses, to store with the run and check later.

:func:`dataset_manifest` describes the splits a run reads (pretraining, probe training, test): their
number of images, the class names and a content fingerprint of each split:

- ``data.name=folder``: a hash over the sorted (relative path, label, sha256 of the file's bytes) of the
  image files the reader reads (symbolic links followed): what the run read, not only its listing. Other
  pixels under the same names and sizes, or two class folders swapped, change it; a copied or moved folder
  keeps it (modification times are left out of the hash). The per-file hashes are cached by (path, size,
  modification time) in :func:`~localssl.data.base.cache_dir` (:func:`file_digests`), so a resume or a probe
  of an unchanged folder reads no image again; the first hash of a folder reads every byte once
  (docs/usage.md states the cost).
- every other dataset, and every source added to the catalog later (:data:`~localssl.data.catalog.DATASETS`):
  a hash of the decoded arrays (images and labels) of each split as :func:`~localssl.data.catalog.load_split`
  returns them, so it does not matter which on-disk copy (pickles or a JPEG folder) was read, only what was
  read. :func:`split_fingerprint` is the one place every source is fingerprinted.

:func:`check_manifest` compares a recorded manifest with the current one and raises a
:class:`~localssl.data.base.DatasetError` naming every difference and the fix. (Not to be confused with
:func:`~localssl.data.user_folder.folder_manifest`, the key of caches derived from a folder, which also
covers modification times and the folder's location.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import torch

from localssl.data.base import DatasetError, cache_dir
from localssl.data.catalog import FOLDER, DataOptions, dataset_info, load_split
from localssl.data.user_folder import check_root, folder_classes, folder_pretrain_split, list_split
from localssl.safe_files import check_file, read_text, remove_dead_temporaries, temporary_beside, umask_mode

MANIFEST_VERSION = 1
FOLDER_FINGERPRINT = "sha256 of sorted (relative path, label, sha256 of the bytes) of the image files"
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
    digests = file_digests([path for path, _ in files])
    digest = hashlib.sha256()
    for path, label in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{label}\t{digests[path]}\n".encode())
    return {"images": len(files), "fingerprint": digest.hexdigest()}


DIGEST_CACHE = "file-digests-v1"


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:  # an image the reader reads (walk_files: regular files, links followed)
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(paths: list[Path]) -> dict[Path, str]:
    """The sha256 of each file's bytes, cached by (absolute path, size, modification time in ns) in
    ``cache_dir()/file-digests-v1/`` (one JSON file per folder): an unchanged file is not read again; a file
    whose size or modification time changed is. The cache is only a shortcut: a missing, unreadable or
    unwritable cache costs a re-hash, never a wrong answer for a file whose size or mtime changed."""
    if not paths:
        return {}
    names = [os.path.abspath(p) for p in paths]  # as listed (a link's target is read, and stat'ed, through it)
    common = os.path.commonpath([os.path.dirname(n) for n in names])
    cache = cache_dir() / DIGEST_CACHE / f"{hashlib.sha1(common.encode()).hexdigest()[:16]}.json"
    known: dict[str, Any] = {}
    try:
        if check_file(cache):
            known = json.loads(read_text(cache, 1 << 30))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    out, fresh, changed = {}, {}, False
    for path, name in zip(paths, names):
        st = os.stat(name)
        entry = known.get(name)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [st.st_size, st.st_mtime_ns]:
            out[path] = str(entry[2])
        else:
            out[path] = _digest_file(path)
            changed = True
        fresh[name] = [st.st_size, st.st_mtime_ns, out[path]]
    if changed or fresh.keys() != known.keys():
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_temporaries(cache.parent, ".*.tmp")
            _write_atomic(cache, json.dumps(fresh).encode())
        except OSError:
            pass  # a read-only or full cache folder: hashed again next time
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _array_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for t in (images, labels):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.numpy())  # C-contiguous: hashed in place, no copy
    return digest.hexdigest()


def split_fingerprint(data: RunDataOptions, split: str) -> tuple[dict[str, Any], list[str]]:
    """The identity of one split of any source: ``({"images", "fingerprint"}, class names)``. Image folders hash
    each file's bytes and label (:func:`file_digests`); a source that ships its own hashes
    (``DatasetInfo.fingerprint``: the eSpeak corpus manifest) gives those; every other source, built in or added
    to the catalog later, the decoded arrays :func:`~localssl.data.catalog.load_split` returns."""
    if data.name == FOLDER:
        root = check_root(data.root)
        return _folder_split(root, split), folder_classes(root)
    info = dataset_info(data.name)
    if info.fingerprint is not None:  # hashes the data set ships (the eSpeak corpus manifest): no re-hashing
        from localssl.config import default_data_root

        root = Path(data.root).expanduser() if data.root else default_data_root()
        identity = dict(info.fingerprint(root, split))
        return identity, [str(c) for c in identity.pop("classes", [])]
    loaded = load_split(data.name, split, data.root)
    identity = {"images": len(loaded), "fingerprint": _array_fingerprint(loaded.images, loaded.labels)}
    return identity, [str(c) for c in loaded.classes]


def dataset_manifest(data: RunDataOptions, splits: list[str] | None = None) -> dict[str, Any]:
    """JSON-serialisable identity of the data a run with this ``data`` config reads (``splits``: these
    single splits instead of :func:`run_splits`): ``{"manifest_version", "name", "classes",
    "fingerprint_method", "splits": {split: {"images", "fingerprint"}}}``."""
    names = splits if splits is not None else run_splits(data)
    per_split, classes = {}, []
    for s in names:
        per_split[s], classes = split_fingerprint(data, s)
    if data.name == FOLDER:
        method = FOLDER_FINGERPRINT
    elif dataset_info(data.name).fingerprint is not None:
        method = SHIPPED_FINGERPRINT
    else:
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
