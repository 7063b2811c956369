"""Named speed studies: ``localssl bench --suite NAME [key=value ...] [--results FILE.md] [--out FILE.json]``.

A suite is a function registered with :func:`suite`; it measures, hands each finished piece of its report
(Markdown: a dated ``### `` heading with the command, the machine, the table) to ``opts.emit`` and returns
its measurements as JSON. ``emit`` prints the piece and, with ``--results``, appends it to that file with
:func:`localssl.bench.append_entry` (the suite's ``section``; ``None``: at the end of the file, piece by
piece, so that a run cut off keeps what it has). ``key=value`` overrides apply to every preset a suite
builds, after the suite's own; ``--rounds``, ``--steps``, ``--warmup``, ``--memory-repeats``,
``--threads`` and ``--presets`` mean what they mean for ``localssl bench``. A suite whose JSON has a
true ``failed`` makes the command exit with status 1.

The suites (their latest numbers: ``benchmarks/RESULTS.md``; the index: ``benchmarks/README.md``):

* ``b-cost``: ``clapp++``'s dense ``B`` against its cheaper variants, each against ``bp-clapp++``;
* ``b-precision``: one full-width ``B`` map in fp32, bf16 autocast and bf16 storage;
* ``streaming``: layer streaming vs the summed loss for ``clapp++dfb`` and ``clapp++both``;
* ``patch-grid``: the patch-grid presets (CLAPP 2021, CPC, GIM) against ``cpc`` on the small grid;
* ``zoo``: every image preset alone in a fresh process (speed, FLOPs, memory);
* ``table2-flops``: training FLOP per image of every Table 2 row, extrapolated to full width;
* ``online-probe``: the cost of the online read-outs against the rule's step;
* ``probe-memory``: peak RSS of the honest probe's feature storage, before and after 5903c00;
* ``smoke``: a few training steps of every preset on a device (``benchmarks/device_check.sh``'s stage 2).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from localssl.bench import SECTION, Runner, Spec, append_entry, bench_entry, machine_description, run_bench
from localssl.config import available_presets, load_config
from localssl.data import ImageData, dataset_info
from localssl.experiments.jobs import run_jobs


@dataclasses.dataclass
class Options:
    """What a suite is given: the command line's settings and the writer of its report."""

    command: str
    overrides: list[str]
    rounds: int = 5
    steps: int = 2
    warmup: int = 1
    memory_repeats: int = 1
    threads: int | None = None
    presets: list[str] | None = None
    emit: Callable[[str], None] = print


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    run: Callable[[Options], dict[str, Any]]
    section: str | None = SECTION  # where its entries go in the results file (None: the end)


SUITES: dict[str, Suite] = {}


def suite(name: str, description: str, section: str | None = SECTION) -> Callable:
    def deco(fn: Callable[[Options], dict[str, Any]]) -> Callable[[Options], dict[str, Any]]:
        if name in SUITES:
            raise ValueError(f"bench suite '{name}' registered twice")
        SUITES[name] = Suite(name, description, fn, section)
        return fn

    return deco


def run_suite(name: str, opts: Options, results: Path | None = None) -> dict[str, Any]:
    """Run suite ``name``; every piece of its report is printed and, with ``results``, appended there."""
    if name not in SUITES:
        raise ValueError(f"unknown bench suite '{name}'; suites: {', '.join(SUITES)}")
    chosen = SUITES[name]

    def emit(text: str) -> None:
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
        if results is not None:
            append_entry(results, text, chosen.section)

    return chosen.run(dataclasses.replace(opts, emit=emit))


def heading(opts: Options, what: str) -> str:
    return f"\n### {datetime.date.today().isoformat()} — {what}: `{opts.command}`\n\n"


def _bench(opts: Options, specs: list[Spec], overrides: list[str], note: str) -> dict[str, Any]:
    log = functools.partial(print, file=sys.stderr)
    out = run_bench(specs, overrides, opts.rounds, opts.steps, opts.warmup, opts.memory_repeats, log=log)
    opts.emit(bench_entry(opts.command, out, note))
    return out


