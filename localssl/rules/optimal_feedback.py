"""The theoretical optimum of local-SSL (CLAPP++, Delrocq et al. 2026, Definition 3.4).

The feed-forward weights learn exactly as in the ``local`` rule (each layer's gradient of its own
loss, input detached), but the feedback matrices ``B`` below the top are *not* trained on the local
loss: their gradient is that of the squared error between the local gradient and the global BP-SSL
gradient, ``Σ‖∂L_l/∂h_l − ∂L_L/∂h_l‖²`` (official code, ``train_fb_with_grad``) or, with
``match=update``, between the weight updates. Computing it needs backprop, so this rule is not local:
it is the upper bound that Fig. 3B and 4C compare local-SSL and its DFB variant with.

:func:`match_feedback_grads` puts the gradient of that squared error into the feedback matrices'
``.grad`` (the rule calls it on every step); :func:`optimal_feedback` fits a copy of any rule's ``B``
that way off-line, and the alignment of the copy with BP is the bound (``localssl align --optimal-steps N``).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext
from localssl.rules.global_gradient import (
    TopObjectiveBackprop,
    backprop_reference,
    clear_grads,
    layer_parameters,
    local_references,
)
from localssl.rules.local import LocalConfig, LocalRule
from localssl.views.base import ViewBatch


def match_feedback_grads(
    encoder: LayeredEncoder,
    rule: Rule,
    views: ViewBatch,
    reference: TopObjectiveBackprop | None = None,
    match: str = "activity",
) -> torch.Tensor:
    """Overwrite the ``.grad`` of every lower layer's objective parameters (``B``) with the gradient of
    the squared error between the local and the BP gradient (Def. 3.4); returns that error, summed
    over layers. The top layer's objective keeps the gradient of its loss (it *is* the BP loss).

    ``match='activity'``: ``Σ ‖∂L_l/∂h_l − ∂L_L/∂h_l‖²`` over the batch (the official code);
    ``match='update'``: ``‖∇_{W_l} L_l − ∇_{W_l} L_L‖²`` (the weight updates of Def. 3.4)."""
    if match not in ("activity", "update"):
        raise ValueError(f"match must be 'activity' or 'update', got '{match}'")
    reference = reference if reference is not None else backprop_reference(rule, encoder)
    n = len(encoder.layers)
    hs, top_loss = reference.top_loss(encoder, views)
    if match == "activity":
        targets = torch.autograd.grad(top_loss, hs[:-1])
    else:
        ws = [layer_parameters(encoder, i) for i in range(n - 1)]
        flat = torch.autograd.grad(top_loss, [p for w in ws for p in w])
        targets, k = [], 0
        for w in ws:
            targets.append(flat[k : k + len(w)])
            k += len(w)
    detached = [h.detach() for h in hs]
    total = torch.zeros((), dtype=hs[0].dtype, device=hs[0].device)
    for i in range(n - 1):
        obj = rule.objectives[str(i + 1)]
        b_params = [p for p in obj.parameters() if p.requires_grad]
        if not b_params:
            continue
        if match == "activity":
            h = detached[i].clone().requires_grad_(True)
        else:
            h = encoder.layers[i](views.x if i == 0 else detached[i - 1])
        refs = local_references(rule, [*detached[:i], h, *detached[i + 1 :]])[i + 1]  # as the rule sees them
        loss = obj(h, refs, views).loss
        if match == "activity":
            (g,) = torch.autograd.grad(loss, h, create_graph=True)
            mse = (g - targets[i]).square().sum()
        else:
            g = torch.autograd.grad(loss, layer_parameters(encoder, i), create_graph=True)
            mse = sum((a - b).square().sum() for a, b in zip(g, targets[i]))
        for p, gp in zip(b_params, torch.autograd.grad(mse, b_params)):
            p.grad = gp
        total = total + mse.detach()
    return total


def optimal_feedback(
    encoder: LayeredEncoder,
    rule: Rule,
    batches: list[ViewBatch],
    steps: int = 200,
    lr: float = 1e-3,
    match: str = "activity",
) -> Rule:
    """A copy of ``rule`` whose lower-layer ``B`` are fitted by Adam to Def. 3.4's squared error on
    ``batches`` (cycled for ``steps`` steps); its alignment with BP is the optimal-feedback bound."""
    if not batches:
        raise ValueError("optimal_feedback needs at least one batch")
    fitted = copy.deepcopy(rule)
    top = str(len(encoder.layers))
    params = [p for k, obj in fitted.objectives.items() if k != top for p in obj.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the rule has no trainable feedback (B) below the top layer to fit")
    opt = torch.optim.Adam(params, lr=lr)
    reference = backprop_reference(fitted, encoder)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        clear_grads(encoder)
        match_feedback_grads(encoder, fitted, batches[step % len(batches)], reference, match)
        opt.step()
    clear_grads(encoder, fitted)
    return fitted


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
    LAYER_PARALLEL_REFUSAL = (
        "the optimal feedback is fitted to the global BP-SSL gradient, which back-propagates the top objective "
        "through every layer on every batch (backward locking): no two stages could work at once; train it "
        "in one process or data-parallel (torchrun without train.parallel=layers)"
    )

    @classmethod
    def layer_parallel_refusal(cls, cfg: OptimalFeedbackConfig) -> str | None:
        return cls.LAYER_PARALLEL_REFUSAL

    def __init__(self, cfg: OptimalFeedbackConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__(cfg, objective_cfg, layers)  # type: ignore[arg-type]

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        metrics = super().step(encoder, views, ctx)
        with ctx.autocast():
            mse = match_feedback_grads(encoder, self, views, match=self.cfg.match)
        metrics["feedback_mse"] = mse
        return metrics
