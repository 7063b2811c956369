"""The ``layer-parallel`` suite: layer-parallel training against its alternatives on the same processes.

    localssl bench --suite layer-parallel [settings=1.0x32:16,0.25x32:48,0.25x96:12,1.0x96:4] [--rounds R]

For every setting ``WIDTHxPX:N`` (model width, image side, steps per epoch) it launches, one after the other,
each in fresh processes, ``clapp++`` (default precision ``auto``) for two epochs of ``N`` steps of batch
``train.batch_size`` (32) and reads epoch 2's ``images_per_s`` from ``metrics.csv`` (epoch 1 pays the warm-up;
epoch 2 still holds the layer pipeline's fill and drain, ``1/(N+1)`` of it for 2 stages) and every process's
peak RSS from ``summary.json`` (the whole run's, and epoch 2's training alone: ``last_epoch_rss_mb``):

* (a) one process, 1 thread; (b) one process, 2 threads;
* (c) data-parallel ``torchrun --nproc_per_node=2``, 1 thread each, ``train.batch_size`` halved (same global batch);
* (d) the layer pipeline, ``torchrun --nproc_per_node=2 ... train.parallel=layers`` (``auto`` stage bounds), 1 thread
  each;
* (e0) ``bp-clapp++`` in one process, 1 thread, and (e) ``bp-clapp++`` over 2 processes with
  ``torch.distributed.pipelining`` (GPipe and 1F1B, 4 microbatches: :mod:`localssl.bench_suites.pp_backprop`,
  ``--steps N --warmup 2``), both with ``train.channels_last=false`` (gloo sends only contiguous tensors).

``PX=96``: a generated folder dataset (``data.name=folder``, 3 classes × 64 train and 8 test images of 96×96
random smooth colour fields, made once under the system's temporary folder), STL-10's image size. With
``--rounds R`` the whole sequence is repeated R times and the median is kept. A table per setting is emitted
as it finishes, then the ratios against the goals of issue 27 (d/a ≥ 1.7, d/c ≥ 0.9, d's peak ≤ 0.6 × c's).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from localssl.bench_suites import Options, heading, suite

DEFAULT_SETTINGS = "1.0x32:16,0.25x32:48,0.25x96:12,1.0x96:4"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
LOCALSSL = ["-m", "localssl", "pretrain"]
VARIANTS = ("a", "b", "c", "d", "e0", "e-gpipe", "e-1f1b")
LABELS = {
    "a": "(a) one process, 1 thread",
    "b": "(b) one process, 2 threads",
    "c": "(c) data-parallel 2×1 (batch 16 per rank)",
    "d": "(d) layer pipeline 2×1",
    "e0": "(e0) bp-clapp++ one process, 1 thread",
    "e-gpipe": "(e) bp-clapp++ torch pipelining GPipe 2×1",
    "e-1f1b": "(e) bp-clapp++ torch pipelining 1F1B 2×1",
}


def folder96(root: Path, per_class: int = 64, test: int = 8, side: int = 96) -> Path:
    """A small folder dataset of ``side``-pixel PNGs (3 classes), made once: upsampled random colour fields."""
    import torch
    from PIL import Image

    if (root / "done").exists():
        return root
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("test", test)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            coarse = torch.rand(n, 3, 12, 12, generator=g)
            img = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
            img = (img * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for i in range(n):
                Image.fromarray(img[i]).save(d / f"{i:03d}.png")
    (root / "done").write_text("ok\n")
    return root


def _run(cmd: list[str], threads: int, log) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log(f"$ OMP_NUM_THREADS={threads} {' '.join(cmd)}")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def _read_run(run_dir: Path) -> dict[str, Any]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "images_per_s": float(rows[-1]["images_per_s"]),
        "epoch_images_per_s": [float(r["images_per_s"]) for r in rows],
        "peak_mb": [m["rss_mb"] for m in summary.get("peak_memory_per_rank", [])],
        "epoch_peak_mb": [m.get("last_epoch_rss_mb") for m in summary.get("peak_memory_per_rank", [])],
        "stages": summary.get("stages"),
    }


def run_variant(variant: str, base: list[str], n: int, out: Path, log) -> dict[str, Any]:
    """One variant's fresh processes; its epoch-2 images/s and every process's peak RSS (MiB)."""
    common = [f"out_dir={out}", "train.epochs=2", f"train.max_steps_per_epoch={n}", "train.progress=false", *base]
    if variant in ("a", "b"):
        stdout = _run([sys.executable, *LOCALSSL, "clapp++", *common], 1 if variant == "a" else 2, log)
    elif variant == "c":
        stdout = _run([*TORCHRUN, *LOCALSSL, "clapp++", *common, "train.batch_size=16"], 1, log)
    elif variant == "d":
        stdout = _run([*TORCHRUN, *LOCALSSL, "clapp++", *common, "train.parallel=layers"], 1, log)
    elif variant == "e0":
        stdout = _run([sys.executable, *LOCALSSL, "bp-clapp++", *common, "train.channels_last=false"], 1, log)
    else:
        js = out / f"{variant}.json"
        cmd = [*TORCHRUN, "-m", "localssl.bench_suites.pp_backprop", "--schedule", variant.split("-")[1]]
        cmd += ["--microbatches", "4", "--steps", str(n), "--warmup", "2", "--json", str(js), *base]
        _run([*cmd, "train.channels_last=false"], 1, log)
        r = json.loads(js.read_text())
        mem = r["peak_memory_per_rank"]
        return {
            "images_per_s": r["images_per_s"],
            "peak_mb": [m["rss_mb"] for m in mem],
            "epoch_peak_mb": [m.get("last_epoch_rss_mb") for m in mem],
        }
    return _read_run(Path(stdout.strip().splitlines()[-1]))


def _ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    a, c, d = rows["a"], rows["c"], rows["d"]
    return {
        "d_over_a": d["images_per_s"] / a["images_per_s"],
        "d_over_c": d["images_per_s"] / c["images_per_s"],
        "d_peak_over_c_peak": max(d["peak_mb"]) / max(c["peak_mb"]),
        "d_epoch_peak_over_c_epoch_peak": max(d["epoch_peak_mb"]) / max(c["epoch_peak_mb"]),
    }


@suite("layer-parallel", "clapp++ one process (1, 2 threads), data-parallel 2×1, layer pipeline 2×1, bp pipelining")
def layer_parallel(opts: Options) -> dict[str, Any]:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    settings, base = DEFAULT_SETTINGS, []
    for o in opts.overrides:
        if o.startswith("settings="):
            settings = o.split("=", 1)[1]
        else:
            base.append(o)
    variants = [v for v in VARIANTS if not opts.presets or v in opts.presets]
    results: dict[str, Any] = {}
    tmp = Path(tempfile.gettempdir())
    for setting in settings.split(","):
        wpx, n = setting.split(":")
        width, px = wpx.split("x")
        over = [f"model.width={width}", *base]
        if px == "96":
            over += ["data.name=folder", f"data.root={folder96(tmp / 'localssl-folder96')}"]
        elif px != "32":
            raise ValueError(f"setting {setting}: PX is 32 (CIFAR-10) or 96 (the generated folder)")
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        with tempfile.TemporaryDirectory() as out:
            for _ in range(max(1, opts.rounds)):
                for v in variants:
                    runs[v].append(run_variant(v, over, int(n), Path(out), log))
                    log(f"{setting} {v}: {runs[v][-1]}")
        rows = {}
        for v, rs in runs.items():
            rows[v] = {
                "images_per_s": statistics.median(r["images_per_s"] for r in rs),
                "peak_mb": [max(r["peak_mb"][i] for r in rs) for i in range(len(rs[0]["peak_mb"]))],
                "epoch_peak_mb": [
                    max(r["epoch_peak_mb"][i] or 0 for r in rs) for i in range(len(rs[0]["epoch_peak_mb"]))
                ],
                "runs": rs,
            }
        a = rows.get("a", {}).get("images_per_s")
        text = heading(opts, f"layer-parallel, width {width}, {px} px, {n} steps per epoch") + (
            "| variant | img/s (epoch 2) | × (a) | training peak RSS per process, epoch 2 (MiB) | whole-run peak RSS "
            "(MiB) |\n| --- | ---: | ---: | --- | --- |\n"
        )
        for v, r in rows.items():
            ratio = f"{r['images_per_s'] / a:.2f}" if a else "–"
            peak = " / ".join(f"{m:.0f}" for m in r["peak_mb"])
            epeak = " / ".join(f"{m:.0f}" for m in r["epoch_peak_mb"])
            text += f"| {LABELS[v]} | {r['images_per_s']:.2f} | {ratio} | {epeak} | {peak} |\n"
        if all(k in rows for k in "acd"):
            rt = _ratios(rows)
            rows["ratios"] = rt
            text += (
                f"\n(d)/(a) {rt['d_over_a']:.2f} (goal ≥ 1.7); (d)/(c) {rt['d_over_c']:.2f} (goal ≥ 0.9); "
                f"training peak (d)/(c) {rt['d_epoch_peak_over_c_epoch_peak']:.2f} (goal ≤ 0.6; whole run "
                f"{rt['d_peak_over_c_peak']:.2f}). Stages: {rows['d']['runs'][0]['stages']}.\n"
            )
        opts.emit(text)
        results[setting] = rows
    return {"settings": results}
