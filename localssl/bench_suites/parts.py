"""Speed suites of parts of a step or of the probe: ``b-precision``, ``online-probe``, ``probe-memory`` (see
:mod:`localssl.bench_suites`)."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from localssl.bench import machine_description
from localssl.bench_suites import Options, heading, suite
from localssl.config import load_config
from localssl.experiments.engine.local import run_jobs


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


@suite(
    "online-probe",
    "the online probe's cost (train.online_probe): one scoring (extraction + fits) over the steps between two",
)
def online_probe(opts: Options) -> dict[str, Any]:
    """For each preset (default ``clapp++``, ``bp-clapp++``; VGG-6 at width 1/4 on the CIFAR-10 training set,
    the online probe at its defaults), ``--rounds`` rounds, each of ``--steps`` training steps (the rule's step:
    views, gradients, optimizer) then one scoring of the online probe (extraction of its images, the fits, the
    held-out accuracy), so both are timed under the same load. The share is the scoring's time over the
    training time between two scorings (``train.online_probe_every`` steps, else one epoch), in %."""
    from localssl.train import Trainer, load_pretrain_data

    base = ["model.width=0.25", "train.online_probe=true"]
    lines = [
        "| preset | training step (ms) | steps between scorings | scoring (s): extraction + fits "
        "| share of training time, % (median; rounds) |",
        "| --- | --- | --- | --- | --- |",
    ]
    out = {}
    for preset in opts.presets or ["clapp++", "bp-clapp++"]:
        cfg = load_config(preset, [*base, *opts.overrides])
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(cfg, Path(tmp), data=load_pretrain_data(cfg))
            probe = tr.online_probe
            assert probe is not None
            every = cfg.train.online_probe_every or tr.steps_per_epoch()
            perm = torch.randperm(len(tr.images), generator=torch.Generator().manual_seed(0))
            bs, k = cfg.train.batch_size, 0
            step_t, score_t, split = [], [], []
            for _ in range(opts.warmup):
                tr.optimize(tr.make_views(perm[:bs]))
            for r in range(opts.rounds):
                t0 = time.perf_counter()
                for _ in range(opts.steps):
                    idx = perm[(k * bs) % (len(perm) - bs) :][:bs]
                    k += 1
                    tr.optimize(tr.make_views(idx))
                step_t.append((time.perf_counter() - t0) / opts.steps)
                t0 = time.perf_counter()
                probe.score(global_step=-1 - r)  # a step of its own: never the remembered scoring
                score_t.append(time.perf_counter() - t0)
                split.append(probe.last_seconds)
        shares = [100 * s / (every * t) for s, t in zip(score_t, step_t)]
        step, score = statistics.median(step_t), statistics.median(score_t)
        extract = statistics.median(d["extract"] for d in split)
        fit = statistics.median(d["fit"] for d in split)
        out[preset] = {
            "step_ms": 1e3 * step,
            "every": every,
            "score_s": score,
            "extract_s": extract,
            "fit_s": fit,
            "share_percent": statistics.median(shares),
            "rounds_share_percent": shares,
            "images": len(probe.train_idx) + len(probe.val_idx) + len(probe.held),
        }
        lines.append(
            f"| {preset} | {1e3 * step:.1f} | {every} | {score:.1f}: {extract:.1f} + {fit:.1f} "
            f"| **{statistics.median(shares):.1f}** ({min(shares):.1f}–{max(shares):.1f}) |"
        )
    setup = (
        f"Machine: {machine_description()}. {opts.rounds} rounds of {opts.steps} training steps and one scoring "
        "(the online probe's images: train.online_probe_train + train.online_probe_holdout), medians.\n\n"
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
