"""Where a mid-epoch checkpoint left its epoch: enough to continue it bit-identically.

The epoch's permutation is rebuilt from ``(seed, epoch)``; what cannot be rebuilt is stored: the
steps done, the seconds spent, the state of the generators the views and rules draw from at that
moment, and the epoch's partial metric sums (up to the last logged row, and the window since).

Under ``torchrun`` every process draws from its own generators (data-parallel: its slice's augmentation;
layer-parallel: its stage's objectives): ``ranks_rng`` holds every process's, in rank order, and ``rng``
rank 0's (the one-process format, which a resume on one process reads). Data-parallel ranks also sum their own
slice's metrics (averaged over ranks only when a row or the epoch's row is written): ``ranks_sums`` and
``ranks_window`` hold every rank's, so that the resumed epoch's ``metrics.csv`` row is the uninterrupted one's."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators the views and rules draw from (uint8 tensors, loadable with weights_only)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


@dataclasses.dataclass
class EpochPosition:
    """The state of epoch ``epoch`` (0-based) after ``step`` of its steps."""

    epoch: int
    step: int
    seconds: float
    rng: dict[str, torch.Tensor]
    sums: dict[str, torch.Tensor]  # the steps up to the last logged row
    window: dict[str, torch.Tensor]  # the steps since
    window_steps: int | None = None  # how many steps ``window`` sums (None: written before it was stored)
    ranks_rng: list[dict[str, torch.Tensor]] | None = None  # every process's generators (under torchrun)
    ranks_sums: list[dict[str, torch.Tensor]] | None = None  # every data-parallel rank's own ``sums``
    ranks_window: list[dict[str, torch.Tensor]] | None = None  # and ``window``

    def to_state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochPosition:
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            seconds=float(state["seconds"]),
            rng=dict(state["rng"]),
            sums=dict(state.get("sums", {})),
            window=dict(state.get("window", {})),
            window_steps=int(state["window_steps"]) if state.get("window_steps") is not None else None,
            ranks_rng=_per_rank(state, "ranks_rng"),
            ranks_sums=_per_rank(state, "ranks_sums"),
            ranks_window=_per_rank(state, "ranks_window"),
        )

    def check_fits(self, epoch: int, n_steps: int) -> None:
        """Refuse to continue an epoch of another length (a changed ``train.max_steps_per_epoch`` or data)."""
        if self.epoch != epoch or not 0 < self.step < n_steps:
            raise ValueError(
                f"the checkpoint stopped after step {self.step} of epoch {self.epoch + 1}, which does not "
                f"fit epoch {epoch + 1} of {n_steps} steps: resume with the run's own "
                "train.max_steps_per_epoch and data"
            )

    def rank_rng(self, rank: int = 0, size: int = 1) -> dict[str, torch.Tensor] | None:
        """The generators process ``rank`` of ``size`` continues from: its own when the checkpoint was written
        by as many processes, rank 0's for rank 0 otherwise, ``None`` (keep the epoch's seed) for the others."""
        if self.ranks_rng is not None and len(self.ranks_rng) == size:
            return self.ranks_rng[rank]
        return self.rng if rank == 0 else None

    def rank_sums(self, rank: int = 0, size: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The metric sums and window process ``rank`` of ``size`` continues from: its own when the checkpoint
        holds every rank's (written by as many data-parallel ranks), else ``sums`` and ``window``."""
        if self.ranks_sums is not None and self.ranks_window is not None and len(self.ranks_sums) == size:
            return self.ranks_sums[rank], self.ranks_window[rank]
        return self.sums, self.window

    def restore_rng(self, device: torch.device, rank: int = 0, size: int = 1) -> None:
        rng = self.rank_rng(rank, size)
        if rng is None:
            return
        torch.set_rng_state(rng["cpu"].cpu())  # map_location moved it to the device
        if device.type == "cuda":
            if "cuda" not in rng:
                raise ValueError("this mid-epoch checkpoint was written on the CPU: resume it with train.device=cpu")
            torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def _per_rank(state: dict[str, Any], key: str) -> list[dict[str, torch.Tensor]] | None:
    return [dict(r) for r in state[key]] if state.get(key) is not None else None
