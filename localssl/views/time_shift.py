"""Time-shift views for audio CPC / GIM / CLAPP (van den Oord et al. 2018; Löwe et al. 2019; Illing et
al. 2021, App. B.2).

Every sequence of the batch gives one random window of ``window`` samples (start at a multiple of the
10 ms ``hop``, as GIM), normalised with the dataset's waveform mean/std; no other augmentation. The
``predictive`` objective then predicts each layer's encoding ``k = 1..steps`` frames ahead along the time
axis of the layer's ``(B, C, T)`` output, negatives from other positions and sequences of the batch.
``labels`` are the window's frame labels ``(B, window // hop)`` (for the frame-level probe).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.data import DatasetInfo
from localssl.registry import VIEWS, ConfigError
from localssl.views.base import ViewBatch

HOP = 160


@dataclasses.dataclass
class TimeShiftConfig:
    name: str = "time_shift"
    window: int | str = "auto"  # samples per training window; auto: the dataset's (GIM: 20480 = 1.28 s)

    def __post_init__(self) -> None:
        if self.window != "auto" and (int(self.window) <= 0 or int(self.window) % HOP):
            raise ConfigError(f"views.window must be a positive multiple of {HOP} samples (10 ms), got {self.window}")


class WaveNormalize(nn.Module):
    """int16 (or float in [-1, 1]) waveforms -> standardised float."""

    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        self.mean, self.std = float(info.mean[0]), float(info.std[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 32768.0 if x.dtype == torch.int16 else x.float()
        return (x - self.mean) / self.std


@VIEWS.register("time_shift", TimeShiftConfig)
class TimeShiftViews(nn.Module):
    def __init__(self, cfg: TimeShiftConfig, info: DatasetInfo) -> None:
        super().__init__()
        if info.kind != "sequence":
            raise ConfigError(
                f"views.name=time_shift needs an audio dataset (synthetic-speech, librispeech), not {info.name}"
            )
        self.cfg = cfg
        self.window = self.window_of(cfg, info)
        self.normalize = WaveNormalize(info)

    @staticmethod
    def window_of(cfg: TimeShiftConfig, info: DatasetInfo) -> int:
        return info.image_size if cfg.window == "auto" else int(cfg.window)

    @staticmethod
    def input_shape(cfg: TimeShiftConfig, info: DatasetInfo) -> tuple[int, int]:
        return (1, TimeShiftViews.window_of(cfg, info))

    @torch.no_grad()
    def forward(self, signals: torch.Tensor, labels: torch.Tensor | None = None) -> ViewBatch:
        b, _, length = signals.shape
        w = self.window
        if length < w:
            raise ValueError(f"sequences of {length} samples are shorter than views.window={w}; lower views.window")
        frames = torch.randint(0, (length - w) // HOP + 1, (b,), device=signals.device)
        idx = frames[:, None] * HOP + torch.arange(w, device=signals.device)
        x = self.normalize(signals[:, 0].gather(1, idx).unsqueeze(1))
        lab = None
        if labels is not None:
            lab = labels.gather(1, frames[:, None] + torch.arange(w // HOP, device=labels.device))
        e = torch.zeros(0, dtype=torch.long, device=x.device)
        return ViewBatch(x=x, pos=e, pos_ref=e, neg=e, neg_ref=e, labels=lab, n_images=b)
