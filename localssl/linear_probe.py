"""The linear probe both read-outs fit: ``localssl probe`` after training (:mod:`localssl.evaluate.probe`) and
the online probe during it (:mod:`localssl.online_probe`), so the two measure the same thing.

* :class:`FeatureExtractor`: every chosen layer's output pooled with the dataset's kernels, flattened and
  concatenated (CLAPP++ App. B: "read-out concatenated representations from multiple layers").
* :class:`FeatureSet`: the features of a probe's train, validation and test images.
* :func:`train_linear_probe`: a linear classifier on z-scored features, Adam on cross-entropy, the epoch
  with the best *validation* accuracy kept and the test images scored once (``probe.protocol=honest``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from localssl.config import ProbeConfig
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import SpatialPool
from localssl.views.readout import LayerReadout


@dataclasses.dataclass
class FeatureSet:
    train: list[torch.Tensor]  # one or more (augmented) copies, (n_train, D)
    train_y: torch.Tensor
    val: torch.Tensor
    val_y: torch.Tensor
    test: torch.Tensor
    test_y: torch.Tensor


def columns(fs: FeatureSet, cols: slice) -> FeatureSet:
    """The same images' features restricted to the columns ``cols`` (views, no copy)."""
    return FeatureSet(
        train=[x[:, cols] for x in fs.train],
        train_y=fs.train_y,
        val=fs.val[:, cols],
        val_y=fs.val_y,
        test=fs.test[:, cols],
        test_y=fs.test_y,
    )


def feature_dtype(n_features: int) -> torch.dtype:
    """How the probes store features: half precision above 8192 columns (memory), else single."""
    return torch.float16 if n_features > 8192 else torch.float32


class FeatureExtractor(LayerReadout):
    """uint8 images -> concatenated pooled features of the chosen layers."""

    def __init__(
        self,
        encoder: LayeredEncoder,
        normalize: nn.Module,
        kernels: list[int | None],
        layers: list[int],
    ) -> None:
        super().__init__(encoder, normalize, layers)
        self.pools = nn.ModuleList(SpatialPool(k) for k in kernels)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hs = self.encoder(self.normalize(images))
        return torch.cat([self.pools[i](hs[i]).flatten(1) for i in self.layers], dim=1)


def train_linear_probe(
    fs: FeatureSet,
    cfg: ProbeConfig,
    num_classes: int,
    standardize: bool = True,
    progress: bool = False,
    keep_classifier: bool = False,
) -> dict[str, Any]:
    """Adam on cross-entropy; the best-validation epoch's classifier is tested once. It runs on the
    features' device and draws no number from the global generators (its own, seeded by ``probe.seed``).
    ``keep_classifier``: the result also holds the chosen classifier and its standardisation
    (``"classifier"``: ``weight``, ``bias``, ``mean``, ``std`` tensors)."""
    g = torch.Generator().manual_seed(cfg.seed)
    d = fs.val.shape[1]
    device = fs.val.device
    if standardize:
        ref = fs.train[0].float()
        mean, std = ref.mean(0), ref.std(0).clamp_min(1e-6)
        del ref
    else:
        mean, std = torch.zeros(d, device=device), torch.ones(d, device=device)
    with torch.random.fork_rng(devices=[]):  # the init depends on probe.seed only, not on what ran before
        torch.manual_seed(cfg.seed)
        clf = nn.Linear(d, num_classes)
    clf.to(device)
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
    for epoch in tqdm(range(cfg.epochs), desc="probe epochs", leave=False, disable=not progress, file=sys.stderr):
        x_all = fs.train[epoch % len(fs.train)]
        perm = torch.randperm(n, generator=g).to(device)
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
    out = {
        "test_acc": accuracy(fs.test, fs.test_y),
        "val_acc": best[0],
        "best_epoch": best[1],
        "train_acc": accuracy(fs.train[0], fs.train_y),
        "history": history,
    }
    if keep_classifier:
        out["classifier"] = {"weight": clf.weight.detach(), "bias": clf.bias.detach(), "mean": mean, "std": std}
    return out