# ------------------------------------------------------------------------------ steps of presets
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
    return _bench(opts, specs, overrides, "Variants of the B cost; ratios against bp-clapp++.")


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
        out[preset] = _bench(opts, specs, overrides, note)
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
    return _bench(opts, specs, [*PATCH_GRID, *opts.overrides], "Patch-grid presets; ratios against the last row.")


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
    from localssl.experiments.table2 import TABLE2

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


# ------------------------------------------------------------------------------ parts of a step
@suite("b-precision", "one full-width B map (8192, 4096): fp32 vs bf16 autocast vs bf16 storage, CPU seconds")
def b_precision(opts: Options) -> dict[str, Any]:
    """Forward ``B r`` and weight gradient of one ``B`` map (64 rows = the views of a batch of 32) for the
    full-width dims, three ways, alternating, median of ``--rounds`` repetitions (process CPU seconds):
    fp32 (what ``clapp++`` does), bf16 autocast (``train.precision=bf16``: fp32 weights cast every step) and
    bf16 storage (no cast; Adam steps below half a bf16 ulp would be lost, an accuracy risk not measured)."""
    rows_n = 64

    def one_step(weight: torch.Tensor, r: torch.Tensor, z: torch.Tensor, autocast: bool) -> float:
        weight.grad = None
        t0 = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            pred = r @ weight.t()
        (pred.float() * z).sum().backward()
        return time.process_time() - t0

    lines = ["| dim | fp32 | bf16 autocast | bf16 stored |", "| ---: | ---: | ---: | ---: |"]
    out = {}
    for d in (8192, 4096):
        g = torch.Generator().manual_seed(0)
        w32 = torch.nn.Parameter(torch.randn(d, d, generator=g) / d**0.5)
        w16 = torch.nn.Parameter(w32.detach().bfloat16())
        r, z = torch.randn(rows_n, d, generator=g), torch.randn(rows_n, d, generator=g)
        cases = {"fp32": (w32, r, False), "bf16 autocast": (w32, r, True), "bf16 stored": (w16, r.bfloat16(), False)}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for w, x, cast in cases.values():
            one_step(w, x, z, cast)  # warm-up
        for _ in range(opts.rounds):
            for k, (w, x, cast) in cases.items():
                times[k].append(one_step(w, x, z, cast))
        out[d] = {k: statistics.median(v) for k, v in times.items()}
        lines.append(f"| {d} | " + " | ".join(f"{out[d][k]:.3f} s" for k in cases) + " |")
    setup = (
        f"Machine: {machine_description()}. One B map, forward + weight gradient, {rows_n} rows; median process "
        f"CPU seconds of {opts.rounds} alternating repetitions.\n\n"
    )
    opts.emit(heading(opts, "B precision") + setup + "\n".join(lines) + "\n")
    return {"seconds": out}


