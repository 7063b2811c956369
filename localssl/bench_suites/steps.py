"""Speed suites of whole training steps of presets: ``b-cost``, ``streaming``, ``patch-grid``, ``zoo``,
``table2-flops``, ``fast-path`` (see :mod:`localssl.bench_suites`)."""

from __future__ import annotations

import functools
import statistics
import sys
from typing import Any

import torch

from localssl.bench import Runner, Spec, bench_entry, machine_description, run_bench
from localssl.bench_suites import Options, bench_and_emit, heading, suite
from localssl.config import available_presets, load_config
from localssl.data import dataset_info
from localssl.experiments.engine.local import run_jobs
from localssl.train.fast_path import resolve_fast_path


@suite("b-cost", "clapp++'s dense B vs low rank, step_each_layer and no spatial dependence, each vs bp-clapp++")
def b_cost(opts: Options) -> dict[str, Any]:
    """Dense fp32 ``B`` with fused AdamW (the default), a factored ``B = UV`` of rank 512 × width
    (``objective.B_rank``), the optimizer of each layer stepped right after its backward, and ``B`` on
    globally pooled activity; ``bp-clapp++`` last (the ratios are against it)."""
    overrides = ["train.device=cpu", *opts.overrides]
    rank = max(1, round(512 * load_config("clapp++", overrides).model.width))
    specs = [
        Spec("clapp++", "clapp++"),
        Spec(f"clapp++ rank {rank}", "clapp++", (f"objective.B_rank={rank}",)),
        Spec("clapp++ step_each_layer", "clapp++", ("train.step_each_layer=true",)),
        Spec("clapp++nospatial", "clapp++nospatial"),
        Spec("bp-clapp++", "bp-clapp++"),
    ]
    return bench_and_emit(opts, specs, overrides, "Variants of the B cost; ratios against bp-clapp++.")


@suite("streaming", "layer streaming vs one summed loss for clapp++dfb and clapp++both (speed, activation memory)")
def streaming(opts: Options) -> dict[str, Any]:
    """DFB and both need the top layer's activity before the first layer's loss: streaming pays an extra
    forward pass without graph, the summed loss keeps every layer's graph (``rules/local.py``). Same
    gradients either way; ``clapp++`` (streaming, no extra forward) for reference; ratios against the
    summed path (last row)."""
    overrides = ["train.device=cpu", *opts.overrides]
    out = {}
    for preset in ("clapp++dfb", "clapp++both"):
        specs = [
            Spec(f"{preset} streaming", preset, ("rule.streaming=true",)),
            Spec("clapp++ (same, streaming)", "clapp++", ("rule.streaming=true",)),
            Spec(f"{preset} summed", preset, ("rule.streaming=false",)),
        ]
        note = f"Streaming vs summed loss for {preset}: ratios are against the summed path (last row)."
        out[preset] = bench_and_emit(opts, specs, overrides, note)
    return out


PATCH_GRID = (
    "data.name=cifar10-mini",
    "model.width=0.125",
    "views.crop_size=32",
    "views.resize=null",
    "objective.steps=1",
    "train.batch_size=32",
)


@suite("patch-grid", "CLAPP 2021, hinge CPC, GIM against CPC on a 3×3 grid of 16 px patches (32 px images)")
def patch_grid(opts: Options) -> dict[str, Any]:
    """The budget of ``localssl reproduce patch-cifar10``: grey 32 px image cut into a 3×3 grid of 16 px
    patches (stride 8), one prediction step, VGG-6 at width 1/8; ``cpc`` last (the ratios are against it)."""
    presets = opts.presets or ["hinge-cpc", "gim", "clapp2021", "clapp2021-asym", "cpc"]
    specs = [Spec(p, p) for p in presets]
    return bench_and_emit(
        opts, specs, [*PATCH_GRID, *opts.overrides], "Patch-grid presets; ratios against the last row."
    )


