"""Online probe: the offline honest probe, run on a fixed labelled subset while pretraining goes on.

Every ``train.online_probe_every`` steps and at every epoch's end (solo-learn shows an online read-out in
every run; its read-out, an SGD head trained on each batch, disagrees with the offline probe), this probe
runs :mod:`localssl.evaluate.probe`'s protocol in small:

1. the features of a fixed set of labelled pretraining images are extracted with the current encoder, as
   the offline probe extracts them (:class:`~localssl.linear_probe.FeatureExtractor`: eval mode, no
   gradient, no augmentation, every layer pooled with the dataset's kernels, flattened, concatenated);
2. one linear read-out per layer and one on all layers are fitted from scratch by the offline probe's own
   classifier (:func:`~localssl.linear_probe.train_linear_probes` with the ``probe.*`` settings: z-scored
   features, Adam, the epoch with the best validation accuracy kept; the read-outs side by side, each as if
   fitted alone, as ``localssl probe --per-layer``) on ``train.online_probe_train`` images (a tenth of them the
   validation part, as the offline probe's 5000 of 50 000);
3. the chosen read-outs score ``train.online_probe_holdout`` other labelled pretraining images, never
   fitted on: the ``probe_acc_pct_*`` columns (percent) of ``steps.csv`` and ``metrics.csv``.

By default the read-outs are fitted on 45 000 labelled pretraining images (a tenth of them validation) and
score 5000 others: on CIFAR-10, the offline probe's numbers of images with the test set's place taken by
held-out pretraining images, so the online curve reads what ``localssl probe`` would. The linear probe of
8192 features is data-hungry, so fitting on fewer images reads lower than the offline probe, by the most
where it is cheapest (``benchmarks/RESULTS.md``, "The online probe's fit size"; width 1/4, the 10 000 test
images, offline probe 61.8 % at random init and 65.9 % after 10 minutes of CLAPP++): fitted on 10 000 images
it reads 6.2 and 6.3 points lower, on 20 000 2.7 and 3.1, on 30 000 1.9 (CLAPP++). A smaller
``train.online_probe_train`` buys a cheaper, lower curve to compare runs and layers against each other.

Its accuracy is a function of the encoder's weights at that step alone (the image sets and the classifier
are seeded by ``train.seed`` and ``probe.seed``), so a resumed run logs the same numbers, and it draws no
number from the global generators: a run trains the same encoder bit for bit with the probe on or off. The
cost is the extraction of ``online_probe_train + online_probe_holdout`` images and the fits, once per
scoring (``localssl bench --suite online-probe``). Unlabelled images (label ``-1``) are never drawn.
"""

from __future__ import annotations

import time

import torch

from localssl.config import ProbeConfig
from localssl.linear_probe import FeatureExtractor, FeatureSet, feature_dtype, say_capped, train_linear_probes