@suite("online-probe", "training-step time with and without the online read-outs (train.online_probe), same batch")
def online_probe(opts: Options) -> dict[str, Any]:
    """For each preset (default ``clapp++``, ``bp-clapp++``; VGG-6 at width 1/4 on 5000 CIFAR-10 images),
    ``--rounds`` rounds of ``--steps`` training steps; inside every step the rule's step (views, gradients,
    optimizer) and the read-outs' step are timed on the same batch, so the ratio is measured under the same
    load. Scoring the held-out images is timed once and amortised over ``train.online_probe_every`` steps."""
    from localssl.train import Trainer, load_pretrain_data

    base = ["model.width=0.25", "train.online_probe=true", "train.online_probe_every=500", "data.train_subset=5000"]
    lines = [
        "| preset | rule step (ms) | read-out step (ms) | step time ratio, with / without (median; rounds) "
        "| scoring the held-out images (s) | ratio incl. scoring |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    out = {}
    for preset in opts.presets or ["clapp++", "bp-clapp++"]:
        cfg = load_config(preset, [*base, *opts.overrides])
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(cfg, Path(tmp), data=load_pretrain_data(cfg))
            perm = torch.randperm(len(tr.images), generator=torch.Generator().manual_seed(0))
            bs, k = cfg.train.batch_size, 0
            rule_t, probe_t = [], []
            for _ in range(opts.rounds):
                r = p = 0.0
                for _ in range(opts.steps):
                    idx = perm[(k * bs) % (len(perm) - bs) :][:bs]
                    k += 1
                    t0 = time.perf_counter()
                    tr.optimize(tr.make_views(idx))
                    t1 = time.perf_counter()
                    tr.online_probe_step(idx)
                    t2 = time.perf_counter()
                    r, p = r + t1 - t0, p + t2 - t1
                rule_t.append(r / opts.steps)
                probe_t.append(p / opts.steps)
            t0 = time.perf_counter()
            tr.online_probe_accuracy()
            score = time.perf_counter() - t0
        rule, read = statistics.median(rule_t), statistics.median(probe_t)
        every = cfg.train.online_probe_every or 1
        ratios = [(a + b) / a for a, b in zip(rule_t, probe_t)]
        out[preset] = {
            "rule_step_ms": 1e3 * rule,
            "probe_step_ms": 1e3 * read,
            "score_s": score,
            "ratio_step": (rule + read) / rule,
            "ratio_with_scoring": (rule + read + score / every) / rule,
            "rounds_ratio": ratios,
        }
        lines.append(
            f"| {preset} | {1e3 * rule:.1f} | {1e3 * read:.1f} | **{(rule + read) / rule:.3f}** "
            f"({min(ratios):.3f}–{max(ratios):.3f}) | {score:.2f} | {out[preset]['ratio_with_scoring']:.3f} |"
        )
    setup = (
        f"Machine: {machine_description()}. {opts.rounds} rounds of {opts.steps} steps, medians; scoring amortised "
        f"over train.online_probe_every steps.\n\n"
    )
    opts.emit(heading(opts, "online probe cost") + setup + "\n".join(lines) + "\n")
    return out


FEATURES = 4096  # pooled features of VGG-6 at width 1/8


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _feature_memory(mode: str) -> dict[str, float]:
    """Peak RSS of extracting 45 000 + 5000 + 10 000 feature rows (CIFAR-10 at width 1/8) in this (fresh)
    process: ``before`` = each split's batches in a list, then ``torch.cat`` (the extraction before
    5903c00); ``now`` = :meth:`FeatureExtractor.extract` (the output allocated once, filled batch by batch).
    The encoder is a stand-in returning the features without compute, so only the storage differs."""
    from torch import nn

    from localssl.evaluate.features import FeatureExtractor

    class StandIn(FeatureExtractor):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self.encoder = nn.Linear(1, 1)  # extract() reads the device from the encoder's parameters

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.ones(len(images), FEATURES)

    def before(fx: FeatureExtractor, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        step = batch_size
        parts = [fx.forward(images[s : s + step]).to("cpu", torch.float32) for s in range(0, len(images), step)]
        return torch.cat(parts)

    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8)
    test = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8)
    base = _peak_rss_mb()
    fx = StandIn()
    extract = (lambda x: before(fx, x)) if mode == "before" else fx.extract
    perm = torch.randperm(50000)
    feats = [extract(images[perm[5000:]]), extract(images[perm[:5000]]), extract(test)]
    held = sum(f.numel() * 4 for f in feats) / 2**20
    return {"peak_rss_mb": _peak_rss_mb(), "before_extraction_mb": base, "features_mb": held}