def image_presets() -> list[str]:
    """Every trained preset whose default dataset holds images (audio presets and the never-trained
    ``frozen`` baselines, which have no training step to time, are left out)."""
    cfgs = {p: load_config(p) for p in available_presets()}
    return [p for p, c in cfgs.items() if dataset_info(c.data.name).kind != "sequence" and c.rule.name != "frozen"]


def _bench_alone(preset: str, overrides: list[str], rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    """One preset, no counterpart, in the calling process (a fresh one: its memory high-water mark is its own)."""
    try:
        out = run_bench([Spec(preset, preset)], overrides, rounds, steps, warmup, memory_repeats=1, log=lambda _: None)
    except Exception as err:  # noqa: BLE001 - every preset is tried; its row names the error
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"}
    return out["presets"][preset]


def _fmt(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


@suite("zoo", "every image preset alone in its own process: CPU img/s, GFLOP/step, peak and activation memory")
def zoo(opts: Options) -> dict[str, Any]:
    """Each preset on the same encoder, batch and CIFAR-10 input shape (defaults: VGG-6 at width 1/4, batch
    32, CPU), random uint8 images, timed by :func:`~localssl.bench.run_bench` in a fresh process
    (``--threads`` torch threads, default 1), so that the memory high-water mark belongs to that preset."""
    presets = opts.presets or image_presets()
    overrides = ["data.name=cifar10", "model.width=0.25", "train.batch_size=32", "train.device=cpu", *opts.overrides]
    threads = opts.threads or 1
    job = functools.partial(_bench_alone, overrides=overrides, rounds=opts.rounds, steps=opts.steps, warmup=opts.warmup)
    rows = dict(zip(presets, run_jobs(job, presets, 1, fresh=True, threads=threads)))
    lines = [
        "| preset | cpu img/s | img/s | GFLOP/step | peak MB | activation MB | parameters MB | optimizer state MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for preset, r in rows.items():
        if "error" in r:
            lines.append(f"| `{preset}` | failed: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| `{preset}` | {_fmt(r, 'cpu_images_per_s', 1)} | {_fmt(r, 'images_per_s', 1)} | "
            f"{_fmt(r, 'gflop_per_step', 2)} | {_fmt(r, 'peak_mem_mb', 0)} | {_fmt(r, 'peak_activation_mb', 0)} | "
            f"{_fmt(r, 'param_mb', 1)} | {_fmt(r, 'optimizer_state_mb', 1)} |"
        )
    cfg = load_config(presets[0], overrides) if presets else None
    setup = (
        f"{machine_description().split(',')[0]}, {threads} torch thread(s) per process. "
        + (f"VGG-6 width {cfg.model.width}, {cfg.train.batch_size} " if cfg else "")
        + f"CIFAR-10-shaped source images per step (random uint8 pixels), each preset in its own process; "
        f"{opts.rounds} timed rounds of {opts.steps} steps after {opts.warmup} warm-up step(s), median; memory "
        "measured once per preset after the timing."
    )
    opts.emit(heading(opts, "every image preset, speed and memory") + setup + "\n\n" + "\n".join(lines) + "\n")
    return {"overrides": overrides, "presets": rows}


@suite("table2-flops", "training FLOP per image of every Table 2 row at widths 1/16 and 1/8, extrapolated to width 1")
def table2_flops(opts: Options) -> dict[str, Any]:
    """A full-width step is too slow to count on a small CPU: each row's forward + backward FLOP of one
    training step (``torch.utils.flop_counter``, as ``localssl bench``) are counted at widths 1/16 and 1/8
    and extrapolated with ``a·w² + b·w`` (a convolution grows with ``c_in·c_out``, i.e. ``w²``, the first
    layer's with ``w``; the ``B`` maps with ``w²``). The total of one CIFAR-10 epoch (50 000 images) of every
    row sizes ``localssl reproduce table2 --scale gpu``."""
    from localssl.experiments.clapp_pp.table2 import TABLE2

    widths = (0.0625, 0.125)
    presets = set(available_presets())
    rows, total = {}, 0.0
    lines = [
        "| row | preset | batch | GFLOP/img w=1/16 | w=1/8 | w=1 (extrapolated) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in TABLE2.rows:
        if row.preset not in presets:
            lines.append(f"| {row.label} | {row.preset} | – | not in this version | | |")
            continue
        counted = []
        for w in widths:
            runner = Runner(Spec(row.preset, row.preset), [f"model.width={w}", "train.device=cpu", *opts.overrides], 2)
            counted.append((runner.counted_step() / runner.batch_size / 1e9, runner.batch_size))
        (w1, w2), (f1, f2) = widths, [f for f, _ in counted]
        a = (f2 / w2 - f1 / w1) / (w2 - w1)  # f = a w² + b w through both points
        full = a + (f1 / w1 - a * w1)
        total += full
        rows[row.preset] = {"gflop_per_image": [f1, f2], "full_width": full, "batch": counted[0][1]}
        lines.append(f"| {row.label} | {row.preset} | {counted[0][1]} | {f1:.4f} | {f2:.4f} | {full:.2f} |")
    pflop = total * 50_000 / 1e6
    text = "\n".join(lines) + f"\n\none CIFAR-10 epoch (50 000 images) of every row: {pflop:.2f} PFLOP\n"
    opts.emit(heading(opts, "Table 2 FLOP per image") + text)
    return {"rows": rows, "epoch_pflop": pflop}


@suite("fast-path", "the default precision (auto: bf16 + channels_last where native) vs fp32, per preset")
def fast_path(opts: Options) -> dict[str, Any]:
    """Each preset (default ``clapp++``, ``bp-clapp++``, ``clapp++nospatial``) at the default
    ``train.precision=auto`` and pinned to fp32 (contiguous), all in one process, alternating rounds; per
    preset the ratio default / fp32 round by round and the warm-up cost of each (``--warmup`` steps from
    cold, beyond as many steady steps)."""
    presets = opts.presets or ["clapp++", "bp-clapp++", "clapp++nospatial"]
    specs = []
    for p in presets:
        specs += [Spec(p, p), Spec(f"{p} fp32", p, ("train.precision=fp32", "train.channels_last=false"))]
    overrides = ["train.device=cpu", *opts.overrides]
    log = functools.partial(print, file=sys.stderr)
    out = run_bench(specs, overrides, opts.rounds, opts.steps, opts.warmup, opts.memory_repeats, log=log)
    rows, lines = out["presets"], []
    out["fast_path_ratios"] = {}
    for p in presets:
        fast, slow = rows[p], rows[f"{p} fp32"]
        if "images_per_s_rounds" not in fast:
            continue
        ratios, parts = {}, []
        for key, name in (("images_per_s", "images/s"), ("cpu_images_per_s", "images/CPU-s")):
            if f"{key}_rounds" in fast:
                per_round = [a / b for a, b in zip(fast[f"{key}_rounds"], slow[f"{key}_rounds"])]
                r = ratios[key] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
                parts.append(f"{name} {r['median']:.2f}× (rounds {r['min']:.2f}–{r['max']:.2f})")
        out["fast_path_ratios"][p] = ratios
        warm = f"warm-up cost {fast['warmup_cost_s']:.1f} s vs {slow['warmup_cost_s']:.1f} s"
        lines.append(f"{p}: default / fp32 " + "; ".join(parts) + f"; {warm}.  ")
    out.pop("ratios", None)  # run_bench's every-row-against-the-last: not the pairs compared here
    precision = resolve_fast_path(load_config(presets[0], overrides).train, torch.device("cpu")).precision
    note = f"train.precision=auto resolved to {precision} here (rows without 'fp32'); the ratio lines pair each preset."
    opts.emit(bench_entry(opts.command, out, note) + "\n" + "\n".join(lines) + "\n")
    return out
