"""The CLAPP++ authors' linear evaluation (``probe.protocol=paper``): ``vision/eval_ssl.py`` of
zihan-wu/local-SSL at commit c4ea488, as their ``scripts/clapp_*.sh`` run it (``--validate``).

What that script does, and what this module does the same way:

- the classifier (``FlattenClassificationModel``) is one ``nn.Linear`` on the frozen encoder's
  concatenated, average-pooled layer outputs (``process_reps`` with ``--no_eval_patch_average
  --customize_loss_pool``); the features are **not z-scored**;
- it is trained on **all** labelled train images (no validation split) with cross-entropy, Adam lr 1e-3
  (weight decay ``probe.weight_decay``: 0, the script's default), batch 32, 300 epochs;
- every epoch, every train image is drawn anew through ``RandomResizedCrop(size, scale=(0.08, 1))`` and a
  horizontal flip (``SimCLREvalDataTransform(aug=True)`` for CIFAR-10 and Tiny ImageNet,
  ``get_simclr_transform(pretrain=False)`` for STL-10), so the features are recomputed through the encoder
  every epoch (here in batches on the device, never stored);
- test images: ``CenterCrop(size)`` (the identity for CIFAR-10 and Tiny ImageNet), for STL-10
  ``Resize(105)`` (``int(96 + 0.1 * 96)``) then ``CenterCrop(96)``;
- with ``--validate`` the script's "validation" loader is its **test** loader: the test accuracy is taken
  after every epoch, "Validation top1" is the best of them (selected on the test set) and "Test top1" the
  accuracy after the last epoch. Both are reported here in percent, as ``test_acc_pct`` (last epoch, "Test top1") and
  ``best_test_acc_selected_on_test_pct`` with ``best_epoch_selected_on_test`` ("Validation top1").

Differences, stated: accuracy is correct / total over the test images (the script averages per-batch
accuracies, which weighs its smaller last batch more: at most 0.16 points on 10 000 test images); crops
are drawn by kornia on the device instead of torchvision on PIL images (same scale and aspect-ratio
ranges, bilinear); datasets the script does not cover (MNIST, image folders) get its CIFAR-10 recipe;
presets with their own read-out (``patch_grid`` views: CLAPP 2021, CPC, GIM) get the same crops before their
patch grid, which is this script's protocol, not those papers' own.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from localssl.config import ProbeConfig, RunConfig
from localssl.data import data_info, load_split
from localssl.evaluate.frozen import frozen_extractor

REFERENCE = "zihan-wu/local-SSL@c4ea488 vision/eval_ssl.py"
PAPER_CROP_SCALE = (0.08, 1.0)  # the script's RandomResizedCrop for the classifier's train images
PAPER_TEST_RESIZE = {"stl10": 105}  # Resize before CenterCrop(96); other datasets: CenterCrop only


def paper_train_transform(size: tuple[int, int]) -> nn.Module:
    """A fresh crop and flip of each image of a float [0, 1] batch, drawn at every call."""
    return nn.Sequential(K.RandomResizedCrop(size, scale=PAPER_CROP_SCALE), K.RandomHorizontalFlip())


def paper_test_transform(dataset: str, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """STL-10: ``Resize(105)`` then ``CenterCrop(96)`` of a float [0, 1] batch (torchvision's centre:
    top = round((105 - 96) / 2) = 4); ``None`` (images as they are) for the other datasets."""
    resize = PAPER_TEST_RESIZE.get(dataset)
    if resize is None:
        return None
    h, w = size

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
        top, left = round((resize - h) / 2.0), round((resize - w) / 2.0)  # torchvision's CenterCrop
        return x[..., top : top + h, left : left + w]

    return transform


@dataclasses.dataclass
class _Head:
    columns: slice
    clf: nn.Linear
    opt: torch.optim.Optimizer


def train_paper_probe(
    encode: Callable[[torch.Tensor], torch.Tensor],
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    train_transform: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    blocks: dict[str, slice] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Linear classifiers on ``encode``'s features of freshly augmented train images, one per column
    block of the features (``blocks``, e.g. one per layer and ``"all"``; default: all columns), trained
    side by side on the same crops: per epoch, a seeded permutation of the train images in batches of
    ``probe.batch_size``, each batch's loss the mean cross-entropy, one Adam step per batch and classifier.
    The test accuracy is taken after every epoch; returns per block the last epoch's (``test_acc_pct``) and,
    labelled as such, the best epoch's (``best_test_acc_selected_on_test_pct``)."""
    torch.manual_seed(cfg.seed)  # the crops (kornia draws from torch's generator)
    order = torch.Generator().manual_seed(cfg.seed)
    d = test_features.shape[1]
    blocks = blocks or {"all": slice(0, d)}
    heads = {}
    for name, cols in blocks.items():
        with torch.random.fork_rng(devices=[]):  # each classifier's init from probe.seed alone
            torch.manual_seed(cfg.seed)
            clf = nn.Linear(cols.stop - cols.start, num_classes).to(device)
        opt = torch.optim.Adam(clf.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        heads[name] = _Head(cols, clf, opt)
    test_x, test_y = test_features.to(device), test_labels.to(device)
    bs = cfg.batch_size
    chunk = bs * max(1, 256 // bs)  # images encoded at once; the classifier still steps every bs images
    n = len(train_labels)
    history: dict[str, list[dict[str, Any]]] = {name: [] for name in heads}
    bar = tqdm(range(cfg.epochs), desc="paper probe epochs", leave=False, disable=not progress, file=sys.stderr)
    for epoch in bar:
        perm = torch.randperm(n, generator=order)
        loss_sum = {name: torch.zeros((), device=device) for name in heads}
        correct = {name: torch.zeros((), device=device, dtype=torch.long) for name in heads}
        for s in range(0, n, chunk):
            idx = perm[s : s + chunk]
            with torch.no_grad():
                x = train_transform(train_images[idx].to(device).float().div_(255.0)).clamp_(0, 1)
                z = encode(x).float()
            y = train_labels[idx].to(device)
            for b in range(0, len(idx), bs):
                zb, yb = z[b : b + bs], y[b : b + bs]
                for name, head in heads.items():
                    logits = head.clf(zb[:, head.columns])
                    loss = F.cross_entropy(logits, yb)
                    head.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    head.opt.step()
                    loss_sum[name] += loss.detach() * len(yb)
                    correct[name] += (logits.detach().argmax(1) == yb).sum()
        for name, head in heads.items():
            with torch.no_grad():
                hits = sum(
                    int((head.clf(test_x[t : t + 4096, head.columns]).argmax(1) == test_y[t : t + 4096]).sum())
                    for t in range(0, len(test_y), 4096)
                )
            history[name].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": float(loss_sum[name]) / n,
                    "train_acc_on_crops_pct": 100.0
                    * int(correct[name])
                    / n,  # the script's "Overall accuracy for this epoch"
                    "test_acc_pct": 100.0 * hits / len(test_y),
                }
            )
        if "all" in history:
            bar.set_postfix(test_acc=f"{history['all'][-1]['test_acc_pct']:.1f}%")
    out = {}
    for name, hist in history.items():
        best = max(hist, key=lambda row: row["test_acc_pct"])  # the first of equal ones
        out[name] = {
            "test_acc_pct": hist[-1]["test_acc_pct"],
            "best_test_acc_selected_on_test_pct": best["test_acc_pct"],
            "best_epoch_selected_on_test": best["epoch"],
            "feature_dim": blocks[name].stop - blocks[name].start,
            "history": hist,
        }
    return out