@suite("probe-memory", "peak RSS of the honest probe's feature storage (CIFAR-10, width 1/8): before and now")
def probe_memory(opts: Options) -> dict[str, Any]:
    """:func:`_feature_memory` in a fresh process per mode (its high-water mark is its own)."""
    modes = ["before", "now"]
    out = dict(zip(modes, run_jobs(_feature_memory, modes, 1, fresh=True, threads=1)))
    lines = [
        "| extraction | peak RSS (MB) | before extraction (MB) | features held (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    labels = {"before": "list of batches, then `torch.cat` (before 5903c00)", "now": "`FeatureExtractor.extract`"}
    for mode, r in out.items():
        lines.append(
            f"| {labels[mode]} | {r['peak_rss_mb']:.0f} | {r['before_extraction_mb']:.0f} | {r['features_mb']:.0f} |"
        )
    setup = f"Machine: {machine_description()}. {FEATURES} fp32 features per image, one process per mode.\n\n"
    opts.emit(heading(opts, "probe feature memory") + setup + "\n".join(lines) + "\n")
    return out


# ------------------------------------------------------------------------------ a device smoke test
def smoke_one(preset: str, steps: int, overrides: list[str], tmp: Path) -> dict[str, Any]:
    """``steps`` training steps of ``preset`` (:meth:`Trainer.train_epoch`: views, rule, optimizer, metrics,
    the logged row) on random uint8 images of its dataset's shape (audio presets: ``synthetic-speech``),
    after one untimed step that pays for kernel selection and allocation."""
    from localssl.train import Trainer

    base = ["train.progress=false", f"train.log_every={steps}"]
    if dataset_info(load_config(preset).data.name).kind != "image":
        base.append("data.name=synthetic-speech")  # audio presets: the generated speech, no download
    cfg = load_config(preset, [*base, f"train.max_steps_per_epoch={steps}", *overrides])
    bs = cfg.train.batch_size
    data, info = None, dataset_info(cfg.data.name)
    if info.kind == "image":  # audio presets load their synthetic speech themselves
        g = torch.Generator().manual_seed(0)
        n = bs * steps
        images = torch.randint(0, 256, (n, info.channels, info.image_size, info.image_size), generator=g)
        data = ImageData(images.to(torch.uint8), torch.randint(0, info.num_classes, (n,), generator=g), [])
    run_dir = tmp / preset
    run_dir.mkdir()
    trainer = Trainer(cfg, run_dir, data=data)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    trainer.cfg = dataclasses.replace(cfg, train=dataclasses.replace(trainer.cfg.train, max_steps_per_epoch=1))
    trainer.train_epoch()
    trainer.cfg = dataclasses.replace(
        trainer.cfg, train=dataclasses.replace(trainer.cfg.train, max_steps_per_epoch=steps)
    )
    trainer.epoch = 1
    t0 = time.perf_counter()
    row = trainer.train_epoch()
    seconds = (time.perf_counter() - t0) / trainer.steps_per_epoch()
    loss = sum(v for k, v in row.items() if k.startswith("loss"))
    peak = torch.cuda.max_memory_allocated(trainer.device) / 2**20 if trainer.device.type == "cuda" else None
    return {"steps": trainer.steps_per_epoch(), "batch": bs, "s_per_step": seconds, "loss": loss, "peak_mb": peak}


@suite(
    "smoke", "every preset (or --presets) trains --steps steps on a device: ran?, s/step, finite loss, peak MB", None
)
def smoke(opts: Options) -> dict[str, Any]:
    """One Markdown row per preset, written as each preset finishes (a run cut off keeps its rows); a preset
    that fails is reported with its error and the others still run. ``failed`` counts the presets that
    raised or ended with a loss that is not finite."""
    presets = opts.presets or available_presets()
    device = next((o.split("=", 1)[1] for o in reversed(opts.overrides) if o.startswith("train.device=")), "auto")
    opts.emit(
        heading(opts, f"smoke test of every preset on {device}")
        + "| preset | ran | batch | steps | s/step | loss (sum of layers) | peak MB |\n"
        + "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows, failed = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            try:
                r = smoke_one(preset, opts.steps, opts.overrides, Path(tmp))
            except Exception as err:  # noqa: BLE001 - every preset is tried; its row names the error
                failed += 1
                msg = str(err).splitlines()[0][:160].replace("|", "/") if str(err) else ""
                rows[preset] = {"error": f"{type(err).__name__}: {msg}"}
                opts.emit(f"| {preset} | **failed**: {type(err).__name__}: {msg} | | | | | |\n")
                continue
            rows[preset] = r
            finite = "" if math.isfinite(r["loss"]) else " **(not finite)**"
            failed += not math.isfinite(r["loss"])
            peak = "–" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            opts.emit(
                f"| {preset} | yes | {r['batch']} | {r['steps']} | {r['s_per_step']:.4f} | {r['loss']:.4g}{finite} "
                f"| {peak} |\n"
            )
    opts.emit(f"\n{len(presets) - failed}/{len(presets)} presets ran with finite losses.\n")
    return {"presets": rows, "failed": failed}
