"""Gradient-isolated modules: Greedy InfoMax (Löwe et al. 2019), CLAPP 2021 Table 3.

The encoder's layers are split into consecutive modules; each module has one objective on its last
layer, the gradient flows through the layers *inside* a module and stops between modules (a module's
input is detached). ``splits = 1`` is end-to-end training of one objective at the top (CPC, hinge-loss
CPC), ``splits = L`` is layer-wise (CLAPP), in between is GIM. The VGG-6 splits of CLAPP 2021
Table 3 are: 2 → (1,2,3)(4,5,6); 3 → (1,2)(3,4)(5,6); 4 → ``[3,1,1,1]`` ("upper") or ``[1,1,1,3]``
("lower"); 6 → layer-wise. An integer splits the layers evenly; a list gives the module sizes.

An autoregressive layer (CPC's GRU context network, :class:`LayerSpec.autoregressive`) is scored with
its output as the context and its input as the target (Illing et al. 2021, App. B.2).

Like ``local``, each module runs forward → loss → backward before the next one starts, so only one
module's graph is alive at a time.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class ModulesConfig:
    name: str = "modules"
    splits: int | list[int] = 3  # number of equal modules, or the list of module sizes

    def __post_init__(self) -> None:
        if isinstance(self.splits, int) and self.splits < 1:
            raise ConfigError(f"rule.splits must be >= 1, got {self.splits}")
        if isinstance(self.splits, (list, tuple)) and (not self.splits or min(self.splits) < 1):
            raise ConfigError(f"rule.splits as a list holds module sizes >= 1, got {self.splits}")


def module_sizes(splits: int | list[int], n_layers: int) -> list[int]:
    """Module sizes for ``n_layers`` layers: ``3`` -> ``[2, 2, 2]`` for six layers; lists pass through."""
    if isinstance(splits, (list, tuple)):
        sizes = [int(s) for s in splits]
        if sum(sizes) != n_layers:
            raise ConfigError(f"rule.splits={sizes} covers {sum(sizes)} layers, the encoder has {n_layers}")
        return sizes
    if n_layers % splits:
        raise ConfigError(
            f"rule.splits={splits} does not divide {n_layers} layers evenly; give the module sizes as a list, "
            "e.g. rule.splits=[3,1,1,1] or [1,1,1,3] (CLAPP 2021 Table 3, 4 modules)"
        )
    return [n_layers // splits] * splits


@RULES.register("modules", ModulesConfig)
class ModulesRule(Rule):
    def __init__(self, cfg: ModulesConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        self.sizes = module_sizes(cfg.splits, len(layers))
        self.ends = [sum(self.sizes[: i + 1]) - 1 for i in range(len(self.sizes))]  # 0-based last layers
        self.objectives = nn.ModuleDict()
        for end in self.ends:
            spec = layers[end]
            if spec.autoregressive:
                target = LayerSpec(spec.index, spec.input_shape or spec.shape, spec.pool_kernel)
                self.objectives[str(end + 1)] = build_objective(objective_cfg, target, [spec])
            else:
                self.objectives[str(end + 1)] = build_objective(objective_cfg, spec, [spec])
        self.autoregressive = {s.index for s in layers if s.autoregressive}

    @classmethod
    def layer_parallel_refusal(cls, cfg: ModulesConfig) -> None:
        return None  # gradient-isolated modules: stages are cut between modules (stage_cuts)

    def stage_cuts(self, n_layers: int) -> list[int]:
        return [end + 1 for end in self.ends[:-1]]

    def step_layers(
        self, encoder: LayeredEncoder, x: torch.Tensor, views: ViewBatch, ctx: StepContext, layers: range
    ) -> tuple[torch.Tensor, Metrics]:
        starts = [0, *(end + 1 for end in self.ends)]
        if layers.start not in starts or layers.stop not in starts:
            raise ValueError(f"layers {layers.start + 1}-{layers.stop} do not start and end on module boundaries")
        metrics: Metrics = {}
        h = x
        start = layers.start
        for end in (e for e in self.ends if layers.start <= e < layers.stop):
            h = h.detach()  # gradient-isolated module boundary
            with ctx.autocast():
                h_in = h
                for i in range(start, end + 1):
                    h_in = h
                    h = encoder.layers[i](h)
                target = h_in if end in self.autoregressive else h
                out = self.objectives[str(end + 1)](target, [h], views)
            out.loss.backward()  # frees this module's graph before the next module runs
            self.record(metrics, end + 1, out)
            start = end + 1
        return h.detach(), metrics

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        return self.step_layers(encoder, views.x, views, ctx, range(len(encoder.layers)))[1]
