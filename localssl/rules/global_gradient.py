"""The global BP-SSL gradient that local rules are compared with (CLAPP++, Delrocq et al. 2026, Sec. 3).

Global BP-SSL puts one objective on the top layer and back-propagates its gradient through every layer:
layer ``l``'s update is ``∇_{W_l} L_L``. :class:`TopObjectiveBackprop` is that rule for a given top-layer
objective (by default the one of the rule under study, so both see the same ``B``). A rule's own update
of layer ``l`` is what :meth:`Rule.step` leaves in ``.grad`` (:func:`rule_updates`), and
:func:`local_references` says which activities each of its per-layer objectives scores against, so that a
local gradient can be recomputed next to the global one (Definition 3.4, the theory's optimal ``B``).
"""

from __future__ import annotations

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.registry import ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext
from localssl.views.base import ViewBatch

PARAM_SETS = ("weight", "all")


def layer_parameters(encoder: LayeredEncoder, index: int, params: str = "weight") -> list[nn.Parameter]:
    """Parameters of layer ``index`` (0-based) whose update is compared: weight matrices/kernels only
    (``'weight'``, the paper's choice) or every trainable parameter (``'all'``, biases included)."""
    if params not in PARAM_SETS:
        raise ValueError(f"params must be one of {PARAM_SETS}, got '{params}'")
    out = []
    for name, p in encoder.layers[index].named_parameters():
        if params == "all" or (name.endswith("weight") and p.dim() >= 2):
            out.append(p)
    return out


def clear_grads(*modules: nn.Module) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = None


def rule_updates(encoder: LayeredEncoder, rule: Rule, views: ViewBatch, params: str = "weight") -> list[torch.Tensor]:
    """Run ``rule.step`` once and return every layer's update (its ``.grad``, flattened); the
    gradients of the encoder and of the rule are cleared before and after."""
    clear_grads(encoder, rule)
    rule.step(encoder, views)
    out = []
    for i in range(len(encoder.layers)):
        ps = layer_parameters(encoder, i, params)
        if not ps:
            raise ValueError(f"layer {i + 1} has no parameters to compare (params='{params}')")
        out.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps]))
    clear_grads(encoder, rule)
    return out


class TopObjectiveBackprop(Rule):
    """Global BP-SSL: one objective on the top layer, its gradient back-propagated through every layer.

    It holds (does not copy) the objective it is given, typically the top-layer objective of the rule
    under study, so both see the same ``B``. ``n_refs`` copies of the top activity are its references
    (a CLAPP++both top objective takes two)."""

    def __init__(self, objective: nn.Module, n_refs: int = 1) -> None:
        super().__init__()
        self.objective = objective
        self.n_refs = n_refs
        self.objectives = nn.ModuleDict()

    def top_loss(self, encoder: LayeredEncoder, views: ViewBatch) -> tuple[list[torch.Tensor], torch.Tensor]:
        hs = encoder(views.x)
        return hs, self.objective(hs[-1], [hs[-1]] * self.n_refs, views).loss

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        with ctx.autocast():
            _, loss = self.top_loss(encoder, views)
        loss.backward()
        return {f"loss_l{len(encoder.layers)}": loss.detach()}


def n_references(objective: nn.Module) -> int:
    b = getattr(objective, "B", None)
    return len(b) if isinstance(b, nn.ModuleList) else 1


def backprop_reference(rule: Rule, encoder: LayeredEncoder) -> TopObjectiveBackprop:
    """BP of the rule's own top-layer objective (the comparison of CLAPP++ Fig. 2–4)."""
    top = str(len(encoder.layers))
    if top in rule.objectives:
        obj = rule.objectives[top]
    elif hasattr(rule, "objective") and isinstance(rule.objective, nn.Module):
        obj = rule.objective
    else:
        raise ConfigError(
            f"rule '{type(rule).__name__}' has no objective on the top layer (layer {top}); alignment needs "
            "the top-layer objective to back-propagate: pass "
            "reference=BackpropRule(BackpropConfig(), objective_cfg, layers)"
        )
    return TopObjectiveBackprop(obj, n_references(obj))


def local_references(rule: Rule, hs: list[torch.Tensor]) -> dict[int, list[torch.Tensor]]:
    """The references each per-layer objective of a rule sees (1-based layer -> tensors): for
    ``local`` rules the same layer, the top layer (DFB) or both; for BP only the top layer."""
    n = len(hs)
    if isinstance(rule, TopObjectiveBackprop):
        return {n: [hs[-1]] * rule.n_refs}
    reference = getattr(getattr(rule, "cfg", None), "reference", None)
    if reference is None:
        if set(rule.objectives) == {str(n)}:
            return {n: [hs[-1]] * n_references(rule.objectives[str(n)])}
        raise ConfigError(
            f"rule '{type(rule).__name__}' does not say which reference each layer uses; Definition 3.4 and "
            "the theory solvers support rules with rule.reference (local) and top-only rules (backprop)"
        )
    top = hs[-1]
    return {i + 1: {"same": [h], "top": [top], "both": [h, top]}[reference] for i, h in enumerate(hs)}
