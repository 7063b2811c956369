"""The *credit-assignment* axis: where each layer's gradient comes from.

A rule owns the objectives it needs (one per layer for local rules, one at the top for backprop) and
implements :meth:`Rule.step`: given the encoder and a :class:`ViewBatch`, leave the gradient of every
trainable parameter in ``.grad`` and return detached per-layer metrics. The trainer only calls
``step`` and the optimizer; it never knows which rule runs.

What the trainer gives a rule for one step travels in one :class:`StepContext`: the autocast to run
the forward passes under, the ``layer_done`` announcement and the optimizer. Rules that finish a
layer's gradients before the next layer runs (layer streaming) call ``ctx.layer_done(i)``; the trainer
uses that moment to start that layer's gradient all-reduce (multi-process runs) and, with
``train.step_each_layer``, to step that layer's optimizer. A rule called without a context (tests,
analyses) gets :data:`NO_CONTEXT`: full precision, nobody listening, no optimizer.

Layer-parallel training (``train.parallel=layers``, :mod:`localssl.train.pipeline`) runs a contiguous
block of layers per process. A rule that allows it says so (:meth:`Rule.layer_parallel_refusal` returns
``None``), names where the network may be cut (:meth:`Rule.stage_cuts`) and runs one block for one batch
(:meth:`Rule.step_layers`); every other rule states why it cannot (backward locking, a reference from
above, ...), and the run is refused with that reason before it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec, LossOut, Objective
from localssl.partial_build import build_layer
from localssl.registry import OBJECTIVES
from localssl.views.base import ViewBatch

Metrics = dict[str, torch.Tensor]


def build_objective(objective_cfg: Any, target: LayerSpec, refs: list[LayerSpec]) -> Objective:
    """The objective named by ``objective_cfg`` for layer ``target`` with references ``refs``."""
    entry = OBJECTIVES.get(objective_cfg.name)
    return build_layer(target.index, lambda: entry.builder(objective_cfg, target, refs))  # a stage builds its own


class Optimizer(Protocol):
    """What a rule may do with the trainer's optimizer(s)."""

    def step(self) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...


def _nobody_listens(index: int) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What the trainer hands :meth:`Rule.step` for one step.

    ``autocast()`` opens the precision context the forward passes run under (``train.precision``);
    ``layer_done(i)`` announces that layer ``i``'s (0-based) gradients are final for this step;
    ``optimizer`` is the trainer's optimizer (the per-layer ones seen as one with
    ``train.step_each_layer``), which only rules that update the weights several times per batch
    (incremental predictive coding) step themselves; every other rule leaves it alone."""

    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    layer_done: Callable[[int], None] = _nobody_listens
    optimizer: Optimizer | None = None


NO_CONTEXT = StepContext()


class Rule(nn.Module):
    """Base class. Subclasses implement :meth:`step` and fill ``self.objectives``: the objectives they
    train, keyed by 1-based layer number (``"3"``: the loss of layer 3's output), which
    :meth:`layer_groups` pairs with that layer's weights. ``trains_encoder = False``: the encoder is
    not trained (``frozen``). A registered builder is called as ``builder(cfg, objective_cfg, layers)``.
    """

    trains_encoder: bool = True
    objectives: nn.ModuleDict

    def __init__(self) -> None:
        super().__init__()
        self.objectives = nn.ModuleDict()

    #: Why ``train.parallel=layers`` cannot run this rule (see :meth:`layer_parallel_refusal`).
    LAYER_PARALLEL_REFUSAL = (
        "it has no per-block step (Rule.step_layers); train it in one process or data-parallel "
        "(torchrun without train.parallel=layers)"
    )

    @classmethod
    def layer_parallel_refusal(cls, cfg: Any) -> str | None:
        """Why the rule of config ``cfg`` cannot be trained as layer-parallel stages; ``None`` if it can."""
        return cls.LAYER_PARALLEL_REFUSAL

    def stage_cuts(self, n_layers: int) -> list[int]:
        """Where layer-parallel stages may be cut: the numbers of layers that may come before a cut."""
        raise NotImplementedError(self.LAYER_PARALLEL_REFUSAL)

    def step_layers(
        self, encoder: LayeredEncoder, x: torch.Tensor, views: ViewBatch, ctx: StepContext, layers: range
    ) -> tuple[torch.Tensor, Metrics]:
        """:meth:`step` restricted to the block ``layers`` (0-based, cut where :meth:`stage_cuts` allows) fed
        with ``x``, the block's input: leave the block's gradients in ``.grad``, announce each of its layers
        done, and return the block's output (detached) and its metrics. The blocks run one after the other
        on every batch give :meth:`step`'s gradients."""
        raise NotImplementedError(self.LAYER_PARALLEL_REFUSAL)

    def step(
        self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT
    ) -> Metrics:  # pragma: no cover - abstract
        """Leave every trainable parameter's gradient in ``.grad``; return detached per-layer metrics."""
        raise NotImplementedError

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
        for i, layer in enumerate(encoder.layers):
            group = [p for p in layer.parameters() if p.requires_grad] if self.trains_encoder else []
            if str(i + 1) in self.objectives:
                group += [p for p in self.objectives[str(i + 1)].parameters() if p.requires_grad]
            seen.update(id(p) for p in group)
            groups.append(group)
        groups.append([p for p in self.parameters_to_train(encoder) if id(p) not in seen])
        return groups

    @staticmethod
    def record(metrics: Metrics, layer: int, out: LossOut) -> None:
        metrics[f"loss_l{layer}"] = out.loss.detach()
        for key, value in out.metrics.items():
            if key == "acc":  # a fraction from the objective; percent in every file a user reads, as named
                metrics[f"acc_pct_l{layer}"] = 100 * value
            else:
                metrics[f"{key}_l{layer}"] = value
