"""Step metrics: running sums kept on the device, the logged row, and the watches on the loss.

Nothing here synchronises the host with the device per step: the sums stay on the device and are read
once per logged row (``train.log_every`` steps)."""

from __future__ import annotations

import math
import sys
from typing import Any

import torch


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept untouched."""


class DeviceSums:
    """Running sums of the rule's per-step metrics, kept on the training device: one ``stack`` and one
    ``add`` per step whatever the number of metrics, and no host synchronisation (no ``.item()``,
    ``float()`` or ``bool()`` of a device tensor); :meth:`read` copies them to the host, once per
    logged row. A step whose metric names differ from the sums' (no rule does that today) is added
    name by name."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()
        self.total: torch.Tensor | None = None

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        if not metrics:
            return
        keys = tuple(metrics)
        vec = torch.stack([v.detach().float() for v in metrics.values()])
        if self.total is None:
            self.keys, self.total = keys, vec
        elif keys == self.keys:
            self.total += vec
        else:
            merged = self.as_dict()
            for k, v in zip(keys, vec):
                merged[k] = merged[k] + v if k in merged else v
            self.keys, self.total = tuple(merged), torch.stack(list(merged.values()))

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.total is None else dict(zip(self.keys, self.total))

    @staticmethod
    def read(values: dict[str, torch.Tensor]) -> list[float]:
        """The values on the host, in one device-to-host copy."""
        return torch.stack(list(values.values())).tolist() if values else []


def check_finite(metrics: dict[str, torch.Tensor], where: str, kept: str) -> None:
    """Raise :class:`NonFiniteLossError` if a loss among ``metrics`` is NaN/inf (one host sync: call it
    once per logged row). ``kept`` says which checkpoint survives."""
    losses = {k: v for k, v in metrics.items() if k.startswith("loss")}
    if not losses:
        return
    stacked = torch.stack([v.float() for v in losses.values()])
    if not bool(torch.isfinite(stacked).all()):
        bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
        raise NonFiniteLossError(
            f"non-finite loss ({', '.join(bad)}) at {where}; {kept}. "
            "Fix: lower train.lr, use train.precision=fp32, or check the input data."
        )


class DivergenceWatch:
    """Warn (once per run) when the summed magnitude of a logged row's losses grows by two orders of
    magnitude over its running median (over the smallest row logged, before five rows are): the run is
    diverging (e.g. ``train.lr`` too high) even though the losses are still finite. Uses the values already
    logged, so it adds no device sync."""

    FACTOR = 100.0  # warn when the logged loss exceeds this many times its running median
    WINDOW = 20  # logged rows the running median is taken over (at least 5 before any warning)

    def __init__(self) -> None:
        self.history: list[float] = []
        self.warned = False

    def observe(self, row: dict[str, Any]) -> None:
        total = sum(abs(v) for k, v in row.items() if k.startswith("loss"))
        recent = self.history[-self.WINDOW :]
        self.history.append(total)
        if self.warned or not recent:
            return
        # the running median once 5 rows are logged; before, the smallest row so far (a loss that blows up within
        # a run's first rows is a divergence too, and a falling loss never exceeds its own minimum 100-fold)
        median = sorted(recent)[len(recent) // 2] if len(recent) >= 5 else min(recent)
        if median > 0 and total > self.FACTOR * median:
            self.warned = True
            what = "running median" if len(recent) >= 5 else "smallest logged value"
            print(
                f"warning: the loss ({total:.3g}) at epoch {row['epoch']}, step {row['step']} is "
                f"{total / median:.3g}x its {what} ({median:.3g}): the run is diverging. "
                "Fix: lower train.lr (or use train.schedule=cosine with warmup) and start again.",
                file=sys.stderr,
            )

    def state(self) -> dict[str, Any]:
        return {"logged_losses": self.history[-self.WINDOW :], "divergence_warned": self.warned}

    def load(self, ckpt: dict[str, Any]) -> None:
        self.history = [float(v) for v in ckpt.get("logged_losses", [])]
        self.warned = bool(ckpt.get("divergence_warned", False))


def online_probe_due(every: int, done: int, k_steps: int) -> bool:
    """Whether the row logged after ``done`` steps (covering the last ``k_steps``) is the first past a
    multiple of ``train.online_probe_every``: the online read-outs are scored there."""
    return bool(every) and done // every > (done - k_steps) // every


def epoch_line(epoch: int, epochs: int, row: dict[str, Any]) -> str:
    """The line printed at an epoch's end: its losses, images/s and the online probe's accuracy."""
    shown = " ".join(
        f"{k}={v:.4g}" for k, v in row.items() if k.startswith("loss") or k in ("images_per_s", "probe_acc_pct_all")
    )
    return f"epoch {epoch}/{epochs}: {shown}"
