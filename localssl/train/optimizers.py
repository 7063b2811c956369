"""The trainer's optimizer(s): one for the run, or one per layer (``train.step_each_layer``).

With per-layer optimizers every layer is stepped as soon as the rule announces its gradients final
(``ctx.layer_done``; layer streaming does so right after the layer's backward) and its gradients are
freed at once. Each parameter sees exactly the update of the single-optimizer run (the optimizers are
per-parameter), so the result is the same; only the peak gradient memory shrinks. Under ``torchrun``
every announcement also launches that layer's gradient all-reduce (:class:`~localssl.distributed.GradSync`);
a layer is then stepped one layer later, so its all-reduce overlaps the next layer's work."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from localssl.config import TrainConfig
from localssl.distributed import GradSync, World
from localssl.schedule import learning_rate
from localssl.utils import make_optimizer

ONE = -1  # the key of the single optimizer in :attr:`StepOptimizers.by_key`


class StepOptimizers:
    """The optimizers of a run and the bookkeeping of one step's ``layer_done`` announcements."""

    def __init__(self, train: TrainConfig, groups: list[list[nn.Parameter]], params: list[nn.Parameter], world: World):
        self.train, self.groups, self.world = train, groups, world
        wd = float(train.weight_decay)
        if train.step_each_layer:
            self.by_key = {
                i: make_optimizer(train.optimizer, g, train.lr, wd, train.momentum) for i, g in enumerate(groups) if g
            }
        else:
            self.by_key = {ONE: make_optimizer(train.optimizer, params, train.lr, wd, train.momentum)}
        self.sync = GradSync(world)
        self._done: set[int] = set()
        self._pending: list[int] = []

    @property
    def per_layer(self) -> bool:
        return ONE not in self.by_key

    # ------------------------------------------------------------------ one step
    def begin_step(self) -> None:
        for opt in self.by_key.values():
            opt.zero_grad(set_to_none=True)
        self._done, self._pending = set(), []

    def layer_done(self, index: int) -> None:
        """Layer ``index``'s gradients are final: start their all-reduce; with per-layer optimizers, step
        it (one process: at once; several: one layer later, so its all-reduce overlaps the next layer)."""
        self._done.add(index)
        self.sync.launch(index, self.groups[index])
        if index in self.by_key:
            self._pending.append(index)
            keep = 1 if self.world.distributed else 0
            while len(self._pending) > keep:
                self._step_layer(self._pending.pop(0))

    def finish_step(self) -> None:
        """Announce the layers the rule did not (backprop announces none), then step what is left."""
        for index in range(len(self.groups)):
            if index not in self._done:
                self.layer_done(index)
        while self._pending:
            self._step_layer(self._pending.pop(0))
        if ONE in self.by_key:
            self.sync.wait_all()
            self.by_key[ONE].step()

    def _step_layer(self, index: int) -> None:
        self.sync.wait(index)
        self.by_key[index].step()
        self.by_key[index].zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ schedule and state
    def set_lr(self, global_step: int, steps_per_epoch: int) -> None:
        """Every optimizer's learning rate for ``global_step`` (see :mod:`localssl.schedule`)."""
        t = self.train
        if t.schedule == "constant":
            return
        lr = learning_rate(
            t.schedule,
            t.lr,
            global_step,
            t.epochs * steps_per_epoch,
            round(t.warmup_epochs * steps_per_epoch),
            t.min_lr,
        )
        for opt in self.by_key.values():
            for group in opt.param_groups:
                group["lr"] = lr

    @property
    def lr(self) -> float:
        return next(iter(self.by_key.values())).param_groups[0]["lr"]

    def state(self) -> dict[str, Any]:
        if not self.per_layer:
            return self.by_key[ONE].state_dict()
        return {"per_layer": {str(i): o.state_dict() for i, o in self.by_key.items()}}

    def load(self, state: dict[str, Any]) -> None:
        if ("per_layer" in state) != self.per_layer:
            raise ValueError("the checkpoint and train.step_each_layer disagree; resume with the run's own setting")
        if not self.per_layer:
            self.by_key[ONE].load_state_dict(state)
            return
        for i, opt in self.by_key.items():
            opt.load_state_dict(state["per_layer"][str(i)])

    def as_one(self) -> Together | torch.optim.Optimizer:
        """The optimizer(s) seen as one, for rules that step the weights themselves inside their step
        (incremental predictive coding)."""
        return self.by_key[ONE] if ONE in self.by_key else Together(list(self.by_key.values()))


class Together:
    """Several optimizers seen as one (``step`` and ``zero_grad`` on each)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)
