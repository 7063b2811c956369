"""Local credit assignment: every layer learns from its own loss, its input detached.

The reference of layer ``l``'s loss is (CLAPP++, Delrocq et al. 2026, Sec. 3.2 and Eq. 3):

* ``same`` — the layer's own activity (CLAPP, CLAPP++);
* ``top``  — the top layer's activity, a *direct feedback* signal (CLAPP++DFB);
* ``both`` — both references (CLAPP++both).

References are detached by the objective, so no error ever crosses a layer boundary.

``streaming=True`` runs forward → loss → backward layer by layer and frees each layer's graph before
the next layer, so activation memory scales with one layer instead of the depth. With a top-layer
reference the top activity is needed first: streaming then pays one extra no-grad forward pass;
``streaming=False`` keeps every layer's graph and does one backward of the summed loss instead.
Both paths give the same gradients (the top reference is detached either way); the benchmark
``benchmarks/streaming_tradeoff.py`` measures their time and activation memory.

``recompute_chunks=K`` (streaming only) trades compute for memory: each layer runs forward without a
graph, the loss gives the gradient with respect to the layer's output, then the layer runs again on
``K`` chunks of the batch, each with its graph, and that gradient is propagated chunk by chunk. The
result is the same (up to float summation order); one extra forward pass per layer buys a working
set of one chunk of one layer (``benchmarks/RESULTS.md``, Scale and speed).

After a layer's backward the rule calls :meth:`Rule.layer_done` (streaming: right away, before the
next layer runs; summed: for every layer after the one backward), which lets the trainer start that
layer's gradient all-reduce and, with ``train.step_each_layer``, step its optimizer at once.

The rule's steps run inside :func:`~localssl.objectives.kept.kept_b_gradients`: a dense ``B`` then keeps its
gradient (and, under bf16 autocast, its cast) in memory kept across steps instead of allocating ``B``-sized
tensors every step (the same values bit for bit).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from localssl.models.base import LayeredEncoder
from localssl.objectives.base import LayerSpec, LossOut
from localssl.objectives.kept import kept_b_gradients
from localssl.registry import RULES, ConfigError
from localssl.rules.base import NO_CONTEXT, Metrics, Rule, StepContext, build_objective
from localssl.views.base import ViewBatch


@dataclasses.dataclass
class LocalConfig:
    name: str = "local"
    reference: str = "same"  # same | top | both
    streaming: bool | str = "auto"  # auto: stream for 'same', summed loss for 'top'/'both'
    recompute_chunks: int = 1  # > 1: recompute each layer in this many batch chunks (streaming only)

    def __post_init__(self) -> None:
        if not isinstance(self.recompute_chunks, int) or self.recompute_chunks < 1:
            raise ConfigError(f"rule.recompute_chunks must be an integer >= 1, got {self.recompute_chunks!r}")
        if self.reference not in ("same", "top", "both"):
            raise ConfigError(f"rule.reference must be same, top or both, got '{self.reference}'")
        if self.streaming not in (True, False, "auto"):
            raise ConfigError(f"rule.streaming must be true, false or auto, got {self.streaming!r}")

    @property
    def stream(self) -> bool:
        return self.reference == "same" if self.streaming == "auto" else bool(self.streaming)


@RULES.register("local", LocalConfig)
class LocalRule(Rule):
    def __init__(self, cfg: LocalConfig, objective_cfg, layers: list[LayerSpec]) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.recompute_chunks > 1 and not cfg.stream:
            raise ConfigError("rule.recompute_chunks > 1 needs layer streaming: set rule.streaming=true")
        top = layers[-1]
        self.objectives = nn.ModuleDict()
        for spec in layers:
            refs = {"same": [spec], "top": [top], "both": [spec, top]}[cfg.reference]
            self.objectives[str(spec.index + 1)] = build_objective(objective_cfg, spec, refs)

    def _refs(self, h: torch.Tensor, top: torch.Tensor | None) -> list[torch.Tensor]:
        if self.cfg.reference == "same":
            return [h]
        assert top is not None
        return [top] if self.cfg.reference == "top" else [h, top]

    def _recomputed(
        self,
        layer: nn.Module,
        objective: nn.Module,
        x: torch.Tensor,
        top: torch.Tensor | None,
        views: ViewBatch,
        ctx: StepContext,
    ) -> tuple[torch.Tensor, LossOut]:
        """One layer's update holding one batch chunk's graph at a time (``recompute_chunks``)."""
        chunks = x.chunk(self.cfg.recompute_chunks)
        with torch.no_grad(), ctx.autocast():
            h = torch.cat([layer(c) for c in chunks])
        h.requires_grad_()
        with ctx.autocast():
            out = objective(h, self._refs(h, top), views)
        if out.loss.requires_grad:
            out.loss.backward()  # the objective's parameters, and dL/dh in h.grad
        if h.grad is not None:
            for c, g in zip(chunks, h.grad.chunk(len(chunks))):
                with ctx.autocast():
                    hc = layer(c)  # the same values as the no-grad pass, now with this chunk's graph
                if hc.requires_grad:
                    hc.backward(g)
        return h.detach(), out

    @classmethod
    def layer_parallel_refusal(cls, cfg: LocalConfig) -> str | None:
        if cfg.reference == "same":
            return None
        return (
            f"rule.reference={cfg.reference} scores every layer against the top layer's activity of the same "
            "batch (CLAPP++DFB, CLAPP++both), computed before any layer is updated: every stage would wait for "
            "a forward pass through all the stages above it on each batch (no two stages could work at once); "
            "train it in one process or data-parallel (torchrun without train.parallel=layers), or use "
            "rule.reference=same (clapp++)"
        )

    def stage_cuts(self, n_layers: int) -> list[int]:
        return list(range(1, n_layers))

    def step_layers(
        self, encoder: LayeredEncoder, x: torch.Tensor, views: ViewBatch, ctx: StepContext, layers: range
    ) -> tuple[torch.Tensor, Metrics]:
        with kept_b_gradients():
            return self._stream(encoder, x, views, ctx, layers, None)

    def _stream(
        self,
        encoder: LayeredEncoder,
        h: torch.Tensor,
        views: ViewBatch,
        ctx: StepContext,
        layers: range,
        top: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Metrics]:
        """Layer streaming over ``layers``, fed with ``h``: forward, loss and backward one layer at a time."""
        metrics: Metrics = {}
        for i in layers:
            layer, objective = encoder.layers[i], self.objectives[str(i + 1)]
            if self.cfg.recompute_chunks > 1:
                h, out = self._recomputed(layer, objective, h.detach(), top, views, ctx)
            else:
                with ctx.autocast():
                    h = layer(h.detach())
                    out = objective(h, self._refs(h, top), views)
                if out.loss.requires_grad:  # a layer with nothing to train does no backward work
                    out.loss.backward()  # frees this layer's graph before the next layer runs
            self.record(metrics, i + 1, out)
            ctx.layer_done(i)
        return h.detach(), metrics

    def step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext = NO_CONTEXT) -> Metrics:
        with kept_b_gradients():  # a dense B's bf16 cast and gradient in kept memory (objectives/kept.py)
            return self._step(encoder, views, ctx)

    def _step(self, encoder: LayeredEncoder, views: ViewBatch, ctx: StepContext) -> Metrics:
        metrics: Metrics = {}
        needs_top = self.cfg.reference != "same"
        if self.cfg.stream:
            top = None
            if needs_top:
                with torch.no_grad(), ctx.autocast():
                    top = torch.cat([encoder(c)[-1] for c in views.x.chunk(self.cfg.recompute_chunks)])
            return self._stream(encoder, views.x, views, ctx, range(len(encoder.layers)), top)[1]
        hs, h = [], views.x
        with ctx.autocast():
            for layer in encoder.layers:
                h = layer(h.detach())
                hs.append(h)
            top = hs[-1].detach() if needs_top else None
            total = hs[0].new_zeros(())
            for i, h in enumerate(hs):
                out = self.objectives[str(i + 1)](h, self._refs(h, top), views)
                total = total + out.loss
                self.record(metrics, i + 1, out)
        if total.requires_grad:
            total.backward()
        for i in range(len(hs)):
            ctx.layer_done(i)
        return metrics
