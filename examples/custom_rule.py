"""A new credit-assignment rule defined and registered from user code, then trained and probed.

Local learning with overlapping blocks of two layers, after LoCo (Xiong, Ren & Urtasun, "LoCo: Local
Contrastive Representation Learning", NeurIPS 2020), whose overlapping stages let each local loss also
reach the layer below. Layer l's loss L_l trains layer l (as CLAPP's local rule does) and, scaled by β,
the layer l−1 that feeds it; no error travels further down:

    ΔW_l ∝ −( ∂L_l/∂W_l + β · ∂L_{l+1}/∂W_l ),    L_{l+1} computed on layer_{l+1}(layer_l(h_{l−1}))

with h_{l−1} detached. β = 0 is the local rule (``rule.name=local``); β = 1 is LoCo's overlap of one layer.

How a rule talks to the trainer (:class:`localssl.Rule`): ``step`` runs the forward passes under
``ctx.autocast()``, leaves every gradient in ``.grad``, and calls ``ctx.layer_done(i)`` as soon as layer
i's gradient is final (here: once the layer above has sent its share), so the trainer can all-reduce or
step that layer while the next one runs.

    python examples/custom_rule.py model.width=0.125 train.epochs=1          # any key=value override
    localssl probe RUN_DIR --import examples/custom_rule.py                  # later, from the CLI
"""

from __future__ import annotations

import dataclasses
import sys

import localssl
from localssl import NO_CONTEXT, RULES, LayeredEncoder, LayerSpec, Metrics, Rule, StepContext, ViewBatch


@dataclasses.dataclass
class OverlapConfig:
    name: str = "local-overlap"
    beta: float = 1.0  # β: weight of the gradient a layer receives from the loss of the layer above

    def __post_init__(self) -> None:
        if not 0 <= self.beta <= 1:
            raise localssl.ConfigError(f"rule.beta must be in [0, 1], got {self.beta}")


@RULES.register("local-overlap", OverlapConfig)
class OverlapRule(Rule):
    """One objective per layer, each with the layer's own activity as its reference (as ``local``)."""

    def __init__(self, cfg: OverlapConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        for spec in layers:
            self.objectives[str(spec.index + 1)] = localssl.build_objective(objective_cfg, spec, [spec])

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        metrics: Metrics = {}
        n = len(encoder.layers)
        x, below = views.x, None  # layer i's input; layer i−1's output with its graph kept for L_i
        for i, layer in enumerate(encoder.layers):
            x = x.detach().requires_grad_(below is not None)  # ∂L_i/∂h_{i−1} lands in x.grad
            with ctx.autocast():
                h = layer(x)
                out = self.objectives[str(i + 1)](h, [h], views)
            keep = self.cfg.beta > 0 and i < n - 1  # layer i's graph waits for L_{i+1}
            if out.loss.requires_grad:
                out.loss.backward(retain_graph=keep)  # ∂L_i/∂W_i (and the objective's own parameters)
            if below is not None and x.grad is not None:
                below.backward(self.cfg.beta * x.grad)  # + β ∂L_i/∂W_{i−1}; frees layer i−1's graph
            if i > 0:
                ctx.layer_done(i - 1)  # both parts of layer i−1's gradient are in
            self.record(metrics, i + 1, out)
            x, below = h, (h if keep and h.requires_grad else None)
        ctx.layer_done(n - 1)
        return metrics


def main(overrides: list[str]) -> dict:
    """Pretrain VGG-6 on CLAPP++'s views and objective with the new rule, then fit the linear probe."""
    cfg = localssl.load_config(
        "clapp++", ["name=local-overlap", "rule.name=local-overlap", *overrides]
    )  # runs/local-overlap-*
    run_dir = localssl.pretrain(cfg)
    result = localssl.probe(run_dir)
    print(f"{run_dir}: linear-probe test accuracy {result['test_acc_pct']:.2f} %")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
