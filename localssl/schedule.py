"""Learning-rate schedules as pure functions of the global step (so ``--resume`` continues exactly).

``constant``: the paper's default, ``lr`` at every step.
``cosine``: linear warmup from 0 to ``lr`` over ``warmup_steps`` steps, then half-cosine decay to
``min_lr`` at the last step (Loshchilov & Hutter 2017, SGDR eq. 5 without restarts; the
warmup + cosine protocol of solo-learn and LPL)::

    lr(s) = lr · (s + 1) / warmup_steps                                  for s < warmup_steps
    lr(s) = min_lr + ½ (lr − min_lr) (1 + cos(π · (s − W) / (T − W)))    otherwise

with ``W = warmup_steps`` and ``T`` the run's total number of steps (``train.epochs`` × steps per
epoch; extending ``train.epochs`` on resume therefore stretches the remaining decay).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def check_schedule(schedule: str, warmup_epochs: float, epochs: int) -> None:
    """Reject a bad ``train.schedule`` / ``train.warmup_epochs`` before anything is written."""
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    if not 0 <= warmup_epochs <= epochs:
        raise ValueError(
            f"train.warmup_epochs={warmup_epochs} must lie within 0 and train.epochs={epochs}; "
            "lower train.warmup_epochs or raise train.epochs"
        )
    if warmup_epochs and schedule == "constant":
        raise ValueError("train.warmup_epochs needs train.schedule=cosine (the constant schedule has no warmup)")


def learning_rate(
    schedule: str, lr: float, step: int, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """The learning rate for optimisation step ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    if warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(
            f"the warmup ({warmup_steps} steps) must lie within the run ({total_steps} steps); "
            "lower train.warmup_epochs or raise train.epochs"
        )
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
