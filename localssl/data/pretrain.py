"""The images a run pretrains on: its dataset's pretraining split, optionally a seeded subset."""

from __future__ import annotations

import torch

from localssl.config import RunConfig
from localssl.data.base import DatasetError, ImageData
from localssl.data.catalog import DatasetInfo, data_info, load_split
from localssl.data.sequence import SequenceData


def load_pretrain_data(cfg: RunConfig, info: DatasetInfo | None = None) -> ImageData:
    """``data.pretrain_split`` of ``data.name`` (``auto``: the dataset's own pretraining split), cut to
    ``data.train_subset`` images drawn with ``train.seed``; ``data.labels=speaker`` labels audio frames by speaker."""
    info = info if info is not None else data_info(cfg.data)
    split = info.pretrain_split if cfg.data.pretrain_split == "auto" else cfg.data.pretrain_split
    data = load_split(cfg.data.name, split, cfg.data.root, info)
    if cfg.data.labels == "speaker":
        if not isinstance(data, SequenceData):
            raise DatasetError(f"data.labels=speaker is for audio with speakers; {cfg.data.name} is not audio")
        data = data.speaker_frames()
    if cfg.data.train_subset is not None and cfg.data.train_subset < len(data):
        g = torch.Generator().manual_seed(cfg.train.seed)
        data = data.subset(torch.randperm(len(data), generator=g)[: cfg.data.train_subset])
    return data
