"""Linear probe of a frozen encoder (CLAPP++ App. B), with honest model selection.

Features: every layer pooled with the dataset's kernels, concatenated, z-scored with train
statistics. A linear classifier is trained with Adam (lr 1e-3) on the labelled train split minus a
held-out validation part; the epoch with the best *validation* accuracy is kept and the test set is
evaluated once, at the end. Features are cached in the run directory (keyed by checkpoint and probe
settings), so re-probing with other classifier settings is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from localssl.build import build_encoder, resolve_device
from localssl.checkpoint import CorruptCheckpointError, load_checkpoint
from localssl.config import ProbeConfig, RunConfig, read_run_config
from localssl.data import dataset_info, load_split
from localssl.evaluate.features import FeatureExtractor, parse_layers
from localssl.registry import VIEWS
from localssl.utils import atomic_torch_save, atomic_write_json
from localssl.views.simclr import Normalize

PROBE_OVERRIDABLE_PREFIXES = ("probe.", "data.root", "train.device")


@dataclasses.dataclass
class FeatureSet:
    train: list[torch.Tensor]  # one or more (augmented) copies, (n_train, D)
    train_y: torch.Tensor
    val: torch.Tensor
    val_y: torch.Tensor
    test: torch.Tensor
    test_y: torch.Tensor


def train_linear_probe(fs: FeatureSet, cfg: ProbeConfig, num_classes: int, standardize: bool = True) -> dict[str, Any]:
    """Adam on cross-entropy; the best-validation epoch's classifier is tested once."""
    g = torch.Generator().manual_seed(cfg.seed)
    d = fs.val.shape[1]
    if standardize:
        ref = fs.train[0].float()
        mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(d), torch.ones(d)
    clf = nn.Linear(d, num_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        if len(y) == 0:
            return float("nan")
        with torch.no_grad():
            correct = 0
            for s in range(0, len(x), 4096):
                logits = clf((x[s : s + 4096].float() - mean) / std)
                correct += int((logits.argmax(1) == y[s : s + 4096]).sum())
        return correct / len(y)

    best = (-1.0, 0, {k: v.clone() for k, v in clf.state_dict().items()})
    history = []
    n = len(fs.train_y)
    for epoch in range(cfg.epochs):
        x_all = fs.train[epoch % len(fs.train)]
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            loss = F.cross_entropy(clf((x_all[idx].float() - mean) / std), fs.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_acc = accuracy(fs.val, fs.val_y)
        history.append({"epoch": epoch + 1, "train_loss": total / n, "val_acc": val_acc})
        if val_acc > best[0] or len(fs.val_y) == 0:
            best = (val_acc, epoch + 1, {k: v.clone() for k, v in clf.state_dict().items()})
    clf.load_state_dict(best[2])
    return {
        "test_acc": accuracy(fs.test, fs.test_y),
        "val_acc": best[0],
        "best_epoch": best[1],
        "train_acc": accuracy(fs.train[0], fs.train_y),
        "history": history,
    }


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
            cfg.data.name,
        ],
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def compute_features(
    cfg: RunConfig, run_dir: Path, device: torch.device, cache_features: bool = True
) -> tuple[FeatureSet, dict[str, Any]]:
    info = dataset_info(cfg.data.name)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path} does not exist; train first with `localssl pretrain`")
    encoder = build_encoder(cfg, info)
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    encoder.load_state_dict(ckpt["encoder"])
    encoder.to(device).eval()
    layers = parse_layers(cfg.probe.layers, len(encoder))
    key = _feature_key(cfg, ckpt_path, layers)
    cache = run_dir / f"features-{key}.pt"
    meta = {"checkpoint_epoch": int(ckpt.get("epoch", 0)), "layers": [i + 1 for i in layers], "cache": cache.name}
    if cache.exists():
        try:
            return FeatureSet(**load_checkpoint(cache)), meta
        except CorruptCheckpointError:
            pass  # a cache cut short by a crash is recomputed (an unsafe one is refused above)

    views = VIEWS.get(cfg.views.name).builder(cfg.views, info)
    if hasattr(views, "feature_extractor"):  # e.g. patch_grid: encode patches, average over the grid
        extractor = views.feature_extractor(encoder, layers).to(device)
    else:
        kernels = list(info.pool_kernels) if len(info.pool_kernels) == len(encoder) else [None] * len(encoder)
        extractor = FeatureExtractor(encoder, Normalize(info.mean, info.std), kernels, layers).to(device)
    train = load_split(cfg.data.name, info.probe_train_split, cfg.data.root)
    test = load_split(cfg.data.name, info.test_split, cfg.data.root)
    val_idx, train_idx = split_train_val(len(train), cfg.probe)
    if cfg.probe.train_subset is not None:
        train_idx = train_idx[: cfg.probe.train_subset]
    dtype = torch.float16 if extractor(train.images[:2].to(device)).shape[1] > 8192 else torch.float32
    tr_images = train.images[train_idx]
    copies: list[torch.Tensor] = []
    if cfg.probe.augment_copies > 0:
        aug = nn.Sequential(
            K.RandomResizedCrop((info.image_size, info.image_size), scale=info.crop_scale), K.RandomHorizontalFlip()
        )
        torch.manual_seed(cfg.probe.seed)
        copies = [extractor.extract(tr_images, transform=aug, dtype=dtype) for _ in range(cfg.probe.augment_copies)]
    else:
        copies = [extractor.extract(tr_images, dtype=dtype)]
    fs = FeatureSet(
        train=copies,
        train_y=train.labels[train_idx],
        val=extractor.extract(train.images[val_idx], dtype=dtype),
        val_y=train.labels[val_idx],
        test=extractor.extract(test.images, dtype=dtype),
        test_y=test.labels,
    )
    if cache_features:
        try:
            atomic_torch_save(dataclasses.asdict(fs), cache)
        except OSError:
            pass  # a full disk only costs the cache
    return fs, meta


def probe(
    run_dir: str | os.PathLike, overrides: list[str] | None = None, cache_features: bool | None = None
) -> dict[str, Any]:
    """``localssl probe RUN_DIR``: writes and returns ``RUN_DIR/probe.json``. The feature cache
    (``features-<key>.pt``, ~1 GB at width 1/8 on CIFAR-10) is written only when ``cache_features``
    is true, or, when it is ``None``, with the option ``probe.cache_features=true`` (default: not)."""
    run_dir = Path(run_dir)
    for item in overrides or []:
        if not item.split("=", 1)[0].startswith(PROBE_OVERRIDABLE_PREFIXES):
            raise ValueError(f"probe overrides must be probe.*, data.root or train.device; got '{item}'")
    cfg = read_run_config(run_dir, overrides)
    device = resolve_device(cfg.train.device)
    if cache_features is None:
        cache_features = cfg.probe.cache_features
    info = dataset_info(cfg.data.name)
    if info.kind == "sequence":  # audio: one probe row per labelled 10 ms frame
        from localssl.evaluate.frame_probe import compute_frame_features

        fs, meta = compute_frame_features(cfg, run_dir, device)
    else:
        fs, meta = compute_features(cfg, run_dir, device, cache_features)
    result = train_linear_probe(fs, cfg.probe, info.num_classes, cfg.probe.standardize)
    result.update(meta)
    result.update(
        feature_dim=int(fs.val.shape[1]),
        n_train=len(fs.train_y),
        n_val=len(fs.val_y),
        n_test=len(fs.test_y),
        probe=dataclasses.asdict(cfg.probe),
    )
    atomic_write_json(result, run_dir / "probe.json")
    return result
