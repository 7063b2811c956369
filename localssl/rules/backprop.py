"""End-to-end backprop of one objective at the top layer (BP-CLAPP++, BP-InfoNCE), and random init.

``backprop``: the objective sees the top layer's activity (as target and, detached by default, as
reference) and its gradient flows through every layer. ``frozen``: no learning at all (the
"random init" row of the tables).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class BackpropConfig:
    name: str = "backprop"


@RULES.register("backprop", BackpropConfig)
class BackpropRule(Rule):
    LAYER_PARALLEL_REFUSAL = (
        "backprop sends the top objective's error down through every layer: a stage cannot update before every "
        "stage above it has run its forward pass and its backward pass on the same batch (backward locking), "
        "so no two stages could work at once; train it data-parallel (torchrun without train.parallel=layers), "
        "or use a local rule (clapp++, scff, lpl, ff, ...) or GIM modules (rule.name=modules) for stages"
    )

    def __init__(self, cfg: BackpropConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        top = layers[-1]
        self.top = len(layers)
        self.objectives = nn.ModuleDict({str(self.top): build_objective(objective_cfg, top, [top])})

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        with ctx.autocast():
            h = encoder(views.x)[-1]
            out = self.objectives[str(self.top)](h, [h], views)
        out.loss.backward()
        metrics: Metrics = {}
        self.record(metrics, self.top, out)
        return metrics


@dataclasses.dataclass
class FrozenConfig:
    name: str = "frozen"


@RULES.register("frozen", FrozenConfig)
class FrozenRule(Rule):
    """Random initialisation, never trained."""

    LAYER_PARALLEL_REFUSAL = (
        "rule=frozen trains nothing, so there is no work to split into stages; drop train.parallel=layers"
    )

    trains_encoder = False

    def __init__(self, cfg: FrozenConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        self.objectives = nn.ModuleDict()

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        return {}
