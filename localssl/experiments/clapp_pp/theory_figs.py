"""CLAPP++ theory figures with fixed weights (Delrocq et al. 2026, Sec. 3, App. B, D).

``fig2``  Theorem 3.1 and its ablations: 6-layer 128-wide nets on MNIST 14×14 patch pairs.
``figA1`` Low-rank ``B = UV`` under the theorem's other conditions.
``fig3a`` Theorem 3.3: widths 128 → 4 (semi-orthonormal), local vs direct feedback (DFB), f linear/softplus.
``fig4b`` 4-layer linear convnet on 16×16 crops: spatially pooled vs spatially dependent ``B`` (+ DFB).

Protocol (official ``theory/run_fastb.py``): the first ``n_batches × 32`` MNIST training images, in
order; on every batch each ``B`` is redrawn at random and put at its optimum for the batch with
L-BFGS (type-2 softplus loss, ``λ‖B‖²``), then the rule's update of every ``W_l`` is compared with the
BP update of the top-layer loss. ``results.csv`` holds one cosine per (condition, seed, batch, layer);
``solver.csv`` the final L-BFGS gradient norm of every solved ``B``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from localssl.experiments import experiment
from localssl.experiments.clapp_pp.theory_common import (
    Claim,
    MnistImages,
    finish,
    layer_table,
    measured,
    plot_layers,
    single_thread,
    summarize,
)
from localssl.registry import ConfigError

# ------------------------------------------------------------------------- fixed-weight runs


@dataclasses.dataclass
class FixedWeightSetting:
    """How much data and how tight: ``n_batches`` batches of ``batch_images`` images."""

    n_batches: int
    batch_images: int = 32
    width: int = 128
    tol: float = 1e-8  # ‖∂L/∂B‖₂ at the end of L-BFGS (float64 resolves about 1e-9)
    max_iter: int = 5000

    @staticmethod
    def for_scale(scale: str, cpu_batches: int = 8, smoke_width: int = 32) -> FixedWeightSetting:
        if scale == "smoke":
            return FixedWeightSetting(n_batches=2, batch_images=8, width=smoke_width, tol=1e-8)
        if scale == "cpu":
            return FixedWeightSetting(n_batches=cpu_batches)
        if scale == "paper":
            return FixedWeightSetting(n_batches=32)
        raise ConfigError(f"unknown scale '{scale}'; use smoke, cpu or paper")


def crop_batches(views, images: torch.Tensor, setting: FixedWeightSetting, seed: int) -> list:
    torch.manual_seed(seed)
    b = setting.batch_images
    return [views(images[i * b : (i + 1) * b]) for i in range(setting.n_batches)]


def run_condition(
    components,
    images: torch.Tensor,
    setting: FixedWeightSetting,
    seed: int,
    keys: dict[str, Any],
    solve_layers: list[int] | None = None,
) -> tuple[list[dict], list[dict]]:
    """One condition: B at the optimum on every batch, alignment per (batch, layer)."""
    from localssl.theory.simulation import alignment_at_optimum

    batches = crop_batches(components.views, images, setting, seed)
    with single_thread():
        res = alignment_at_optimum(
            components.encoder, components.rule, batches, solve_layers, setting.tol, setting.max_iter, seed
        )
    rows = [
        {**keys, "seed": seed, "batch": b, "layer": la.layer, "cosine": cos}
        for la in res.layers
        for b, cos in enumerate(la.per_batch)
    ]
    per_batch = max(1, len(res.solutions) // len(batches))  # solutions are stored batch by batch
    solver = [
        {
            **keys,
            "seed": seed,
            "batch": i // per_batch,
            "layer": s.layer,
            "iterations": s.iterations,
            "grad_norm": s.grad_norm,
            "tolerance": s.tolerance,
            "converged": s.converged,
        }
        for i, s in enumerate(res.solutions)
    ]
    return rows, solver


def solver_summary(solver_rows: list[dict]) -> str:
    norms = [float(r["grad_norm"]) for r in solver_rows if not math.isnan(float(r["grad_norm"]))]
    conv = sum(bool(r["converged"]) for r in solver_rows)
    tol = solver_rows[0]["tolerance"] if solver_rows else float("nan")
    return (
        f"B solved by L-BFGS from a random start on every batch: {conv}/{len(solver_rows)} solves reached "
        f"‖∂L/∂B‖₂ ≤ {tol:g}; largest final gradient norm {max(norms) if norms else float('nan'):.2e}."
    )


# ------------------------------------------------------------------------------------ Figure 2

FIG2_CONDITIONS: dict[str, tuple[str, str]] = {  # condition -> (activation, init); fixed_B: random B
    "theorem": ("linear", "orthonormal"),
    "fixed_B": ("linear", "orthonormal"),
    "non_orthogonal": ("linear", "standard"),
    "relu": ("relu", "orthonormal"),
    "relu_non_orthogonal": ("relu", "standard"),
}

TYPE2_SOFTPLUS = {"name": "contrastive", "f": "softplus", "loss_type": 2, "B_l2": 0.01, "pooling": "none"}
GRID_CROPS = {"name": "crops", "size": 14, "mode": "grid"}


def mlp(widths: list[int], activation: str, init: str) -> dict[str, Any]:
    return {"name": "mlp", "in_features": 196, "widths": widths, "activation": activation, "bias": False, "init": init}


def measure_fig2(setting: FixedWeightSetting, seeds: Iterable[int], images: torch.Tensor) -> tuple[list, list]:
    from localssl.theory.simulation import theory_components

    rows, solver = [], []
    for seed in seeds:
        for condition, (act, init) in FIG2_CONDITIONS.items():
            comp = theory_components(
                mlp([setting.width] * 6, act, init),
                TYPE2_SOFTPLUS,
                {"name": "local", "reference": "same"},
                GRID_CROPS,
                seed=seed,
            )
            solve = [6] if condition == "fixed_B" else None  # fixed random B below the top
            r, s = run_condition(comp, images, setting, seed, {"condition": condition}, solve)
            rows += r
            solver += s
    return rows, solver


def check_fig2(summary: dict[tuple, tuple]) -> list[Claim]:
    """The acceptance checks of Fig. 2. A fixed random ``B`` makes every layer below the top
    uncorrelated with BP (cosine ≈ 0), so the depth trend is checked on the other ablations."""
    theorem = [summary[("theorem", layer)][0] for layer in range(1, 7)]
    claims = [
        Claim(
            "Theorem 3.1: cosine ≥ 0.9999 at every layer",
            min(theorem) >= 0.9999,
            f"largest 1 − cosine over layers {1 - min(theorem):.1e}",
        )
    ]
    for cond in ("fixed_B", "non_orthogonal", "relu", "relu_non_orthogonal"):
        c = [summary[(cond, layer)][0] for layer in range(1, 7)]
        claims.append(Claim(f"{cond}: cosine < 0.99 at layer 1", c[0] < 0.99, f"layer 1: {c[0]:.4f}"))
        if cond == "fixed_B":
            continue
        drop = [1 - x for x in c[:5]]
        claims.append(
            Claim(
                f"{cond}: the drop is larger in earlier layers",
                drop[0] >= drop[-1] and sum(drop[:2]) >= sum(drop[3:5]),
                "1 − cosine, layers 1..5: " + ", ".join(f"{d:.3f}" for d in drop),
            )
        )
    return claims


@experiment("fig2", "Theorem 3.1 and ablations: local vs BP update alignment in 6-layer nets on MNIST patches")
def run_fig2(out: Path, scale: str, seeds: int) -> None:
    setting = FixedWeightSetting.for_scale(scale)
    images = MnistImages("train", setting.n_batches * setting.batch_images)
    rows, solver = measured("fig2", f"fig2 ({scale}, {seeds} seed(s))", measure_fig2, setting, range(seeds), images)
    summary = summarize(rows, ("condition",))
    groups = [(c,) for c in FIG2_CONDITIONS]
    plot_layers(out / "fig2.png", summary, groups, 6, f"Fig. 2 ({scale}): local-SSL vs BP-SSL, B at optimum")
    md = (
        f"# Figure 2 — Theorem 3.1 and its ablations ({scale} scale)\n\n"
        f"6-layer bias-free MLPs of width {setting.width} on MNIST 14×14 patch pairs (vertical neighbours), "
        f"type-2 softplus loss with λ‖B‖² (λ = 0.01), {setting.n_batches} batches of {setting.batch_images} "
        f"images, {seeds} seed(s). Cosine similarity of the local update of every W_l with the BP update of the "
        f"top-layer loss (mean ± std over batches and seeds).\n\n"
        + layer_table(summary, groups, 6, "condition")
        + '\n\nPaper: the theorem\'s conditions give cosine 1 at every layer ("numerically identical"); '
        "every ablation lowers it, most in the earliest layers.\n\n" + solver_summary(solver)
    )
    finish(out, "fig2", rows, solver, md, check_fig2(summary))


# ----------------------------------------------------------------------------------- Figure A1

FIGA1_RANKS = (1, 8, 32)
LOW_RANK_TOL = 1e-5  # B = UV: L-BFGS crawls along the flat directions UG, G⁻¹V of the factorisation


def measure_figA1(setting: FixedWeightSetting, seeds: Iterable[int], images: torch.Tensor, ranks=FIGA1_RANKS):
    from localssl.build import layer_specs
    from localssl.data import dataset_info
    from localssl.registry import OBJECTIVES
    from localssl.rules.base import build_objective
    from localssl.theory.simulation import theory_components

    rows, solver = [], []
    for seed in seeds:
        for rank in (*ranks, setting.width):
            full = rank >= setting.width
            objective = dict(TYPE2_SOFTPLUS, B_rank=None if full else rank)
            comp = theory_components(
                mlp([setting.width] * 6, "linear", "orthonormal"),
                objective,
                {"name": "local", "reference": "same"},
                GRID_CROPS,
                seed=seed,
            )
            if not full:  # the top layer's B stays full rank (it *is* the BP objective), as in the official code
                info = dataset_info("mnist")
                layers = layer_specs(comp.encoder, info, comp.views.input_shape(comp.views.cfg, info))
                top = build_objective(OBJECTIVES.make_config(TYPE2_SOFTPLUS), layers[-1], [layers[-1]])
                comp.rule.objectives["6"] = top.to(torch.float64)
            solve = setting if full else dataclasses.replace(setting, tol=max(setting.tol, LOW_RANK_TOL), max_iter=1500)
            r, s = run_condition(comp, images, solve, seed, {"rank": rank})
            rows += r
            solver += s
    return rows, solver


def check_figA1(summary: dict[tuple, tuple], ranks: list[int]) -> list[Claim]:
    means = [sum(summary[(r, layer)][0] for layer in range(1, 6)) / 5 for r in ranks]
    monotone = all(a <= b + 1e-6 for a, b in itertools.pairwise(means))
    return [
        Claim(
            "lower rank of B lowers the alignment (mean over layers 1–5)",
            monotone and means[0] < 0.99,
            ", ".join(f"rank {r}: {m:.4f}" for r, m in zip(ranks, means)),
        ),
        Claim("full rank recovers Theorem 3.1 (≥ 0.9999)", means[-1] >= 0.9999, f"{means[-1]:.6f}"),
    ]


@experiment("figA1", "Low-rank B = UV under Theorem 3.1's conditions: alignment falls with the rank")
def run_figA1(out: Path, scale: str, seeds: int) -> None:
    setting = FixedWeightSetting.for_scale(scale, cpu_batches=4)
    ranks = [r for r in FIGA1_RANKS if r < setting.width]
    images = MnistImages("train", setting.n_batches * setting.batch_images)
    rows, solver = measured(
        "figA1", f"figA1 ({scale}, {seeds} seed(s))", measure_figA1, setting, range(seeds), images, ranks
    )
    all_ranks = [*ranks, setting.width]
    summary = summarize(rows, ("rank",))
    groups = [(r,) for r in all_ranks]
    plot_layers(out / "figA1.png", summary, groups, 6, f"Fig. A1 ({scale}): rank of B (layers 1–5; top full rank)")
    md = (
        f"# Figure A1 — low-rank B = UV ({scale} scale)\n\n"
        f"Theorem 3.1's setting (6-layer linear orthonormal MLP, width {setting.width}) with B = UV of rank r in "
        f"layers 1–5 (the top layer's B, the BP objective, stays full rank as in the official code); "
        f"{setting.n_batches} batches of {setting.batch_images} images, {seeds} seed(s). U, V are found by L-BFGS "
        "(non-convex: a stationary point; the ‖∂L/∂(U,V)‖ tolerance is "
        f"{LOW_RANK_TOL:g} because L-BFGS crawls along the flat directions of the factorisation).\n\n"
        + layer_table(summary, groups, 6, "rank")
        + "\n\nPaper (App. D): as the rank decreases, the alignment decreases.\n\n"
        + solver_summary(solver)
    )
    finish(out, "figA1", rows, solver, md, check_figA1(summary, all_ranks))


# ----------------------------------------------------------------------------------- Figure 3A

FIG3A_WIDTHS = [128, 64, 32, 16, 8, 4]


def measure_fig3a(setting: FixedWeightSetting, seeds: Iterable[int], images: torch.Tensor, widths=None):
    from localssl.theory.simulation import theory_components

    widths = widths or FIG3A_WIDTHS
    rows, solver = [], []
    for seed in seeds:
        for f in ("linear", "softplus"):
            for rule, reference in (("local", "same"), ("dfb", "top")):
                comp = theory_components(
                    mlp(widths, "linear", "semi_orthonormal"),
                    dict(TYPE2_SOFTPLUS, f=f),
                    {"name": "local", "reference": reference},
                    GRID_CROPS,
                    seed=seed,
                )
                r, s = run_condition(comp, images, setting, seed, {"f": f, "rule": rule})
                rows += r
                solver += s
    return rows, solver


def check_fig3a(summary: dict[tuple, tuple], n_layers: int = 6) -> list[Claim]:
    below = range(1, n_layers)
    lin = [(summary[("linear", "dfb", i)][0], summary[("linear", "local", i)][0]) for i in below]
    sp_dfb = sum(summary[("softplus", "dfb", i)][0] for i in below) / len(below)
    sp_loc = sum(summary[("softplus", "local", i)][0] for i in below) / len(below)
    return [
        Claim(
            "Theorem 3.3 (linear f): DFB more aligned than same-layer local at every layer below the top",
            all(d > loc for d, loc in lin),
            "DFB / local: " + ", ".join(f"{d:.3f}/{loc:.3f}" for d, loc in lin),
        ),
        Claim(
            "softplus f: DFB more aligned on average over the layers below the top",
            sp_dfb > sp_loc,
            f"DFB {sp_dfb:.4f} vs local {sp_loc:.4f}",
        ),
    ]


@experiment("fig3a", "Theorem 3.3: with shrinking widths (128→4) direct feedback aligns better with BP than local")
def run_fig3a(out: Path, scale: str, seeds: int) -> None:
    setting = FixedWeightSetting.for_scale(scale)
    widths = FIG3A_WIDTHS if scale != "smoke" else [32, 16, 8, 4]
    images = MnistImages("train", setting.n_batches * setting.batch_images)
    rows, solver = measured(
        "fig3a", f"fig3a ({scale}, {seeds} seed(s))", measure_fig3a, setting, range(seeds), images, widths
    )
    summary = summarize(rows, ("f", "rule"))
    groups = [(f, r) for f in ("linear", "softplus") for r in ("local", "dfb")]
    n = len(widths)
    plot_layers(out / "fig3a.png", summary, groups, n, f"Fig. 3A ({scale}): widths {widths[0]}→{widths[-1]}", (0, 1.05))
    md = (
        f"# Figure 3A — direct feedback with shrinking widths ({scale} scale)\n\n"
        f"Bias-free linear MLP with semi-orthonormal weights, widths {widths}, type-2 loss with f linear or "
        f"softplus and λ‖B‖² (λ = 0.01), B at its optimum; reference = same layer (local) or top layer (DFB). "
        f"{setting.n_batches} batches of {setting.batch_images} images, {seeds} seed(s).\n\n"
        + layer_table(summary, groups, n, "f / rule")
        + "\n\nPaper: DFB aligns better than local-SSL (proved for linear f, batch size one; observed for "
        "softplus f and larger batches).\n\n" + solver_summary(solver)
    )
    finish(out, "fig3a", rows, solver, md, check_fig3a(summary, n))


# ----------------------------------------------------------------------------------- Figure 4B

FIG4B_CONDITIONS: dict[str, tuple[list[int], str]] = {  # condition -> (pool kernels, reference)
    "pooled": ([0, 0, 0, 0], "same"),  # B on globally averaged channels (no 2D spatial dependence)
    "spatial": ([2, 1, 1, 1], "same"),  # 2×2 patches share B in layer 1, full spatial dependence above
    "spatial_dfb": ([2, 1, 1, 1], "top"),
}


def measure_fig4b(setting: FixedWeightSetting, seeds: Iterable[int], images: torch.Tensor, channels: int = 32):
    from localssl.theory.simulation import theory_components

    rows, solver = [], []
    for seed in seeds:
        for condition, (pool, reference) in FIG4B_CONDITIONS.items():
            comp = theory_components(
                {"name": "linear_convnet", "channels": channels},
                dict(TYPE2_SOFTPLUS, B_l2=0.02, pooling=pool),
                {"name": "local", "reference": reference},
                {"name": "crops", "size": 16, "mode": "random"},
                seed=seed,
            )
            r, s = run_condition(comp, images, setting, seed, {"condition": condition})
            rows += r
            solver += s
    return rows, solver


def check_fig4b(summary: dict[tuple, tuple]) -> list[Claim]:
    def mean(c: str) -> float:
        return sum(summary[(c, i)][0] for i in range(1, 4)) / 3

    return [
        Claim(
            "spatially dependent B more aligned than pooled B (mean over layers 1–3)",
            mean("spatial") > mean("pooled"),
            f"spatial {mean('spatial'):.4f} vs pooled {mean('pooled'):.4f}",
        ),
        Claim(
            "spatial B + direct feedback at least as aligned as spatial B",
            mean("spatial_dfb") >= mean("spatial") - 1e-4,
            f"spatial+DFB {mean('spatial_dfb'):.4f} vs spatial {mean('spatial'):.4f}",
        ),
    ]


@experiment("fig4b", "Linear convnet: spatially dependent B aligns better with BP than spatially pooled B")
def run_fig4b(out: Path, scale: str, seeds: int) -> None:
    setting = FixedWeightSetting.for_scale(scale, cpu_batches=6)
    channels = 8 if scale == "smoke" else 32
    images = MnistImages("train", setting.n_batches * setting.batch_images)
    rows, solver = measured(
        "fig4b", f"fig4b ({scale}, {seeds} seed(s))", measure_fig4b, setting, range(seeds), images, channels
    )
    summary = summarize(rows, ("condition",))
    groups = [(c,) for c in FIG4B_CONDITIONS]
    plot_layers(out / "fig4b.png", summary, groups, 4, f"Fig. 4B ({scale}): 4-layer linear convnet")
    md = (
        f"# Figure 4B — spatial dependence of B in a linear convnet ({scale} scale)\n\n"
        f"4 bias-free linear conv layers ({channels} channels, kernel 2, stride 2, orthonormal), two random 16×16 "
        "crops of each MNIST image as the positive pair, type-2 softplus loss with λ‖B‖² (λ = 0.02), B at its "
        "optimum. pooled: B acts on global channel averages; spatial: 2×2 average pooling in layer 1 and the "
        f"flattened map above (official code); spatial_dfb: the same with the top layer as reference. "
        f"{setting.n_batches} batches of {setting.batch_images} images, {seeds} seed(s).\n\n"
        + layer_table(summary, groups, 4, "condition")
        + "\n\nPaper: spatial dependence improves the alignment; spatially dependent direct feedback improves it "
        "further.\n\n" + solver_summary(solver)
    )
    finish(out, "fig4b", rows, solver, md, check_fig4b(summary))
