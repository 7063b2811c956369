"""The *credit-assignment* axis: where each layer's gradient comes from.

A rule owns the objectives it needs (one per layer for local rules, one at the top for backprop) and
implements :meth:`Rule.step`: given the encoder and a :class:`ViewBatch`, leave the gradient of every
trainable parameter in ``.grad`` and return detached per-layer metrics. The trainer only calls
``step`` and the optimizer; it never knows which rule runs.

Rules that finish a layer's gradients before the next layer runs (layer streaming) announce it by
calling :meth:`Rule.layer_done`; the trainer uses that moment to start that layer's gradient
all-reduce (multi-process runs) and, with ``train.step_each_layer``, to step that layer's optimizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec, LossOut
from localssl.registry import OBJECTIVES
from localssl.views.base import ViewBatch

Metrics = dict[str, torch.Tensor]


def build_objective(objective_cfg: Any, target: LayerSpec, refs: list[LayerSpec]) -> nn.Module:
    entry = OBJECTIVES.get(objective_cfg.name)
    return entry.builder(objective_cfg, target, refs)


class Rule(nn.Module):
    """Base class. Subclasses set ``self.objectives`` (an ``nn.ModuleDict`` keyed by layer number)."""

    trains_encoder: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        # Set by the trainer: called with a 0-based layer index once that layer's gradients are final.
        self.on_layer_done: Callable[[int], None] | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, encoder: LayeredEncoder, views: ViewBatch) -> Metrics:  # pragma: no cover - abstract
        raise NotImplementedError

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The trainer hands its optimizer to the rule. Rules that update the weights several times
        per batch (incremental predictive coding) step it themselves inside :meth:`step`, and leave
        the last update in ``.grad``; every other rule ignores it."""
        self.optimizer = optimizer

    def parameters_to_train(self, encoder: LayeredEncoder) -> Iterator[nn.Parameter]:
        """Encoder and objective parameters that this rule updates."""
        if self.trains_encoder:
            yield from (p for p in encoder.parameters() if p.requires_grad)
        yield from (p for p in self.parameters() if p.requires_grad)

    def layer_groups(self, encoder: LayeredEncoder) -> list[list[nn.Parameter]]:
        """Trainable parameters by layer: group ``l`` = layer ``l``'s weights + objective ``l+1``'s
        parameters; one more group holds any trainable parameter of the rule outside those objectives.
        Groups may be empty. Their union is :meth:`parameters_to_train`."""
        groups: list[list[nn.Parameter]] = []
        seen: set[int] = set()
        objectives = getattr(self, "objectives", {})
        for i, layer in enumerate(encoder.layers):
            group = [p for p in layer.parameters() if p.requires_grad] if self.trains_encoder else []
            if str(i + 1) in objectives:
                group += [p for p in objectives[str(i + 1)].parameters() if p.requires_grad]
            seen.update(id(p) for p in group)
            groups.append(group)
        groups.append([p for p in self.parameters_to_train(encoder) if id(p) not in seen])
        return groups

    def layer_done(self, index: int) -> None:
        """Announce that layer ``index``'s (0-based) gradients are complete for this step."""
        if self.on_layer_done is not None:
            self.on_layer_done(index)

    @staticmethod
    def record(metrics: Metrics, layer: int, out: LossOut) -> None:
        metrics[f"loss_l{layer}"] = out.loss.detach()
        for key, value in out.metrics.items():
            metrics[f"{key}_l{layer}"] = value