def layer_blocks(layers: list[int], dims: list[int]) -> dict[str, slice]:
    """Column block of each layer (1-based names) in the concatenated features, and ``"all"``."""
    blocks, start = {}, 0
    for layer, dim in zip(layers, dims):
        blocks[str(layer)] = slice(start, start + dim)
        start += dim
    blocks["all"] = slice(0, start)
    return blocks


def paper_probe(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    per_layer: bool = False,
    progress: bool = False,
    weights: Path | None = None,
) -> dict[str, Any]:
    """The paper's protocol on the run in ``run_dir`` (or the exported file ``weights``): its result
    (``per_layer``: one result per layer and ``"all"`` under ``"results"``) with the checkpoint epoch, layers,
    split sizes and settings."""
    info = data_info(cfg.data)
    if info.kind != "image":
        raise ValueError(
            f"probe.protocol=paper is the CLAPP++ image protocol; {cfg.data.name} is not an image dataset"
            " (use probe.protocol=honest)"
        )
    extractor, meta = frozen_extractor(cfg, run_dir, device, weights)
    train = load_split(cfg.data.name, info.probe_train_split, cfg.data.root, info)
    test = load_split(cfg.data.name, info.test_split, cfg.data.root, info)
    train_images, train_labels = train.images, train.labels
    if cfg.probe.train_subset is not None:  # quick runs: a seeded subset of the labelled images
        keep = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(cfg.probe.seed))
        keep = keep[: cfg.probe.train_subset]
        train_images, train_labels = train_images[keep], train_labels[keep]
    size = tuple(train_images.shape[-2:])
    test_features = extractor.extract(
        test.images, transform=paper_test_transform(cfg.data.name, size), progress=progress, desc="test features"
    )
    dims = extractor.layer_dims(train_images[:2].to(device)) if per_layer else [test_features.shape[1]]
    blocks = layer_blocks(meta["layers"], dims) if per_layer else None
    results = train_paper_probe(
        extractor,
        train_images,
        train_labels,
        test_features,
        test.labels,
        info.num_classes,
        cfg.probe,
        paper_train_transform(size),
        device,
        blocks,
        progress,
    )
    common = {
        "protocol": "paper",
        "reference": REFERENCE,
        **meta,
        "n_train": len(train_labels),
        "n_val": 0,
        "n_test": len(test.labels),
        "probe": dataclasses.asdict(cfg.probe),
    }
    if per_layer:
        return {**common, "results": results}
    return {**results["all"], **common}
