"""Online linear probe: watch the representation of every layer improve while pretraining runs.

As in solo-learn's online classifier, a linear read-out is trained *alongside* pretraining on detached
features, with its own optimizer, and never sends a gradient into the encoder. Here there is one
read-out per layer and one on all layers concatenated (the offline probe's features, CLAPP++ App. B):
the features of layer ``l`` are its output pooled with the dataset's kernels (``SpatialPool``, as
``localssl probe``), flattened, and standardised by a non-affine ``BatchNorm1d`` (running statistics,
so held-out images are scored with training statistics, like the offline probe's z-scoring).

Each step the read-outs take one Adam step on the cross-entropy of the labelled, *not held-out* images
of the training batch (clean images, no augmentation, encoder in eval mode, no gradient). A fixed set of
``train.online_probe_holdout`` labelled pretraining images is never used to train the read-outs; their
accuracy is the *held-out* accuracy logged every epoch (``metrics.csv``) and every
``train.online_probe_every`` steps (``steps.csv``). Unlabelled images (label ``-1``, e.g. STL-10's
``unlabeled`` split) are skipped; a dataset without labels cannot have an online probe.

The probe draws no random numbers from the global generators (its initialisation uses its own seeded
generator), so a run trains the same encoder bit for bit with the probe on or off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import SpatialPool


def holdout_indices(labels: torch.Tensor, n_holdout: int, seed: int) -> torch.Tensor:
    """The labelled images held out from the read-outs' training: ``n_holdout`` of them, drawn with
    ``seed`` (a generator of its own), at most a fifth of the labelled images."""
    labelled = torch.nonzero(labels >= 0).flatten()
    if len(labelled) == 0:
        raise ValueError(
            "train.online_probe=true needs labelled pretraining images, but every image of this split is "
            "unlabelled (label -1); set train.online_probe=false or pretrain on a labelled split"
        )
    n = min(n_holdout, len(labelled) // 5)
    g = torch.Generator().manual_seed(seed + 7919)
    return labelled[torch.randperm(len(labelled), generator=g)[:n]]


class OnlineProbe(nn.Module):
    """One linear read-out per layer and one on all layers, trained on detached pooled features.

    ``features`` maps a uint8 image batch to the list of per-layer feature maps (no gradient); the
    read-outs are created on the first call, when the feature sizes are known.
    """

    def __init__(
        self,
        encoder: LayeredEncoder,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        kernels: list[int | None],
        num_classes: int,
        lr: float,
        seed: int,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        super().__init__()
        self._frozen = (encoder, normalize)
        self.autocast, self.memory_format = (
            autocast,
            memory_format,
        )  # the training's fast path  # read, never trained here: kept out of this module's state
        self.num_classes, self.lr, self.seed = num_classes, lr, seed
        self.pools = nn.ModuleList(SpatialPool(k) for k in kernels)
        self.norms = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.optimizer: torch.optim.Optimizer | None = None
        self.n_layers = len(kernels)

    @property
    def names(self) -> list[str]:
        """The read-outs, in order: ``l1 … lN`` and ``all``."""
        return [f"l{i + 1}" for i in range(self.n_layers)] + ["all"]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pooled, flattened features of every layer, then their concatenation (encoder in eval mode)."""
        encoder, normalize = self._frozen
        was_training = encoder.training
        encoder.eval()
        try:
            x = normalize(images)
            with self.autocast():
                hs = encoder(x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x)
        finally:
            encoder.train(was_training)
        per_layer = [self.pools[i](h).flatten(1).float() for i, h in enumerate(hs)]
        return [*per_layer, torch.cat(per_layer, dim=1)]

    def _build(self, feats: list[torch.Tensor]) -> None:
        g = torch.Generator().manual_seed(self.seed)
        device = feats[0].device
        for f in feats:
            with torch.random.fork_rng(devices=[]):  # nn.Linear's own init must not advance the run's generator
                head = nn.Linear(f.shape[1], self.num_classes)
            bound = 1.0 / f.shape[1] ** 0.5  # nn.Linear's default init, from the probe's own generator
            with torch.no_grad():
                head.weight.copy_(torch.empty_like(head.weight).uniform_(-bound, bound, generator=g))
                head.bias.copy_(torch.empty_like(head.bias).uniform_(-bound, bound, generator=g))
            self.norms.append(nn.BatchNorm1d(f.shape[1], affine=False, momentum=0.01).to(device))
            self.heads.append(head.to(device))
        self.optimizer = torch.optim.Adam(self.heads.parameters(), lr=self.lr)

    def ensure_built(self, images: torch.Tensor) -> None:
        """Create the read-outs for the feature sizes of ``images`` (before loading a checkpoint)."""
        if not self.heads:
            self._build(self.features(images[:2]))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One Adam step of every read-out on the labelled images given; returns the summed loss (on device)."""
        feats = self.features(images)
        if not self.heads:
            self._build(feats)
        assert self.optimizer is not None
        self.norms.train()
        losses = [F.cross_entropy(head(norm(f)), labels) for f, norm, head in zip(feats, self.norms, self.heads)]
        total = torch.stack(losses).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return total.detach()

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
        """Held-out accuracy (%) of every read-out: ``{'probe_acc_l1': …, 'probe_acc_all': …}``."""
        self.ensure_built(images)
        self.norms.eval()
        correct = torch.zeros(len(self.heads), dtype=torch.long, device=labels.device)
        for s in range(0, len(images), batch_size):
            feats = self.features(images[s : s + batch_size])
            y = labels[s : s + batch_size]
            for i, (f, norm, head) in enumerate(zip(feats, self.norms, self.heads)):
                correct[i] += (head(norm(f)).argmax(1) == y).sum()
        acc = (100.0 * correct.double() / max(len(labels), 1)).tolist()
        return {f"probe_acc_{name}": round(a, 3) for name, a in zip(self.names, acc)}

    def state(self) -> dict:
        """Read-out weights, their statistics and optimizer state (tensors and plain containers only)."""
        return {"modules": self.state_dict(), "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load(self, state: dict, images: torch.Tensor) -> None:
        self.ensure_built(images)
        self.load_state_dict(state["modules"])
        if state["optimizer"] is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
