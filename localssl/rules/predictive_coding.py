"""Incremental predictive coding (iPC; Salvatori et al., ICLR 2024, "A stable, fast, and fully automatic
learning algorithm for predictive coding networks", Alg. 1) with any top-layer objective: the
"naive CLAPP predictive coding" of CLAPP++ (Delrocq et al. 2026, App. C, Eq. 9–11, Tables 2 and A3).

Every layer's activity ``h_l`` (``l = 1..L``; ``h_0 = x`` is clamped) is a variable, initialised by a
forward pass. The energy of a batch of ``N`` rows is (App. C, Eq. 9)

    E = (1/N) Σ_n Σ_{l=1..L} ½ ‖h_l^n − f_l(h_{l−1}^n)‖²  +  L(h_L)

with ``f_l`` the encoder's layer ``l`` and ``L`` the top objective (a batch mean, with its own
parameters: read-out, ``B``, head). Each of the ``T`` iterations computes ``∂E/∂h`` and ``∂E/∂W`` at the
current state and then updates both (iPC: no separate inference and learning phases):

* activities: ``h ← h − α v``, ``v ← μ v + N ∂E/∂h`` (SGD with momentum on the per-sample energy, as
  pcx's ``scale_by_batch_size``); with ``ε_l = h_l − f_l(h_{l−1})`` this is Eq. 10,
  ``∂E_n/∂h_l = ε_l − J_{f_{l+1}}ᵀ ε_{l+1}`` (``+ ∂L/∂h_L`` at the top);
* weights: ``∂E/∂W_l = −(1/N) Σ_n J_{W_l}ᵀ ε_l`` — Hebbian, ``−(ε_l ⊙ f'(a_l)) h_{l−1}ᵀ`` for a dense
  layer (Eq. 11); objective parameters get ``∂L/∂θ`` at the current ``h_L``.

The weight update uses the trainer's optimizer (Adam in the paper), which the trainer attaches to the
rule: the first ``T − 1`` weight gradients are applied by it inside :meth:`step`, the last is left in
``.grad`` for the trainer's own step, so one batch makes ``T`` weight updates as in iPC. Without an
attached optimizer (gradient-alignment measurements, tests) the weights stay fixed during the
batch and ``.grad`` holds the sum of the ``T`` weight gradients: iPC's update to first order in the
learning rate.

At the forward-pass initialisation every ``ε_l`` is 0, so at ``t = 1`` only the objective's parameters
get a gradient; the error reaches layer ``L − k`` after ``k + 1`` iterations. For small ``α`` the layer
``L − k`` error is ``∝ α^{k+1}`` times backprop's, which is why the summed update aligns with backprop
(tested on a linear network).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec, LossOut
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class PredictiveCodingConfig:
    name: str = "predictive_coding"
    T: int = 9  # inference iterations per batch (CLAPP++ Table A4 grid: 1, 9, 17)
    alpha: float = 0.1  # activity step size (grid: 0.01, 0.1, 0.5)
    momentum: float = 0.5  # SGD momentum of the activity updates (pcx iPC configs use 0.25–0.8)

    def __post_init__(self) -> None:
        if int(self.T) != self.T or self.T < 1:
            raise ConfigError(f"rule.T (inference iterations) must be an integer >= 1, got {self.T}")
        if not self.alpha > 0:
            raise ConfigError(f"rule.alpha (activity step size) must be > 0, got {self.alpha}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"rule.momentum must be in [0, 1), got {self.momentum}")


@dataclasses.dataclass
class Energy:
    total: torch.Tensor  # E (differentiable)
    prediction_error: torch.Tensor  # (1/N) Σ_n Σ_l ½‖ε_l^n‖² (differentiable)
    top: LossOut  # the objective at h_L


@dataclasses.dataclass
class Trace:
    energies: list[torch.Tensor]  # E at each of the T evaluated states (detached)
    first: Energy  # at the forward-pass initialisation
    last: Energy  # at the state of the last (T-th) gradient


@RULES.register("predictive_coding", PredictiveCodingConfig)
class PredictiveCodingRule(Rule):
    LAYER_PARALLEL_REFUSAL = (
        "incremental predictive coding couples every layer's activity with both neighbours' (the energy's "
        "terms l and l+1) and runs T inference iterations per batch: each stage would exchange activities "
        "and errors with the stage below and the stage above on every iteration (backward locking, T times "
        "per batch), so no two stages could work at once; train it in one process or data-parallel "
        "(torchrun without train.parallel=layers), or use a local rule (clapp++, scff, lpl, ff, ...) for stages"
    )

    def __init__(self, cfg: PredictiveCodingConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        top = layers[-1]
        self.top = len(layers)
        self.objectives = nn.ModuleDict({str(self.top): build_objective(objective_cfg, top, [top])})

    def energy(
        self,
        encoder: LayeredEncoder,
        x: torch.Tensor,
        hs: list[torch.Tensor],
        views: ViewBatch,
        ctx: StepContext = NO_CONTEXT,
    ) -> Energy:
        """``E`` of Eq. 9 at activities ``hs`` (``hs[l-1]`` = ``h_l``) for input ``x``."""
        n = x.shape[0]
        below = [x, *hs[:-1]]
        err = x.new_zeros(())
        with ctx.autocast():
            for layer, h_in, h in zip(encoder.layers, below, hs):
                eps = h - layer(h_in)
                err = err + 0.5 * eps.square().sum() / n
            top = self.objectives[str(self.top)](hs[-1], [hs[-1]], views)
        return Energy(err + top.loss, err, top)

    def run(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Trace:
        """``T`` iPC iterations on this batch; weight gradients end in ``.grad`` (see module docstring)."""
        cfg, x = self.cfg, views.x
        n = x.shape[0]
        with torch.no_grad(), ctx.autocast():
            hs = [h.to(x.dtype) for h in encoder(x)]  # activity variables in the input's precision
        hs = [h.clone().requires_grad_(True) for h in hs]
        velocity = [torch.zeros_like(h) for h in hs]
        energies: list[torch.Tensor] = []
        first = None
        for t in range(cfg.T):
            en = self.energy(encoder, x, hs, views, ctx)
            first = en if first is None else first
            energies.append(en.total.detach())
            en.total.backward()
            if t == cfg.T - 1:
                break  # the last weight gradient stays in .grad; the activities are discarded
            with torch.no_grad():
                for h, v in zip(hs, velocity):
                    v.mul_(cfg.momentum).add_(h.grad, alpha=n)
                    h.sub_(v, alpha=cfg.alpha)
                    h.grad = None
            if ctx.optimizer is not None:
                ctx.optimizer.step()
                ctx.optimizer.zero_grad(set_to_none=True)
        assert first is not None
        return Trace(energies, first, en)

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        trace = self.run(encoder, views, ctx)
        metrics: Metrics = {}
        self.record(metrics, self.top, trace.first.top)  # the feedforward network's loss
        metrics["pc_energy"] = trace.energies[-1]
        metrics["pc_error"] = trace.last.prediction_error.detach()
        return metrics
