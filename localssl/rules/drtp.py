"""Direct random target projection (DRTP; Frenkel, Lefebvre & Bol, Front. Neurosci. 15:629892, 2021).

Like DFA (:mod:`localssl.rules.dfa`) the top layer and its objective learn from their exact gradient
(the top layer's input detached), but the hidden layers receive a fixed random projection of the
*target* instead of the output error: with the one-hot label ``y*``, the error ``e = ŷ − y*`` of a
softmax read-out is replaced by its label-only part ``−y*`` (DRTP Eq. 5), so hidden layer ``l``
descends ``⟨h_l, stopgrad(B_l (−y*))⟩`` through its own non-linearity,

    ΔW_l ∝ (B_l y* ⊙ f'(a_l)) x_lᵀ ,

with ``B_l`` of i.i.d. ``N(0, 1/n_c)`` entries seeded by ``(seed, l)`` (the DFA rule's matrices) and
never trained. No error signal reaches the hidden layers at all: it is the extreme direct-feedback rule.
Needs labelled views (``views.labels``) and an objective with ``num_classes`` (``cross_entropy``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LabelsConfig, LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.rules.dfa import feedback_matrix
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class DRTPConfig:
    name: str = "drtp"
    seed: int = 0  # seed of the fixed random projection matrices B_l


@RULES.register("drtp", DRTPConfig)
class DRTPRule(Rule):
    LAYER_PARALLEL_REFUSAL = (
        "DRTP's hidden layers need only the label, but its step is written for the whole network at once (the "
        "top objective's read-out and the fixed feedback matrices in one backward), with no per-block step; "
        "train it in one process or data-parallel (torchrun without train.parallel=layers), or use a local "
        "rule (clapp++, scff, lpl, ff, ...) for stages"
    )

    def __init__(self, cfg: DRTPConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        if not isinstance(objective_cfg, LabelsConfig):
            raise ConfigError(
                f"rule drtp projects the one-hot label: it needs an objective with num_classes "
                f"(e.g. cross_entropy), not '{objective_cfg.name}'"
            )
        self.n_classes = int(objective_cfg.num_classes)
        self.top = len(layers)
        top = layers[-1]
        self.objectives = nn.ModuleDict({str(self.top): build_objective(objective_cfg, top, [top])})
        for spec in layers[:-1]:
            b = feedback_matrix(math.prod(spec.shape), self.n_classes, cfg.seed, spec.index + 1)
            self.register_buffer(f"B{spec.index + 1}", b, persistent=False)

    def projection(self, layer: int) -> torch.Tensor:
        """The fixed matrix ``B_layer`` (1-based layer number, hidden layers only)."""
        return getattr(self, f"B{layer}")

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        if views.labels is None or bool((views.labels < 0).any()):
            raise ConfigError("rule drtp needs every row labelled (views with labels, e.g. rhm_plain or single)")
        target = F.one_hot(views.labels, self.n_classes).float()
        hs, h = [], views.x
        with ctx.autocast():
            for layer in encoder.layers:
                h = layer(h.detach())
                hs.append(h)
            out = self.objectives[str(self.top)](hs[-1], [hs[-1]], views)
        total = out.loss
        metrics: Metrics = {}
        for i, h_l in enumerate(hs[:-1]):
            signal = (-target @ self.projection(i + 1).T).view(h_l.shape).to(h_l.dtype)
            total = total + (h_l * signal).sum() / len(h_l)
            metrics[f"feedback_norm_l{i + 1}"] = signal.norm().detach() / math.sqrt(len(signal))
        total.backward()
        self.record(metrics, self.top, out)
        return metrics
