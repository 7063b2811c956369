"""The theoretical optimum of local-SSL (CLAPP++, Delrocq et al. 2026, Definition 3.4).

The feed-forward weights learn exactly as in the ``local`` rule (each layer's gradient of its own
loss, input detached), but the feedback matrices ``B`` below the top are *not* trained on the local
loss: their gradient is that of the squared error between the local gradient and the global BP-SSL
gradient, ``Σ‖∂L_l/∂h_l − ∂L_L/∂h_l‖²`` (official code, ``train_fb_with_grad``) or, with
``match=update``, between the weight updates. Computing it needs backprop, so this rule is not local:
it is the upper bound that Fig. 3B and 4C compare local-SSL and its DFB variant with.
"""

from __future__ import annotations

import dataclasses

from localssl.evaluate.alignment import match_feedback_grads
from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, StepContext
from localssl.rules.local import LocalConfig, LocalRule
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class OptimalFeedbackConfig(LocalConfig):
    name: str = "optimal_feedback"
    reference: str = "top"  # same | top | both: the form of the local update (the paper: top = DFB)
    streaming: bool | str = False  # auto means False here: B's fit needs every layer's graph
    match: str = "activity"  # activity (official code) | update (weight updates, Def. 3.4 literally)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.match not in ("activity", "update"):
            raise ConfigError(f"rule.match must be activity or update, got '{self.match}'")

    @property
    def stream(self) -> bool:
        return bool(self.streaming) and self.streaming != "auto"


@RULES.register("optimal_feedback", OptimalFeedbackConfig)
class OptimalFeedbackRule(LocalRule):
    def __init__(self, cfg: OptimalFeedbackConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__(cfg, objective_cfg, layers)  # type: ignore[arg-type]

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        metrics = super().step(encoder, views, ctx)
        with ctx.autocast():
            mse = match_feedback_grads(encoder, self, views, match=self.cfg.match)
        metrics["feedback_mse"] = mse
        return metrics
