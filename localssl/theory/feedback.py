"""``B`` at its optimum for the batch: the separation of timescales of Theorem 3.1.

With the L2 regulariser of Eq. 1, ``L(B) = E[f(s⁺ − s⁻)] + λ‖B‖²_F`` is strictly convex in ``B`` for a
convex ``f``, so a fast-learning ``B`` sits at its unique minimiser ``B*`` when ``W`` is updated. We
find it with L-BFGS (strong-Wolfe line search) on the detached activities of the batch, as the
official simulations do (App. B), and report the final gradient norm ``‖∂L/∂B‖`` so that the
tolerance is part of the result.

Start ``B`` from a random matrix (:func:`randomize_feedback`), not from zero: in an orthonormal deep
linear net the first L-BFGS direction from ``B = 0`` is already the local image of the optimal top
``B`` (a Hebbian outer product), so a one-step "solution" would show cosine 1 whether or not the
optimum was reached.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.rules.base import Rule
from localssl.rules.global_gradient import local_references
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class FeedbackSolution:
    """The end state of one ``B``'s minimisation (``layer`` is 1-based)."""

    layer: int
    loss: float
    grad_norm: float  # ‖∂L/∂B‖₂ over all of the objective's trainable parameters at the end
    iterations: int
    tolerance: float
    converged: bool  # grad_norm <= tolerance


def randomize_feedback(objective: nn.Module, generator: torch.Generator | None = None) -> None:
    """Redraw every trainable linear map of ``objective`` from ``nn.Linear``'s default law
    ``U(−1/√fan_in, 1/√fan_in)`` (fixed ``B`` are left alone)."""
    with torch.no_grad():
        for m in objective.modules():
            if isinstance(m, nn.Linear) and m.weight.requires_grad:
                bound = 1.0 / math.sqrt(m.in_features)
                u = torch.rand(m.weight.shape, generator=generator, dtype=torch.float64)
                m.weight.copy_((2 * u - 1) * bound)


LOW_RANK_CHUNK = 100  # L-BFGS iterations between two re-balancings of a factorised B = UV


def balance_factors_(objective: nn.Module) -> bool:
    """Re-split every trainable low-rank ``B = U V`` (``Prediction`` with ``B_rank``) as
    ``U = P√S, V = √S Qᵀ`` from the SVD of the product. The loss and its L2 term depend on ``UV``
    only, so nothing changes but the conditioning: without it L-BFGS drifts along the flat directions
    ``(UG, G⁻¹V)`` until one factor is tiny and the other huge, and stalls. Returns whether any
    factorised ``B`` was found."""
    found = False
    with torch.no_grad():
        for m in objective.modules():
            if (
                isinstance(m, nn.Sequential)
                and len(m) == 2
                and all(isinstance(x, nn.Linear) for x in m)
                and m[0].weight.requires_grad
            ):
                r = m[0].out_features
                p, sv, qh = torch.linalg.svd(m[1].weight @ m[0].weight, full_matrices=False)
                root = sv[:r].sqrt()
                m[1].weight.copy_(p[:, :r] * root)
                m[0].weight.copy_(root[:, None] * qh[:r])
                found = True
    return found


def solve_feedback(
    objective: nn.Module,
    h: torch.Tensor,
    refs: list[torch.Tensor],
    views: ViewBatch,
    layer: int = 0,
    tol: float = 1e-9,
    max_iter: int = 5000,
) -> FeedbackSolution:
    """Minimise ``objective(h, refs, views).loss`` over the objective's trainable parameters (its
    ``B``) with ``h`` and ``refs`` held fixed, until ``‖∂L/∂B‖₂ <= tol`` or ``max_iter`` iterations.

    In float64 the loss resolves gradient norms down to about 1e-10 (below, line searches see no
    change): ask for ``tol`` ≥ 1e-9 there; in float32 about 1e-4."""
    h = h.detach()
    refs = [r.detach() for r in refs]
    params = [p for p in objective.parameters() if p.requires_grad]

    def value() -> torch.Tensor:
        return objective(h, refs, views).loss

    if not params:  # fixed B: nothing to solve
        with torch.no_grad():
            return FeedbackSolution(layer, float(value()), float("nan"), 0, tol, False)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol / math.sqrt(sum(p.numel() for p in params)),
        tolerance_change=0.0,
        history_size=30,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = value()
        loss.backward()
        return loss

    low_rank = balance_factors_(objective)
    iterations, previous = 0, math.inf
    for _ in range(max_iter if low_rank else 20):  # restart after a stalled line search (or a chunk)
        opt.param_groups[0]["max_iter"] = min(max_iter - iterations, LOW_RANK_CHUNK if low_rank else max_iter)
        opt.step(closure)
        iterations += int(opt.state[params[0]].get("n_iter", 0))
        gn = _grad_norm(params, value)
        if gn <= tol or iterations >= max_iter or (gn > 0.5 * previous and not low_rank):
            break  # converged, out of budget, or at the precision floor of the loss
        previous = gn
        opt.state.clear()
        if low_rank:
            balance_factors_(objective)
    loss = value()
    gn = _grad_norm(params, value)
    return FeedbackSolution(layer, float(loss.detach()), gn, iterations, tol, gn <= tol)


def _grad_norm(params: list[nn.Parameter], value) -> float:
    grads = torch.autograd.grad(value(), params)
    return float(torch.sqrt(sum(g.square().sum() for g in grads)))


def solve_rule_feedback(
    rule: Rule,
    encoder: LayeredEncoder,
    views: ViewBatch,
    layers: Iterable[int] | None = None,
    tol: float = 1e-9,
    max_iter: int = 5000,
) -> list[FeedbackSolution]:
    """Put the ``B`` of the given layers' objectives (1-based; default: all of the rule's objectives)
    at their optimum for this batch, with the references the rule gives each layer."""
    with torch.no_grad():
        hs = encoder(views.x)
    refs = local_references(rule, hs)
    objectives = dict(rule.objectives.items())
    if not objectives and hasattr(rule, "objective"):
        objectives = {str(len(hs)): rule.objective}
    chosen = sorted(int(k) for k in objectives) if layers is None else list(layers)
    out = []
    for layer in chosen:
        if str(layer) not in objectives:
            raise ValueError(f"the rule has no objective on layer {layer}; it has {sorted(objectives)}")
        out.append(solve_feedback(objectives[str(layer)], hs[layer - 1], refs[layer], views, layer, tol, max_iter))
    return out
