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


def zscore_rows(
    x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``(x[idx].float() - mean) / std`` written into ``out`` (float32, ``len(idx)`` rows): the rows gathered and
    z-scored in place, the same numbers bit for bit."""
    if x.dtype == out.dtype:
        torch.index_select(x, 0, idx, out=out)
    else:
        out.copy_(x[idx])
    return out.sub_(mean).div_(std)


def say_capped(what: str, got: int, asked: int, n: int, key: str) -> None:
    """One line on stderr when a held-out set got fewer images than ``key`` asked for (it is at most a fifth
    of the ``n`` labelled images), so a small data set's probe does not score or select quietly on few."""
    if got < asked:
        print(
            f"{what} capped at {got} images, a fifth of the {n} labelled ones ({key}={asked} asks for more)",
            file=sys.stderr,
        )


def train_linear_probe(
    fs: FeatureSet,
    cfg: ProbeConfig,
    num_classes: int,
    standardize: bool = True,
    progress: bool = False,
    keep_classifier: bool = False,
) -> dict[str, Any]:
    """Adam on cross-entropy; the best-validation epoch's classifier is tested once (one classifier on all
    the columns: :func:`train_linear_probes` with one block)."""
    blocks = {"all": slice(0, fs.val.shape[1])}
    return train_linear_probes(fs, cfg, num_classes, blocks, standardize, progress, keep_classifier)["all"]


def train_linear_probes(
    fs: FeatureSet,
    cfg: ProbeConfig,
    num_classes: int,
    blocks: dict[str, slice],
    standardize: bool = True,
    progress: bool = False,
    keep_classifier: bool = False,
) -> dict[str, dict[str, Any]]:
    """One linear classifier on each block of columns (e.g. each layer's, and all), fitted side by side: each
    is what it would be fitted alone (its own init from ``probe.seed``, its own Adam state, the same batches,
    its own best-validation epoch), but every batch is gathered and z-scored once for all of them.

    Adam on cross-entropy; the best-validation epoch's classifier is tested once. It runs on the features'
    device and draws no number from the global generators (its own, seeded by ``probe.seed``).
    ``keep_classifier``: each result also holds the chosen classifier and its standardisation
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
    clfs = {}
    for name, cols in blocks.items():
        with torch.random.fork_rng(devices=[]):  # the init depends on probe.seed only, not on what ran before
            torch.manual_seed(cfg.seed)
            clfs[name] = nn.Linear(cols.stop - cols.start, num_classes).to(device)
    params = [p for clf in clfs.values() for p in clf.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)  # per-element: as one Adam each

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        if len(y) == 0:
            return dict.fromkeys(clfs, float("nan"))
        correct = dict.fromkeys(clfs, 0)
        with torch.no_grad():
            for s in range(0, len(x), 4096):
                z = (x[s : s + 4096].float() - mean) / std
                for name, clf in clfs.items():
                    correct[name] += int((clf(z[:, blocks[name]]).argmax(1) == y[s : s + 4096]).sum())
        return {name: 100.0 * c / len(y) for name, c in correct.items()}  # percent

    def snapshot(clf: nn.Linear) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in clf.state_dict().items()}

    best = {name: (-1.0, 0, snapshot(clf)) for name, clf in clfs.items()}
    history: dict[str, list[dict[str, Any]]] = {name: [] for name in clfs}
    n = len(fs.train_y)
    batch = torch.empty(min(cfg.batch_size, n), d, device=device)  # reused by zscore_rows: no allocation per step
    for epoch in tqdm(range(cfg.epochs), desc="probe epochs", leave=False, disable=not progress, file=sys.stderr):
        x_all = fs.train[epoch % len(fs.train)]
        perm = torch.randperm(n, generator=g).to(device)
        total = dict.fromkeys(clfs, 0.0)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            z, y = zscore_rows(x_all, idx, mean, std, out=batch[: len(idx)]), fs.train_y[idx]
            losses = {name: F.cross_entropy(clf(z[:, blocks[name]]), y) for name, clf in clfs.items()}
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()  # each classifier's gradient is its own loss's
            opt.step()
            for name, loss in losses.items():
                total[name] += loss.item() * len(idx)
        val_acc = accuracy(fs.val, fs.val_y)
        for name, clf in clfs.items():
            history[name].append({"epoch": epoch + 1, "train_loss": total[name] / n, "val_acc_pct": val_acc[name]})
            if val_acc[name] > best[name][0] or len(fs.val_y) == 0:
                best[name] = (val_acc[name], epoch + 1, snapshot(clf))
    for name, clf in clfs.items():
        clf.load_state_dict(best[name][2])
    test_acc, train_acc = accuracy(fs.test, fs.test_y), accuracy(fs.train[0], fs.train_y)
    out = {}
    for name, clf in clfs.items():
        out[name] = {
            "test_acc_pct": test_acc[name],
            "val_acc_pct": best[name][0],
            "best_epoch": best[name][1],
            "train_acc_pct": train_acc[name],
            "history": history[name],
        }
        if keep_classifier:
            cols = blocks[name]
            out[name]["classifier"] = {
                "weight": clf.weight.detach(),
                "bias": clf.bias.detach(),
                "mean": mean[cols],
                "std": std[cols],
            }
    return out
