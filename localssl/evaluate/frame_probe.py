"""Frame-level linear probe of a frozen audio encoder (phone classification, GIM / CLAPP 2021 App. B.2).

Every chunk of the probe's train and test splits is encoded whole; the chosen layers' outputs are
average-pooled in time to the label rate (one vector per 10 ms frame; the GIM encoder's last layers are
already at that rate) and concatenated. Frames labelled -1 are dropped. Chunks, not frames, are held out
for validation, so that neighbouring frames never straddle train and validation.

``probe.target=speaker`` is GIM's speaker probe (Löwe et al. 2019, Sec. 4.2): the chosen layers' outputs
averaged over the whole utterance, one row per utterance, labelled with its speaker (datasets that
record speakers, e.g. ``espeak-cpu``); train and test hold other utterances of the same speakers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from localssl.build import build_encoder
from localssl.config import RunConfig
from localssl.data import dataset_info, load_split
from localssl.evaluate.features import FeatureSet, parse_layers
from localssl.evaluate.frozen import encoder_state
from localssl.linear_probe import say_capped
from localssl.views.time_shift import WaveNormalize


@torch.no_grad()
def frame_features(
    encoder,
    normalize,
    signals: torch.Tensor,
    labels: torch.Tensor,
    layers: list[int],
    device: torch.device,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_frames, D)`` features and ``(n_frames,)`` labels of the labelled frames of ``signals``."""
    encoder.eval()
    feats, ys = [], []
    n_frames = labels.shape[1]
    for s in range(0, len(signals), batch_size):
        hs = encoder(normalize(signals[s : s + batch_size].to(device)))
        f = torch.cat([F.adaptive_avg_pool1d(hs[i], n_frames) for i in layers], dim=1)  # (b, D, frames)
        y = labels[s : s + batch_size].to(device)
        keep = y >= 0
        feats.append(f.transpose(1, 2)[keep].cpu())
        ys.append(y[keep].cpu())
    return torch.cat(feats), torch.cat(ys)


@torch.no_grad()
def utterance_features(
    encoder, normalize, signals: torch.Tensor, layers: list[int], device: torch.device, batch_size: int = 16
) -> torch.Tensor:
    """``(n_utterances, D)``: the chosen layers' outputs averaged over time (GIM's speaker probe)."""
    encoder.eval()
    feats = []
    for s in range(0, len(signals), batch_size):
        hs = encoder(normalize(signals[s : s + batch_size].to(device)))
        feats.append(torch.cat([hs[i].mean(dim=2) for i in layers], dim=1).cpu())
    return torch.cat(feats)


def compute_frame_features(cfg: RunConfig, run_dir: Path, device: torch.device, weights: Path | None = None):
    """The frame features of the probe's splits through the run's encoder (or the exported file ``weights``)."""
    info = dataset_info(cfg.data.name)
    state, weights_meta = encoder_state(cfg, run_dir, weights)
    encoder = build_encoder(cfg, info)
    encoder.load_state_dict(state)
    encoder.to(device)
    layers = parse_layers(cfg.probe.layers, len(encoder))
    normalize = WaveNormalize(info)
    train = load_split(cfg.data.name, info.probe_train_split, cfg.data.root)
    test = load_split(cfg.data.name, info.test_split, cfg.data.root)
    g = torch.Generator().manual_seed(cfg.probe.seed)
    perm = torch.randperm(len(train), generator=g)
    n_val = min(cfg.probe.val_size, len(train) // 5)
    say_capped("probe: validation set", n_val, cfg.probe.val_size, len(train), "probe.val_size")
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if cfg.probe.train_subset is not None:
        train_idx = train_idx[: cfg.probe.train_subset]

    target = cfg.probe.target
    if target not in ("frames", "speaker"):
        raise ValueError(f"probe.target must be frames or speaker, got '{target}'")
    if target == "speaker" and (train.speakers is None or test.speakers is None):
        raise ValueError(f"probe.target=speaker needs a dataset that records speakers; {cfg.data.name} does not")

    def feats(data, idx):
        if target == "speaker":
            return utterance_features(encoder, normalize, data.signals[idx], layers, device), data.speakers[idx]
        return frame_features(encoder, normalize, data.signals[idx], data.labels[idx], layers, device)

    x_tr, y_tr = feats(train, train_idx)
    x_va, y_va = feats(train, val_idx)
    x_te, y_te = feats(test, torch.arange(len(test)))
    meta: dict[str, Any] = {
        **weights_meta,
        "layers": [i + 1 for i in layers],
        "level": "utterance" if target == "speaker" else "frame",
        "num_classes": len(train.speaker_names or []) if target == "speaker" else info.num_classes,
    }
    return FeatureSet(train=[x_tr], train_y=y_tr, val=x_va, val_y=y_va, test=x_te, test_y=y_te), meta
