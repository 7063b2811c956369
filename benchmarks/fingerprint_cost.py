"""The cost of an image folder's content fingerprint (``dataset.json``, issue 36 item 2).

    python benchmarks/fingerprint_cost.py FOLDER [FOLDER ...]

For each ``data.name=folder`` root: its files and bytes, then the seconds :func:`localssl.data.dataset_manifest`
takes with an empty digest cache (every file read and hashed: what ``pretrain`` pays once), with the cache filled
(what ``--resume`` and ``probe`` of an unchanged folder pay: one ``stat`` a file), and the listing alone (names and
sizes, what the fingerprint was before). The digest cache goes to a temporary ``LOCALSSL_CACHE``; the page cache is
left as it is (state whether the folder was just read)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from localssl.config import DataConfig
from localssl.data.manifest import dataset_manifest, run_splits
from localssl.data.user_folder import list_split


def measure(root: Path) -> dict[str, float]:
    data = DataConfig(name="folder", root=str(root))
    files = [p for s in run_splits(data) for p, _ in list_split(root, s)[1]]
    size = sum(p.stat().st_size for p in files)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LOCALSSL_CACHE"] = cache
        t0 = time.perf_counter()
        dataset_manifest(data)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset_manifest(data)
        warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in run_splits(data):
        for p, _ in list_split(root, s)[1]:
            p.stat()
    listing = time.perf_counter() - t0
    gib = size / 2**30
    return {
        "files": len(files),
        "bytes": size,
        "first_hash_s": round(cold, 2),
        "cached_s": round(warm, 2),
        "listing_s": round(listing, 2),
        "first_hash_s_per_gib": round(cold / gib, 1),
        "first_hash_ms_per_1000_files": round(1000 * cold / len(files) * 1000, 1),
        "cached_ms_per_1000_files": round(1000 * warm / len(files) * 1000, 1),
    }


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(json.dumps({"root": folder, **measure(Path(folder))}))
