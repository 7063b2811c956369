"""Linear probe of a frozen encoder (CLAPP++ App. B), with honest model selection.

Features: every layer pooled with the dataset's kernels, concatenated, z-scored with train
statistics. A linear classifier is trained with Adam (lr 1e-3) on the labelled train split minus a
held-out validation part; the epoch with the best *validation* accuracy is kept and the test set is
evaluated once, at the end. Features are cached in the run directory (keyed by checkpoint and probe
settings) only on request (``probe.cache_features=true``), so re-probing with other classifier settings is cheap.

This is ``probe.protocol=honest`` (the default). ``probe.protocol=paper`` is the authors' own evaluation
(:mod:`localssl.evaluate.paper_probe`). ``RUN_DIR/probe.json`` keeps each protocol's result under its own
key (``"honest"``, ``"paper"``, ``"per_layer": {"honest": ..., "paper": ...}``); its top-level fields are the
honest protocol's result, as before the keys existed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn
from tqdm import tqdm

from localssl.build import resolve_device
from localssl.checkpoint import CorruptCheckpointError, load_checkpoint
from localssl.config import ProbeConfig, RunConfig, read_run_config
from localssl.data import data_info, load_split
from localssl.data.catalog import FOLDER
from localssl.data.run_data import check_recorded_data, check_run_data, probe_splits
from localssl.data.user_folder import folder_manifest
from localssl.evaluate.frame_probe import compute_frame_features
from localssl.evaluate.frozen import frozen_extractor
from localssl.evaluate.paper_probe import layer_blocks, paper_probe
from localssl.evaluate.pretrained import is_exported, read_exported, resolve
from localssl.linear_probe import FeatureSet, columns, feature_dtype, say_capped, train_linear_probe
from localssl.safe_files import UnsafeFileError, check_file, read_text, remove_dead_temporaries
from localssl.utils import atomic_torch_save, atomic_write_json

PROBE_OVERRIDABLE_PREFIXES = ("probe.", "data.root", "train.device")


def split_train_val(n: int, cfg: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the probe's validation and train images in a labelled split of ``n`` images
    (seeded by ``probe.seed``; at most a fifth of the split is held out)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(cfg.val_size, n // 5)
    return perm[:n_val], perm[n_val:]


def _feature_key(cfg: RunConfig, ckpt: Path, layers: list[int]) -> str:
    st = ckpt.stat()
    p = cfg.probe
    blob = json.dumps(
        [
            str(ckpt.resolve()),
            st.st_size,
            st.st_mtime_ns,
            layers,
            p.val_size,
            p.augment_copies,
            p.train_subset,
            p.seed,
            p.precision,
            cfg.data.name,
            cfg.data.root,
            folder_manifest(cfg.data.root) if cfg.data.name == FOLDER else None,
        ],
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def compute_features(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    cache_features: bool = True,
    progress: bool = False,
    weights: Path | None = None,
) -> tuple[FeatureSet, dict[str, Any]]:
    """Features of the probe's train, validation and test images (``meta["layer_dims"]``: each chosen
    layer's width in the concatenated features), through the run's encoder or the exported file ``weights``
    (the feature cache, if asked for, goes into ``run_dir`` either way)."""
    info = data_info(cfg.data)
    extractor, meta = frozen_extractor(cfg, run_dir, device, weights)
    ckpt_path = weights if weights is not None else run_dir / meta["checkpoint"]
    key = _feature_key(cfg, ckpt_path, [i - 1 for i in meta["layers"]])
    cache = run_dir / f"features-{key}.pt"
    train = load_split(cfg.data.name, info.probe_train_split, cfg.data.root, info)
    meta["layer_dims"] = extractor.layer_dims(train.images[:2].to(device))
    if cache.exists():
        try:
            fs = FeatureSet(**load_checkpoint(cache))
            meta["cache"] = cache.name  # named only when the file is there
            return fs, meta
        except CorruptCheckpointError:
            pass  # a cache cut short by a crash is recomputed (an unsafe one is refused above)

    test = load_split(cfg.data.name, info.test_split, cfg.data.root, info)
    val_idx, train_idx = split_train_val(len(train), cfg.probe)
    say_capped("probe: validation set", len(val_idx), cfg.probe.val_size, len(train), "probe.val_size")
    if cfg.probe.train_subset is not None:
        train_idx = train_idx[: cfg.probe.train_subset]
    dtype = feature_dtype(sum(meta["layer_dims"]))
    tr_images = train.images[train_idx]

    def extract(images: torch.Tensor, desc: str, transform: nn.Module | None = None) -> torch.Tensor:
        return extractor.extract(images, transform=transform, dtype=dtype, progress=progress, desc=desc)

    copies: list[torch.Tensor] = []
    if cfg.probe.augment_copies > 0:
        aug = nn.Sequential(
            K.RandomResizedCrop((info.image_size, info.image_size), scale=info.crop_scale), K.RandomHorizontalFlip()
        )
        torch.manual_seed(cfg.probe.seed)
        copies = [extract(tr_images, f"train features (copy {c + 1})", aug) for c in range(cfg.probe.augment_copies)]
    else:
        copies = [extract(tr_images, "train features")]
    fs = FeatureSet(
        train=copies,
        train_y=train.labels[train_idx],
        val=extract(train.images[val_idx], "validation features"),
        val_y=train.labels[val_idx],
        test=extract(test.images, "test features"),
        test_y=test.labels,
    )
    if cache_features:
        remove_dead_temporaries(run_dir, ".features-*.tmp")  # left by a probe killed while writing its cache
        try:
            atomic_torch_save(dataclasses.asdict(fs), cache)
            meta["cache"] = cache.name
        except OSError:
            pass  # a full disk only costs the cache (and probe.json names none)
    return fs, meta


SECTIONS = ("honest", "paper", "per_layer")
_FRACTION_KEYS = ("test_acc", "val_acc", "train_acc", "best_test_acc_selected_on_test", "train_acc_on_crops")


def in_percent(result: dict[str, Any]) -> dict[str, Any]:
    """A probe result with its accuracies in percent under ``*_pct`` keys, the unit of every file a user reads.
    A ``probe.json`` written before the unit was in the key names holds fractions (``test_acc`` = 0.42): those
    are converted here (recursively: protocol sections, per-layer results, histories); a current one is
    returned as it is."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if key in _FRACTION_KEYS and isinstance(value, (int, float)) and f"{key}_pct" not in result:
            out[f"{key}_pct"] = 100.0 * value
        elif isinstance(value, dict):
            out[key] = in_percent(value)
        elif isinstance(value, list):
            out[key] = [in_percent(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def store_result(run_dir: Path, result: dict[str, Any], per_layer: bool = False) -> dict[str, Any]:
    """Write ``result`` into ``RUN_DIR/probe.json`` under its protocol's key (``per_layer``: under
    ``"per_layer"``, then the protocol), keeping the other protocols' results of the same checkpoint (results
    of another checkpoint, another epoch or global step, are dropped, not mixed). The top-level fields are the honest
    protocol's result, so readers of the file from before the keys existed read what they read then."""
    path = run_dir / "probe.json"
    sections: dict[str, Any] = {}
    if check_file(path):  # a link or special file is refused by name (UnsafeFileError)
        try:
            old = json.loads(read_text(path))
        except UnsafeFileError:
            raise
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict):
            old = in_percent(old)
            sections = {k: old[k] for k in SECTIONS if isinstance(old.get(k), dict)}
            if "honest" not in sections and "test_acc_pct" in old:  # a file from before the keys: the honest result
                sections["honest"] = {k: v for k, v in old.items() if k not in SECTIONS}

    def same_checkpoint(r: dict[str, Any]) -> bool:
        return all(r.get(k) == result.get(k) for k in ("checkpoint_epoch", "checkpoint_step"))

    kept: dict[str, Any] = {}
    for key, value in sections.items():
        if key == "per_layer":
            same = {p: r for p, r in value.items() if isinstance(r, dict) and same_checkpoint(r)}
            if same:
                kept[key] = same
        elif same_checkpoint(value):
            kept[key] = value
    if per_layer:
        kept.setdefault("per_layer", {})[result["protocol"]] = result
    else:
        kept[result["protocol"]] = result
    out = {**kept.get("honest", {}), **kept}
    try:
        atomic_write_json(out, path)
    except OSError as exc:  # the accuracy was computed: never lose it with the file
        shown = {k: result[k] for k in ("protocol", "test_acc_pct", "val_acc_pct", "checkpoint_epoch") if k in result}
        raise ProbeWriteError(
            f"could not write {path} ({exc.strerror or exc}); the probe's result was {json.dumps(shown)} "
            "(the full result is printed above). Free space or fix the folder's permissions, then probe again."
        ) from exc
    return out


class ProbeWriteError(RuntimeError):
    """The probe finished but its result file could not be written."""


def exported_probe_dir(weights: Path) -> Path:
    """Where ``localssl probe FILE.safetensors`` writes its ``probe.json`` unless told (``--out``):
    ``runs/<file stem>/`` under the current directory (a shipped file's folder may not be writable)."""
    return Path("runs") / weights.with_suffix("").name


def probe_folder(source: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`probe` writes ``probe.json`` for ``source``: the run itself, or for exported weights
    ``out_dir`` (default :func:`exported_probe_dir`)."""
    if not is_exported(source):
        return Path(source)
    return Path(out_dir) if out_dir is not None else exported_probe_dir(resolve(source))


def probe(
    run_dir: str | os.PathLike,
    overrides: list[str] | None = None,
    cache_features: bool | None = None,
    per_layer: bool = False,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``localssl probe RUN_DIR``: the ``probe.protocol`` result, stored in ``RUN_DIR/probe.json`` (see
    :func:`store_result`) and returned. ``run_dir`` may instead be exported weights (a ``.safetensors`` file
    from ``localssl export``, or a shipped encoder's name): its hash is checked, its config and data record
    come from the file, and the result goes to ``out_dir/probe.json`` (default :func:`exported_probe_dir`);
    ``data.name=OTHER`` then probes it on another data set's own splits (a transfer probe, the pair recorded in
    the result's ``transfer``; the recorded-data check is for the data it was trained on).
    ``per_layer``: the same protocol on each chosen layer alone and on all of them together
    (``result["results"]``: ``"1"``, ..., ``"all"``). The honest protocol's feature cache
    (``features-<key>.pt``, ~1 GB at width 1/8 on CIFAR-10) is written only when ``cache_features`` is true,
    or, when it is ``None``, with the option ``probe.cache_features=true`` (default: not); the paper protocol
    streams its features and stores none."""
    exported_source = is_exported(run_dir)
    for item in overrides or []:
        key = item.split("=", 1)[0]
        if exported_source and key == "data.name":
            continue  # exported weights may be probed on other images (a transfer probe: recorded in the result)
        if not key.startswith(PROBE_OVERRIDABLE_PREFIXES):
            hint = ", or data.name for exported weights" if not exported_source else ""
            raise ValueError(f"probe overrides must be probe.*, data.root or train.device{hint}; got '{item}'")
    weights, transfer = None, None
    if exported_source:
        exported = read_exported(resolve(run_dir))
        weights = exported.path
        run_dir = probe_folder(weights, out_dir)
        cfg = exported.config(["train.device=auto", *(overrides or [])])  # not the device it was trained on
        recorded = exported.info.get("data")
        trained_on = recorded.get("name") if isinstance(recorded, dict) else None
        if trained_on is not None and trained_on != cfg.data.name:
            transfer = {"pretrained_on": trained_on, "probed_on": cfg.data.name}  # its own splits, nothing to check
        else:
            where = f"exported encoder {weights.name} (probed: its probe splits were recorded at pretraining)"
            check_recorded_data(recorded, cfg.data, probe_splits(cfg.data), where)
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        if out_dir is not None:
            raise ValueError("--out is for exported weights (FILE.safetensors); a run's probe.json goes into the run")
        run_dir = Path(run_dir)
        cfg = read_run_config(run_dir, overrides)
        check_file(run_dir / "probe.json")  # refuse a planted link or special file before the probe's work, not after
        purpose = "probed: its probe splits were recorded at pretraining"
        check_run_data(run_dir, cfg.data, probe_splits(cfg.data), purpose)
    device = resolve_device(cfg.train.device)
    if cache_features is None:
        cache_features = cfg.probe.cache_features
    progress = cfg.probe.progress and cfg.train.progress
    info = data_info(cfg.data)
    if cfg.probe.protocol == "paper":
        result = paper_probe(cfg, run_dir, device, per_layer, progress, weights)
        if transfer is not None:
            result["transfer"] = transfer
        _store(run_dir, result, per_layer)
        return result
    if info.kind == "sequence":  # audio: one probe row per labelled 10 ms frame
        if per_layer:
            raise ValueError("--per-layer is for image datasets; for audio, probe one layer at a time: probe.layers=N")
        fs, meta = compute_frame_features(cfg, run_dir, device, weights)
        num_classes = meta.pop("num_classes")
    else:
        fs, meta = compute_features(cfg, run_dir, device, cache_features, progress, weights)
        num_classes = info.num_classes
    layer_dims = meta.pop("layer_dims", None)
    if transfer is not None:
        meta["transfer"] = transfer
    common = dict(
        protocol="honest",
        n_train=len(fs.train_y),
        n_val=len(fs.val_y),
        n_test=len(fs.test_y),
        probe=dataclasses.asdict(cfg.probe),
    )
    if per_layer:
        blocks = layer_blocks(meta["layers"], layer_dims)
        results = {}
        for name, cols in tqdm(blocks.items(), desc="layers", leave=False, disable=not progress, file=sys.stderr):
            results[name] = train_linear_probe(columns(fs, cols), cfg.probe, info.num_classes, cfg.probe.standardize)
            results[name]["feature_dim"] = cols.stop - cols.start
        result = {**meta, **common, "results": results}
    else:
        result = train_linear_probe(fs, cfg.probe, num_classes, cfg.probe.standardize, progress)
        result.update(meta)
        result.update(feature_dim=int(fs.val.shape[1]), **common)
    _store(run_dir, result, per_layer)
    return result


def _store(run_dir: Path, result: dict[str, Any], per_layer: bool) -> None:
    try:
        store_result(run_dir, result, per_layer)
    except ProbeWriteError:
        print(json.dumps(result, indent=2, default=str), file=sys.stderr)
        raise
