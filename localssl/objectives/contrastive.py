"""The common contrastive formalism of local SSL (Delrocq et al. 2026, Sec. 3, Table 1).

Score of a target activity ``h`` against a reference ``r``:  ``s(h, r) = hᵀ B r``  (pooled, flattened).
With a decreasing function ``f`` the layer loss is

    type 1:  L = E[f(s⁺)] + E[f(−s⁻)]          (CLAPP hinge: relu(1 − s⁺) + relu(1 + s⁻))
    type 2:  L = E[f(s⁺ − s⁻)]                   (PhyLL, and the theory of Sec. 3.1)

``B`` is trainable (CLAPP-like), the identity (Forward-Forward family), or fixed random (ablation).
CLAPP++ pools each layer with ``AvgPool2d(k_l)`` before flattening, so the dense ``B`` couples
channels *and* locations ("2D spatial dependence"); global pooling removes that dependence.

With several references (CLAPP++both: same layer + top layer) the layer loss is the sum of one loss
per reference, each with its own ``B_j`` and the same positive/negative draws:
``L = Σ_j L(hᵀB_j r_j)`` (``combine='sum_losses'``, the default) — the paper's "we optimize the sum of
two losses at each layer" and the authors' script (``--extra_lateral_loss``: a second ``CPLoss`` with
the same-layer reference added to the top-layer one). ``combine='sum_scores'`` instead scores one
hinge on ``hᵀ(Σ_j B_j r_j)`` — one ``B`` over the concatenated contexts, the official code's unused
``--predict_module_num both``.

The Forward-Forward family is this formalism with ``B = I`` and the reference = the target row itself
(``r = h``, not detached), so ``s = hᵀh`` is the *goodness* (Table 1):

* ``score``: how ``hᵀBr`` is reduced — ``dot`` (sum, CLAPP), ``mean`` (divided by the dimension: FF's
  goodness as the mean square), ``cosine`` (both sides L2-normalised: PhyLL), ``channel_mean`` (one
  score per location, the mean over channels: SCFF's goodness ``G = mean_c relu(out)²``);
* ``threshold_pos`` / ``threshold_neg``: θ subtracted from the positive / negative scores, so that
  ``f = softplus`` gives FF's ``softplus(θ − G⁺) + softplus(G⁻ − θ)`` (the BCE of logits ``G − θ``)
  and SCFF's ``softplus(θ₁ − G⁺) + softplus(G⁻ − θ₂)``; a list gives one value per layer;
* ``pos_l2``: ``λ E‖s⁺‖₂`` over locations (SCFF's regulariser of the positive goodness map).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from localssl.objectives.base import LayerSpec, LossOut, SpatialPool, resolve_pool_kernel
from localssl.objectives.kept import KeptBuffers, kept_linear, uses_kept_path
from localssl.registry import OBJECTIVES, ConfigError
from localssl.views.base import ViewBatch

DECREASING_F = ("hinge", "softplus", "linear", "sigmoid")
SCORES = ("dot", "mean", "cosine", "channel_mean")
PerLayer = float | list[float]


@dataclasses.dataclass
class ContrastiveConfig:
    name: str = "contrastive"
    f: str = "hinge"  # hinge relu(m−x) | softplus log(1+e^(m−x)) | linear −x | sigmoid σ(m−x)
    loss_type: int = 1  # 1: f(s⁺) + f(−s⁻);  2: f(s⁺ − s⁻)
    margin: float | str = "auto"  # auto: 1 for hinge (CLAPP), 0 otherwise
    B: str = "trainable"  # trainable | identity | fixed (random, never updated)
    B_rank: int | None = None  # low-rank B = U V (Delrocq et al. App. D)
    B_l2: float = 0.0  # λ‖B‖²_F added to the loss (Eq. 1)
    pooling: str | list[int] = "paper"  # paper (dataset kernels) | global | none | [k1, ..., kL]
    combine: str = "sum_losses"  # several references: sum_losses (Σ_j L_j, paper) | sum_scores (one L)
    detach_reference: bool = True  # the reference (context) carries no gradient
    either_pos_or_neg: bool = False  # CLAPP 2021: each sample takes only its pos or its neg term
    score: str = "dot"  # dot (hᵀBr) | mean (hᵀBr / dim) | cosine (PhyLL) | channel_mean (per location, SCFF)
    threshold_pos: PerLayer = 0.0  # θ⁺ subtracted from positive scores (FF θ, SCFF θ₁); list: per layer
    threshold_neg: PerLayer | None = None  # θ⁻ for negative scores (SCFF θ₂); None: same as threshold_pos
    pos_l2: PerLayer = 0.0  # λ E‖s⁺‖₂ over locations (SCFF); list: per layer

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"objective.score must be one of {SCORES}, got '{self.score}'")
        if self.f not in DECREASING_F:
            raise ConfigError(f"objective.f must be one of {DECREASING_F}, got '{self.f}'")
        if self.loss_type not in (1, 2):
            raise ConfigError(f"objective.loss_type must be 1 or 2, got {self.loss_type}")
        if self.B not in ("trainable", "identity", "fixed"):
            raise ConfigError(f"objective.B must be trainable, identity or fixed, got '{self.B}'")
        if self.combine not in ("sum_scores", "sum_losses"):
            raise ConfigError(f"objective.combine must be sum_losses or sum_scores, got '{self.combine}'")

    @property
    def margin_value(self) -> float:
        if self.margin == "auto":
            return 1.0 if self.f == "hinge" else 0.0
        return float(self.margin)

    def layer_values(self, index: int) -> tuple[float, float, float]:
        """``(θ⁺, θ⁻, λ)`` for the layer with 0-based ``index``."""
        pos = per_layer(self.threshold_pos, index, "threshold_pos")
        neg = pos if self.threshold_neg is None else per_layer(self.threshold_neg, index, "threshold_neg")
        return pos, neg, per_layer(self.pos_l2, index, "pos_l2")


def per_layer(value: PerLayer, index: int, key: str) -> float:
    """A scalar, or the ``index``-th entry of a per-layer list."""
    if isinstance(value, (list, tuple)):
        if index >= len(value):
            raise ConfigError(f"objective.{key} lists {len(value)} values but layer {index + 1} needs one")
        return float(value[index])
    return float(value)


def decreasing(f: str, x: torch.Tensor, margin: float) -> torch.Tensor:
    """The decreasing function ``f`` of Table 1, applied elementwise."""
    if f == "hinge":
        return F.relu(margin - x)
    if f == "softplus":
        return F.softplus(margin - x)
    if f == "linear":
        return -x
    if f == "sigmoid":
        return torch.sigmoid(margin - x)
    raise ValueError(f)


def contrastive_loss(
    s_pos: torch.Tensor, s_neg: torch.Tensor, cfg: ContrastiveConfig, either: torch.Tensor | None = None
) -> torch.Tensor:
    """Type-1 or type-2 loss of positive and negative scores (means over the batch)."""
    m = cfg.margin_value
    if cfg.loss_type == 2:
        if s_pos.shape != s_neg.shape:
            raise ValueError("a type-2 loss pairs every positive with one negative: equal counts needed")
        return decreasing(cfg.f, s_pos - s_neg, m).mean()
    lp, ln = decreasing(cfg.f, s_pos, m), decreasing(cfg.f, -s_neg, m)
    if either is not None:
        either = either.view(-1, *([1] * (lp.dim() - 1)))  # one draw per sample, also for per-location scores
        return torch.where(either, lp, ln).mean()
    return lp.mean() + ln.mean()


class Prediction(nn.Module):
    """``r ↦ B r`` from a reference's pooled dim to the target's pooled dim (bias-free).

    A dense ``B`` inside :func:`~localssl.objectives.kept.kept_b_gradients` under bf16 autocast is computed
    in kept memory (:mod:`localssl.objectives.kept`: the same values, no ``B``-sized allocation per step)."""

    def __init__(self, d_ref: int, d_target: int, kind: str, rank: int | None) -> None:
        super().__init__()
        self.kind = kind
        self.kept = KeptBuffers()
        if kind == "identity":
            if d_ref != d_target:
                raise ConfigError(
                    f"objective.B=identity needs equal target and reference dims, got {d_target} and {d_ref}"
                )
            self.maps = nn.Identity()
        elif rank is not None:
            self.maps = nn.Sequential(nn.Linear(d_ref, rank, bias=False), nn.Linear(rank, d_target, bias=False))
        else:
            self.maps = nn.Linear(d_ref, d_target, bias=False)
        if kind == "fixed":
            for p in self.maps.parameters():
                p.requires_grad_(False)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        if isinstance(self.maps, nn.Linear) and uses_kept_path(self.maps, r):
            return kept_linear(self.maps, r, self.kept)
        return self.maps(r)

    def matrix(self) -> torch.Tensor:
        """The effective ``B`` (d_target × d_ref)."""
        if isinstance(self.maps, nn.Identity):
            raise ValueError("identity B has no matrix")
        if isinstance(self.maps, nn.Sequential):
            return self.maps[1].weight @ self.maps[0].weight
        return self.maps.weight

    def l2(self) -> torch.Tensor:
        return self.matrix().square().sum()


@OBJECTIVES.register("contrastive", ContrastiveConfig)
class ContrastiveObjective(nn.Module):
    """One layer's contrastive loss ``L(h; r_1..r_J)`` in the common formalism."""

    def __init__(self, cfg: ContrastiveConfig, target: LayerSpec, refs: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool = SpatialPool(resolve_pool_kernel(cfg.pooling, target))
        d_target = self.pool.out_dim(target.shape)
        self.ref_pools = nn.ModuleList(SpatialPool(resolve_pool_kernel(cfg.pooling, r)) for r in refs)
        self.B = nn.ModuleList(
            Prediction(pool.out_dim(r.shape), d_target, cfg.B, cfg.B_rank) for pool, r in zip(self.ref_pools, refs)
        )
        self.target_dim = d_target
        self.channels = target.shape[0]
        if cfg.score == "channel_mean" and (len(target.shape) != 3 or self.pool.kernel is None):
            raise ConfigError(
                "objective.score=channel_mean scores every location of a (C, H, W) map: "
                "use a convolutional layer and objective.pooling=none (or a pool kernel)"
            )
        self.theta_pos, self.theta_neg, self.pos_l2 = cfg.layer_values(target.index)

    def score(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Reduce ``z ⊙ (Br)`` to one score per row (or per row and location for ``channel_mean``)."""
        kind = self.cfg.score
        if kind == "cosine":
            return (F.normalize(z, dim=-1) * F.normalize(p, dim=-1)).sum(-1)
        if kind == "channel_mean":
            return (z * p).view(z.shape[0], self.channels, -1).mean(1)
        return (z * p).mean(-1) if kind == "mean" else (z * p).sum(-1)

    def scores(self, z: torch.Tensor, preds: torch.Tensor, views: ViewBatch) -> tuple[torch.Tensor, torch.Tensor]:
        s_pos = self.score(z[views.pos], preds[views.pos_ref])
        s_neg = self.score(z[views.neg], preds[views.neg_ref])
        return s_pos, s_neg

    def loss(self, s_pos: torch.Tensor, s_neg: torch.Tensor, either: torch.Tensor | None) -> torch.Tensor:
        loss = contrastive_loss(s_pos - self.theta_pos, s_neg - self.theta_neg, self.cfg, either)
        if self.pos_l2 > 0:
            loss = loss + self.pos_l2 * s_pos.reshape(s_pos.shape[0], -1).norm(dim=1).mean()
        return loss

    def forward(self, h: torch.Tensor, refs: list[torch.Tensor], views: ViewBatch) -> LossOut:
        if len(refs) != len(self.B):
            raise ValueError(f"objective built for {len(self.B)} reference(s), called with {len(refs)}")
        z = self.pool(h)
        preds = []
        for r, pool, b in zip(refs, self.ref_pools, self.B):
            r = pool(r.detach() if self.cfg.detach_reference else r)
            preds.append(b(r))
        either = None
        if self.cfg.either_pos_or_neg:
            either = torch.rand(views.pos.numel(), device=z.device) < 0.5
        if self.cfg.combine == "sum_scores" or len(preds) == 1:
            s_pos, s_neg = self.scores(z, torch.stack(preds).sum(0) if len(preds) > 1 else preds[0], views)
            loss = self.loss(s_pos, s_neg, either)
        else:
            loss = z.new_zeros(())
            for p in preds:
                s_pos, s_neg = self.scores(z, p, views)
                loss = loss + self.loss(s_pos, s_neg, either)
        if self.cfg.B_l2 > 0 and self.cfg.B != "identity":
            loss = loss + self.cfg.B_l2 * sum(b.l2() for b in self.B)
        metrics = {"s_pos": s_pos.detach().mean(), "s_neg": s_neg.detach().mean()}
        if s_pos.shape == s_neg.shape:
            metrics["acc"] = (s_pos.detach() > s_neg.detach()).float().mean()
        return LossOut(loss, metrics)