def holdout_indices(labels: torch.Tensor, n_holdout: int, seed: int) -> torch.Tensor:
    """The labelled images the read-outs are scored on and never fitted on: ``n_holdout`` of them, drawn
    with ``seed`` (a generator of its own), at most a fifth of the labelled images."""
    labelled = torch.nonzero(labels.cpu() >= 0).flatten()
    if len(labelled) == 0:
        raise ValueError(
            "train.online_probe=true needs labelled pretraining images, but every image of this split is "
            "unlabelled (label -1); set train.online_probe=false or pretrain on a labelled split"
        )
    n = min(n_holdout, len(labelled) // 5)
    g = torch.Generator().manual_seed(seed + 7919)
    return labelled[torch.randperm(len(labelled), generator=g)[:n]]


def fit_indices(labels: torch.Tensor, held: torch.Tensor, n_fit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of the ``n_fit`` labelled images the read-outs are fitted on (all the
    labelled ones outside ``held`` if fewer), drawn with a generator of their own; a tenth (at least one)
    is the validation part that picks the classifier's epoch."""
    free = labels.cpu() >= 0
    free[held.cpu()] = False
    pool = torch.nonzero(free).flatten()
    g = torch.Generator().manual_seed(seed + 104729)
    chosen = pool[torch.randperm(len(pool), generator=g)[:n_fit]]
    n_val = max(len(chosen) // 10, 1) if len(chosen) > 1 else 0
    return chosen[n_val:], chosen[:n_val]


class OnlineProbe:
    """The offline honest probe of the current encoder on fixed image sets: :meth:`score` extracts, fits and
    scores every read-out (``l1 … lN`` and ``all``); it is scored at most once per global step, and once in all
    for a ``frozen`` encoder (a rule that trains nothing: the same weights give the same numbers)."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        probe: ProbeConfig,
        num_classes: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        n_fit: int,
        n_holdout: int,
        seed: int,
        frozen: bool = False,
    ) -> None:
        self.extractor, self.probe, self.num_classes = extractor, probe, num_classes
        self.frozen = frozen  # the encoder never changes (random init): its first scoring holds at every step
        self.images, self.labels = images, labels
        self.held = holdout_indices(labels, n_holdout, seed)
        n_labelled = int((labels >= 0).sum())
        say_capped("online probe: held-out set", len(self.held), n_holdout, n_labelled, "train.online_probe_holdout")
        self.train_idx, self.val_idx = fit_indices(labels, self.held, n_fit, seed)
        if len(self.train_idx) == 0:
            raise ValueError(
                "train.online_probe=true needs labelled pretraining images outside the held-out ones to fit "
                "the read-outs on; there are none here: pretrain on more labelled images"
            )
        self.n_layers = len(extractor.layers)
        self.seconds = 0.0  # spent scoring, in all
        self.last_seconds = {"extract": 0.0, "fit": 0.0}  # the last scoring's time, by part
        self._last: tuple[int, dict[str, float], dict] | None = None  # (global step, accuracy, read-outs)

    @property
    def names(self) -> list[str]:
        """The read-outs, in order: ``l1 … lN`` and ``all``."""
        return [f"l{i + 1}" for i in range(self.n_layers)] + ["all"]

    def _features(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Features of the images ``idx`` (on the CPU) and each layer's width in them; encoder in eval mode."""
        encoder = self.extractor.encoder
        was_training = encoder.training
        self.extractor.eval()
        try:
            device = next(encoder.parameters()).device
            dims = self.extractor.layer_dims(self.images[:2].to(device))
            x = self.extractor.extract(self.images[idx.to(self.images.device)], dtype=feature_dtype(sum(dims)))
        finally:
            encoder.train(was_training)
        return x, dims

    def score(self, global_step: int) -> dict[str, float]:
        """Held-out accuracy (%) of every read-out fitted on the encoder as it is at ``global_step``:
        ``{'probe_acc_pct_l1': …, 'probe_acc_pct_all': …}`` (percent) (computed once per step, then remembered)."""
        if self._last is not None and self._last[0] == global_step:
            return self._last[1]
        if self._last is not None and self.frozen:  # the same weights: extracting and fitting again gives these
            self._last = (global_step, *self._last[1:])
            return self._last[1]
        t0 = time.perf_counter()
        idx = torch.cat([self.train_idx, self.val_idx, self.held])
        x, dims = self._features(idx)
        device = next(self.extractor.encoder.parameters()).device  # the fits run where the encoder does
        x, y = x.to(device), self.labels[idx.to(self.labels.device)].to(device)
        t1 = time.perf_counter()
        n_tr, n_va = len(self.train_idx), len(self.val_idx)
        fs = FeatureSet(
            train=[x[:n_tr]],
            train_y=y[:n_tr],
            val=x[n_tr : n_tr + n_va],
            val_y=y[n_tr : n_tr + n_va],
            test=x[n_tr + n_va :],
            test_y=y[n_tr + n_va :],
        )
        starts = [sum(dims[:i]) for i in range(len(dims) + 1)]
        blocks = {f"l{i + 1}": slice(starts[i], starts[i + 1]) for i in range(len(dims))}
        blocks["all"] = slice(0, starts[-1])
        fits = train_linear_probes(
            fs, self.probe, self.num_classes, blocks, self.probe.standardize, keep_classifier=True
        )
        acc = {f"probe_acc_pct_{name}": round(fits[name]["test_acc_pct"], 3) for name in self.names}
        readouts = {name: {k: v.cpu() for k, v in fits[name]["classifier"].items()} for name in self.names}
        self._last = (global_step, acc, readouts)
        t2 = time.perf_counter()
        self.last_seconds = {"extract": t1 - t0, "fit": t2 - t1}
        self.seconds += t2 - t0
        return acc

    def state(self) -> dict:
        """The last scoring: its global step, accuracies and fitted read-outs (tensors and plain containers
        only; a resume does not need it, the next scoring depends on the encoder alone)."""
        if self._last is None:
            return {"global_step": None, "accuracy": {}, "readouts": {}}
        step, acc, readouts = self._last
        return {"global_step": step, "accuracy": dict(acc), "readouts": readouts}

    def load(self, state: dict) -> None:
        if state.get("global_step") is not None:  # a checkpoint of this probe (older ones held SGD heads)
            self._last = (int(state["global_step"]), dict(state["accuracy"]), state["readouts"])
