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
squared error between the local and the BP gradient; :func:`align_run` with ``optimal_steps`` measures a
copy of the rule whose ``B`` is fitted that way (the bound). The gradient maths lives with the rules:
the BP reference and the per-layer updates in :mod:`localssl.rules.global_gradient`, the Def. 3.4 fit
in :mod:`localssl.rules.optimal_feedback`; this module measures and reports.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

import torch

from localssl.build import build, resolve_device
from localssl.checkpoint import read_run_checkpoint
from localssl.config import read_run_config
from localssl.data import data_info, load_split
from localssl.data.pretrain import load_pretrain_data
from localssl.models.base import LayeredEncoder
from localssl.rules.base import Rule
from localssl.rules.global_gradient import backprop_reference, rule_updates
from localssl.rules.optimal_feedback import optimal_feedback
from localssl.utils import atomic_write_json
from localssl.views.base import ViewBatch


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


# ---------------------------------------------------------------------- localssl align RUN_DIR
def align_run(run_dir, batches: int = 8, split: str = "test", optimal_steps: int = 0, params: str = "weight") -> dict:
    """Alignment of a trained run's rule with BP of its top-layer objective, on ``batches`` batches of
    ``split`` made by the run's own views (seeded); writes ``RUN_DIR/alignment.json``. With
    ``optimal_steps > 0`` the Def. 3.4 bound is added: a copy of the rule's ``B`` fitted for that many
    Adam steps on batches of the pretraining data, then measured on the same held-out batches."""
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
