"""The ``smoke`` suite: a few training steps of every preset on a device, one Markdown row per preset as it
finishes (``benchmarks/device_check.sh``'s stage 2; see :mod:`localssl.bench_suites`)."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from localssl.bench_suites import Options, heading, suite
from localssl.config import available_presets, load_config
from localssl.data import ImageData, dataset_info


def smoke_one(
    preset: str, steps: int, overrides: list[str], tmp: Path, warmup: int = 1, random_images: bool = True
) -> dict[str, Any]:
    """``steps`` training steps of ``preset`` (:meth:`Trainer.train_epoch`: views, rule, optimizer, metrics,
    the logged row) on random uint8 images of its dataset's shape (``random_images=False``: the dataset's own
    train images, loaded from the data root; audio presets: ``synthetic-speech``), after ``warmup`` untimed steps
    that pay for kernel selection and allocation."""
    from localssl.train import Trainer

    base = ["train.progress=false", f"train.log_every={steps}"]
    if dataset_info(load_config(preset).data.name).kind != "image":
        base.append("data.name=synthetic-speech")  # audio presets: the generated speech, no download
    cfg = load_config(preset, [*base, f"train.max_steps_per_epoch={steps}", *overrides])
    bs = cfg.train.batch_size
    data, info = None, dataset_info(cfg.data.name)
    if info.kind == "image" and random_images:  # else the Trainer loads the data set (audio: synthetic speech)
        g = torch.Generator().manual_seed(0)
        n = bs * max(steps, warmup)
        images = torch.randint(0, 256, (n, info.channels, info.image_size, info.image_size), generator=g)
        data = ImageData(images.to(torch.uint8), torch.randint(0, info.num_classes, (n,), generator=g), [])
    run_dir = tmp / preset
    run_dir.mkdir()
    trainer = Trainer(cfg, run_dir, data=data)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    trainer.cfg = dataclasses.replace(cfg, train=dataclasses.replace(trainer.cfg.train, max_steps_per_epoch=warmup))
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
