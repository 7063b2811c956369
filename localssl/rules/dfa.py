"""Direct feedback alignment (Nøkland 2016) of one top-layer objective: "naive CLAPP DFA" of
CLAPP++ (Delrocq et al. 2026, App. C, Eq. 8; Table 2: STL-10 52.30).

The top layer ``L`` learns from the exact gradient of its objective (its input detached, so this is
backprop's top-layer update). The objective's error at the top activity, ``e = ∂L/∂h_L``, is sent to
every hidden layer ``l < L`` through a fixed random matrix ``B_l`` and used as that layer's error:
layer ``l`` descends ``⟨h_l, stopgrad(B_l e)⟩`` through its own non-linearity, input detached. For a
dense layer ``h_l = f(a_l)``, ``a_l = W_l x_l`` this is the DFA update (Nøkland 2016, Eq. 3)

    ΔW_l ∝ −(B_l e ⊙ f'(a_l)) x_lᵀ ,

and for a conv layer (+ max-pool) the same formula with the conv's transposed operator: ``B_l`` maps
``e`` onto the whole feature map ``C_l × H_l × W_l`` (a dense projection, not one shared over
locations).

``B_l`` has i.i.d. ``N(0, 1/d_e)`` entries drawn from ``seed`` (per layer), is a non-persistent buffer
(rebuilt identically from the seed, so checkpoints stay small) and is never trained. ``d_e`` is the
size of the projected error:

* ``error='map'``: ``e`` flattened over the whole top feature map (``C_L·H_L·W_L``);
* ``error='channels'``: ``e`` averaged over the top map's locations (``C_L``). When the top objective
  pools globally, ``e`` is the same at every location, and ``B_l`` applied to the spatial mean with
  ``N(0, 1/C_L)`` entries has exactly the distribution of the ``map`` projection (summing a map
  matrix's ``H_L·W_L`` location columns gives ``N(0, 1/C_L)`` entries), at ``H_L·W_L`` times less memory;
* ``error='auto'`` (default): ``channels`` when the objective's ``pooling`` is ``global``, else ``map``.

Memory: ``Σ_l D_l·d_e`` floats (CIFAR-10, full-width VGG-6, global pooling: 1.3 GB; width 1/4: 22 MB).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec, PoolingConfig
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.views.base import ViewBatch

MAX_FEEDBACK_BYTES = 16 * 2**30


@dataclasses.dataclass
class DFAConfig:
    name: str = "dfa"
    seed: int = 0  # seed of the fixed random feedback matrices B_l
    error: str = "auto"  # auto | map | channels: what of e = ∂L/∂h_L is projected (see module docstring)

    def __post_init__(self) -> None:
        if self.error not in ("auto", "map", "channels"):
            raise ConfigError(f"rule.error must be auto, map or channels, got '{self.error}'")


def feedback_matrix(d_out: int, d_in: int, seed: int, layer: int) -> torch.Tensor:
    """``B_l`` (``d_out × d_in``), i.i.d. ``N(0, 1/d_in)``, a function of ``(seed, layer)`` only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + layer)
    return torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in)


@RULES.register("dfa", DFAConfig)
class DFARule(Rule):
    LAYER_PARALLEL_REFUSAL = (
        "DFA sends the top objective's output error to every hidden layer: a stage cannot update before the "
        "top stage has run the same batch and sent its error back down (backward locking), so no two stages "
        "could work at once; train it in one process or data-parallel (torchrun without "
        "train.parallel=layers), or use a local rule (clapp++, scff, lpl, ff, ...) for stages"
    )

    def __init__(self, cfg: DFAConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        top = layers[-1]
        self.top = len(layers)
        mode = cfg.error
        if mode == "auto":
            pools_globally = isinstance(objective_cfg, PoolingConfig) and objective_cfg.pooling == "global"
            mode = "channels" if pools_globally else "map"
        self.error_mode = "map" if len(top.shape) == 1 else mode
        d_e = top.shape[0] if self.error_mode == "channels" else math.prod(top.shape)
        n_bytes = 4 * d_e * sum(math.prod(spec.shape) for spec in layers[:-1])
        if n_bytes > MAX_FEEDBACK_BYTES:
            raise ConfigError(
                f"DFA feedback matrices would take {n_bytes / 2**30:.1f} GiB (error={self.error_mode}, "
                f"d_e={d_e}); use objective.pooling=global with rule.error=channels, or a smaller model.width"
            )
        self.objectives = nn.ModuleDict({str(self.top): build_objective(objective_cfg, top, [top])})
        for spec in layers[:-1]:
            b = feedback_matrix(math.prod(spec.shape), d_e, cfg.seed, spec.index + 1)
            self.register_buffer(f"B{spec.index + 1}", b, persistent=False)

    def feedback(self, layer: int) -> torch.Tensor:
        """The fixed matrix ``B_layer`` (1-based layer number, hidden layers only)."""
        return getattr(self, f"B{layer}")

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """The projected part of the top error: flattened map, or its per-channel spatial mean."""
        if self.error_mode == "channels" and e.dim() == 4:
            return e.mean(dim=(2, 3))
        return e.flatten(1)

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        hs, h = [], views.x
        with ctx.autocast():
            for layer in encoder.layers:
                h = layer(h.detach())
                hs.append(h)
            top = hs[-1]
            out = self.objectives[str(self.top)](top, [top], views)
        (e,) = torch.autograd.grad(out.loss, top, retain_graph=True)
        e_in = self.project(e.float())
        total = out.loss
        metrics: Metrics = {}
        for i, h_l in enumerate(hs[:-1]):
            signal = (e_in @ self.feedback(i + 1).T).view(h_l.shape).to(h_l.dtype)
            total = total + (h_l * signal).sum()
            metrics[f"feedback_norm_l{i + 1}"] = signal.norm().detach() / math.sqrt(len(signal))
        total.backward()
        self.record(metrics, self.top, out)
        return metrics
