"""Fixed-weight simulations of CLAPP++ Sec. 3 (Fig. 2, 3A, 4B, A1; official ``theory/run_fastb.py``).

The feed-forward weights ``W`` are held fixed; on every batch each ``B`` is redrawn at random and put
at its optimum for that batch (L-BFGS), then the rule's update of every ``W_l`` is compared with the
BP update of the top-layer objective. :func:`theory_components` builds the networks of the paper from
registered components; :func:`alignment_at_optimum` runs the measurement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch

from localssl.build import layer_specs
from localssl.data import dataset_info
from localssl.evaluate.alignment import LayerAlignment, gradient_alignment
from localssl.models.base import LayeredEncoder
from localssl.registry import MODELS, OBJECTIVES, RULES, VIEWS
from localssl.rules.base import Rule
from localssl.theory.feedback import FeedbackSolution, randomize_feedback, solve_rule_feedback
from localssl.views.base import ViewBatch, encoder_input_shape


@dataclasses.dataclass
class TheoryComponents:
    encoder: LayeredEncoder
    views: torch.nn.Module
    rule: Rule


def theory_components(
    model: dict[str, Any],
    objective: dict[str, Any],
    rule: dict[str, Any],
    views: dict[str, Any],
    seed: int = 0,
    dataset: str = "mnist",
    dtype: torch.dtype = torch.float64,
) -> TheoryComponents:
    """Registered model × objective × rule × views from plain dicts (validated like a preset), in
    ``dtype`` (float64 by default, so that a theorem's equality is checked to 1e-5 and beyond)."""
    info = dataset_info(dataset)
    views_cls, views_cfg = VIEWS.get(views["name"]).builder, VIEWS.make_config(views)
    view_mod = views_cls(views_cfg, info)
    torch.manual_seed(seed)
    encoder = MODELS.get(model["name"]).builder(MODELS.make_config(model), in_channels=info.channels)
    layers = layer_specs(encoder, info, encoder_input_shape(views_cls, views_cfg, info))
    rule_mod = RULES.get(rule["name"]).builder(RULES.make_config(rule), OBJECTIVES.make_config(objective), layers)
    return TheoryComponents(encoder.to(dtype), view_mod, rule_mod.to(dtype))


@dataclasses.dataclass
class OptimumAlignment:
    """Per-layer alignment with every ``B`` at its optimum, and how well the optima were solved."""

    layers: list[LayerAlignment]
    solutions: list[FeedbackSolution]  # every (batch, layer) L-BFGS solution

    @property
    def max_grad_norm(self) -> float:
        norms = [s.grad_norm for s in self.solutions if s.grad_norm == s.grad_norm]
        return max(norms) if norms else float("nan")

    @property
    def all_converged(self) -> bool:
        return all(s.converged for s in self.solutions)


def alignment_at_optimum(
    encoder: LayeredEncoder,
    rule: Rule,
    batches: Iterable[ViewBatch],
    solve_layers: list[int] | None = None,
    tol: float = 1e-9,
    max_iter: int = 5000,
    seed: int = 0,
) -> OptimumAlignment:
    """For each batch: redraw every trainable ``B`` at random (seeded), put those of ``solve_layers``
    (1-based; default all) at their optimum, then measure the alignment with BP on that batch.
    ``B`` of the other layers stay random: "fixed random B" of Fig. 2 is ``solve_layers=[L]``."""
    gen = torch.Generator().manual_seed(seed)
    per_batch: list[list[LayerAlignment]] = []  # [batch][layer]
    solutions: list[FeedbackSolution] = []
    dtype = next(encoder.parameters()).dtype
    for views in batches:
        views = dataclasses.replace(views, x=views.x.to(dtype))
        for obj in rule.objectives.values():
            randomize_feedback(obj, gen)
        solutions += solve_rule_feedback(rule, encoder, views, solve_layers, tol, max_iter)
        per_batch.append(gradient_alignment(encoder, rule, [views]))
    if not per_batch:
        raise ValueError("alignment_at_optimum needs at least one batch")
    layers = []
    for i in range(len(per_batch[0])):
        rows = [b[i] for b in per_batch]
        c = torch.tensor([r.cosine for r in rows], dtype=torch.float64)
        layers.append(
            LayerAlignment(
                layer=i + 1,
                cosine=float(c.mean()),
                cosine_std=float(c.std(unbiased=False)),
                rel_norm=float(torch.tensor([r.rel_norm for r in rows]).mean()),
                sq_error=float(torch.tensor([r.sq_error for r in rows], dtype=torch.float64).mean()),
                n_batches=len(rows),
                per_batch=[float(x) for x in c],
            )
        )
    return OptimumAlignment(layers, solutions)
