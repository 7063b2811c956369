"""Gradient alignment of a credit-assignment rule with backprop (CLAPP++ Sec. 3, Fig. 2–4).

For a batch, the rule's weight update of layer ``l`` is what :meth:`Rule.step` leaves in ``.grad``;
the reference is the end-to-end backprop gradient of the **top-layer objective** on the same batch
(global BP-SSL: ``∇_{W_l} L_L``). Per layer we report the cosine similarity of the two updates (the
paper's "weight update cos-similarity", averaged over batches as in the official code), the relative
norm ``‖Δ_rule‖/‖Δ_BP‖`` and the squared deviation ``‖Δ_rule − Δ_BP‖²`` (the quantity of Thm 3.3).

Only :meth:`Rule.step` is used, so any rule can be measured (local, dfa, predictive coding, modules, ...).
The reference objective is, by default, the rule's own objective of the top layer (same ``B``), so the
top layer of a local rule aligns exactly; pass ``reference=`` for anything else (e.g. a
:class:`~localssl.rules.backprop.BackpropRule` with its own objective).

Definition 3.4 (optimal local update): ``B`` is not trained on the local loss but to minimise the
squared error between the local and the BP gradient. :func:`match_feedback_grads` puts the gradient of
that error into the feedback matrices' ``.grad`` (official code: error on the activity gradient
``∂L_l/∂h_l`` vs ``∂L_L/∂h_l``; ``match='update'`` uses the weight updates themselves), and
:func:`optimal_feedback` fits a copy of a rule's ``B`` that way: its alignment is the bound.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable

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


@dataclasses.dataclass
class LayerAlignment:
    """Alignment of one layer's update with the BP update, over ``n_batches`` batches."""

    layer: int  # 1-based
    cosine: float  # mean over batches of cos(Δ_rule, Δ_BP)
    cosine_std: float
    rel_norm: float  # mean of ‖Δ_rule‖ / ‖Δ_BP‖
    sq_error: float  # mean of ‖Δ_rule − Δ_BP‖²
    n_batches: int
    per_batch: list[float] = dataclasses.field(default_factory=list, repr=False)  # cosine of every batch


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return float(torch.dot(a, b) / (na * nb))


def gradient_alignment(
    encoder: LayeredEncoder,
    rule: Rule,
    batches: Iterable[ViewBatch],
    reference: Rule | None = None,
    params: str = "weight",
) -> list[LayerAlignment]:
    """Per-layer alignment of ``rule``'s updates with ``reference``'s (default: BP of the rule's top
    objective) on each batch; the mean and std over batches as in the official analysis code."""
    reference = reference if reference is not None else backprop_reference(rule, encoder)
    cos: list[list[float]] = [[] for _ in encoder.layers]
    rel: list[list[float]] = [[] for _ in encoder.layers]
    err: list[list[float]] = [[] for _ in encoder.layers]
    for views in batches:
        g_rule = rule_updates(encoder, rule, views, params)
        g_bp = rule_updates(encoder, reference, views, params)
        for i, (a, b) in enumerate(zip(g_rule, g_bp)):
            cos[i].append(cosine(a, b))
            rel[i].append(float(a.norm() / b.norm()) if b.norm() > 0 else float("nan"))
            err[i].append(float((a - b).square().sum()))
    if not cos[0]:
        raise ValueError("gradient_alignment needs at least one batch")
    out = []
    for i in range(len(encoder.layers)):
        c = torch.tensor(cos[i], dtype=torch.float64)
        out.append(
            LayerAlignment(
                layer=i + 1,
                cosine=float(c.nanmean()),
                cosine_std=float(c[~c.isnan()].std(unbiased=False)) if (~c.isnan()).sum() > 1 else 0.0,
                rel_norm=float(torch.tensor(rel[i], dtype=torch.float64).nanmean()),
                sq_error=float(torch.tensor(err[i], dtype=torch.float64).mean()),
                n_batches=len(cos[i]),
                per_batch=cos[i],
            )
        )
    return out


def format_alignment(rows: list[LayerAlignment]) -> str:
    lines = ["layer  cosine  ±std    rel_norm", "-----  ------  -----  --------"]
    for r in rows:
        c = "   nan" if math.isnan(r.cosine) else f"{r.cosine:6.4f}"
        lines.append(f"{r.layer:5d}  {c}  {r.cosine_std:5.3f}  {r.rel_norm:8.3g}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- Definition 3.4
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


# ---------------------------------------------------------------------- localssl align RUN_DIR
def align_run(run_dir, batches: int = 8, split: str = "test", optimal_steps: int = 0, params: str = "weight") -> dict:
    """Alignment of a trained run's rule with BP of its top-layer objective, on ``batches`` batches of
    ``split`` made by the run's own views (seeded); writes ``RUN_DIR/alignment.json``. With
    ``optimal_steps > 0`` the Def. 3.4 bound is added: a copy of the rule's ``B`` fitted for that many
    Adam steps on batches of the pretraining data, then measured on the same held-out batches."""
    from pathlib import Path

    from localssl.build import build, resolve_device
    from localssl.checkpoint import read_run_checkpoint
    from localssl.config import read_run_config
    from localssl.data import data_info, load_split
    from localssl.data.pretrain import load_pretrain_data
    from localssl.utils import atomic_write_json

    run_dir = Path(run_dir)
    if batches < 1:
        raise ValueError(f"--batches must be >= 1, got {batches}")
    cfg = read_run_config(run_dir)
    device = resolve_device(cfg.train.device)
    comp = build(cfg, device)
    ckpt, _ = read_run_checkpoint(run_dir, cfg, map_location=device)
    comp.encoder.load_state_dict(ckpt["encoder"])
    comp.rule.load_state_dict(ckpt["rule"])
    data = load_split(cfg.data.name, split, cfg.data.root, data_info(cfg.data))
    bs = cfg.train.batch_size
    if len(data) < batches * bs:
        raise ValueError(f"the {split} split has {len(data)} images, fewer than {batches} batches of {bs}")

    def make_batches(images: torch.Tensor, seed: int) -> list[ViewBatch]:
        torch.manual_seed(seed)
        return [comp.views(images[i * bs : (i + 1) * bs].to(device)) for i in range(batches)]

    held_out = make_batches(data.images, cfg.train.seed)
    rows = gradient_alignment(comp.encoder, comp.rule, held_out, params=params)
    result: dict = {
        "run_dir": str(run_dir),
        "rule": dataclasses.asdict(cfg.rule),
        "reference": "backprop of the rule's own top-layer objective (same B)",
        "params": params,
        "split": split,
        "n_batches": batches,
        "batch_images": bs,
        "checkpoint_epoch": int(ckpt.get("epoch", 0)),
        "layers": [{k: v for k, v in dataclasses.asdict(r).items() if k != "per_batch"} for r in rows],
    }
    table = "alignment with BP (" + split + f", {batches} batches)\n" + format_alignment(rows)
    if optimal_steps > 0:
        train_batches = make_batches(load_pretrain_data(cfg).images, cfg.train.seed + 1)
        fitted = optimal_feedback(comp.encoder, comp.rule, train_batches, steps=optimal_steps, lr=cfg.train.lr)
        opt_rows = gradient_alignment(comp.encoder, fitted, held_out, params=params)
        result["optimal_feedback"] = {
            "steps": optimal_steps,
            "layers": [{k: v for k, v in dataclasses.asdict(r).items() if k != "per_batch"} for r in opt_rows],
        }
        table += "\n\nDef. 3.4 optimal-feedback bound\n" + format_alignment(opt_rows)
    atomic_write_json(result, run_dir / "alignment.json")
    result["table"] = table
    return result
