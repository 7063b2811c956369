"""Audio held in memory, with frame labels: the sequence counterpart of :class:`ImageData`.

``signals`` are int16 waveforms ``(N, 1, L)`` (16 kHz) cut into equal chunks, ``labels`` one class per
``hop`` samples (10 ms), ``(N, L // hop)``, -1 where unknown. The trainer reads any dataset through
``images`` and ``labels``; for audio ``images`` is the waveform tensor.
"""

from __future__ import annotations

import dataclasses

import torch

from localssl.data.base import DatasetError


@dataclasses.dataclass
class SequenceData:
    signals: torch.Tensor  # int16 (N, 1, L)
    labels: torch.Tensor  # int64 (N, L // hop), -1 = no label
    classes: list[str]
    hop: int = 160  # samples per label frame
    sample_rate: int = 16000
    speakers: torch.Tensor | None = None  # int64 (N,): the speaker of each sequence, where known
    speaker_names: list[str] | None = None  # speaker id -> description

    def __post_init__(self) -> None:
        if self.signals.dtype != torch.int16 or self.signals.dim() != 3 or self.signals.shape[1] != 1:
            raise DatasetError(f"signals must be int16 (N, 1, L), got {self.signals.dtype} {tuple(self.signals.shape)}")
        n, _, length = self.signals.shape
        if self.labels.shape != (n, length // self.hop):
            raise DatasetError(
                f"labels must be (N, L // hop) = ({n}, {length // self.hop}), got {tuple(self.labels.shape)}"
            )
        if self.speakers is not None and self.speakers.shape != (n,):
            raise DatasetError(f"speakers must be (N,) = ({n},), got {tuple(self.speakers.shape)}")

    @property
    def images(self) -> torch.Tensor:
        """The trainer's name for the stacked inputs (here the waveforms)."""
        return self.signals

    def __len__(self) -> int:
        return len(self.signals)

    def subset(self, index: torch.Tensor) -> SequenceData:
        speakers = None if self.speakers is None else self.speakers[index]
        return dataclasses.replace(self, signals=self.signals[index], labels=self.labels[index], speakers=speakers)

    def speaker_frames(self) -> SequenceData:
        """The same audio with every 10 ms frame labelled by its sequence's speaker id (``data.labels=speaker``:
        a speaker-supervised encoder, GIM's and CPC's supervised speaker baseline)."""
        if self.speakers is None:
            raise DatasetError("data.labels=speaker needs a dataset that records speakers (e.g. espeak-cpu)")
        classes = self.speaker_names or [str(i) for i in range(int(self.speakers.max()) + 1)]
        return dataclasses.replace(self, labels=self.speakers[:, None].expand_as(self.labels).clone(), classes=classes)

    @staticmethod
    def concat(parts: list[SequenceData]) -> SequenceData:
        speakers = None
        if all(p.speakers is not None for p in parts):
            speakers = torch.cat([p.speakers for p in parts])  # type: ignore[misc]
        return dataclasses.replace(
            parts[0],
            signals=torch.cat([p.signals for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            speakers=speakers,
        )


def chunk(audio: torch.Tensor, frame_labels: torch.Tensor, length: int, hop: int) -> tuple[torch.Tensor, ...]:
    """Cut one int16 waveform ``(L,)`` and its per-frame labels into ``(n, 1, length)`` / ``(n, length // hop)``
    non-overlapping chunks (the remainder is dropped)."""
    n = len(audio) // length
    sig = audio[: n * length].view(n, 1, length)
    lab = frame_labels[: n * (length // hop)].view(n, length // hop)
    return sig, lab
