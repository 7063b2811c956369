"""Smoke test of every preset on a device: a few training steps each, one Markdown row per preset.

Each preset trains one epoch of ``--steps`` steps (:meth:`Trainer.train_epoch`: views, rule, optimizer,
metrics, the logged row) on random uint8 images of its dataset's shape (the audio presets on their
synthetic speech, ``data.name=synthetic-speech``), with its own batch size. A row says whether it ran,
its seconds per step after the first step (which pays for kernel selection and allocation), the sum of
its layer losses (finite?) and the peak device memory. Rows are appended to ``--results`` as each
preset finishes, so a run that is cut off keeps the rows it has; a preset that fails is reported with
its error and the others still run.

    python benchmarks/device_smoke.py --device cuda --steps 20 --results FILE.md [--presets P ...] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import torch

from localssl.config import available_presets, load_config
from localssl.data import ImageData, dataset_info
from localssl.train import Trainer


def smoke(preset: str, device: str, steps: int, overrides: list[str], tmp: Path) -> dict:
    base = ["train.progress=false", f"train.device={device}", f"train.log_every={steps}"]
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
    trainer.train_epoch()  # one step: kernel selection, allocator, optimizer state
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--presets", nargs="+", default=None, help="default: every preset")
    p.add_argument("--results", help="append the rows to this Markdown file as they come")
    args, overrides = p.parse_known_args()
    presets = args.presets or available_presets()
    header = (
        "| preset | ran | batch | steps | s/step | loss (sum of layers) | peak MB |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    )

    def write(text: str) -> None:
        print(text, end="", flush=True)
        if args.results:
            with open(args.results, "a") as fh:
                fh.write(text)

    write(header)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            try:
                r = smoke(preset, args.device, args.steps, overrides, Path(tmp))
            except Exception as err:  # noqa: BLE001 - every preset is tried; its row names the error
                failed += 1
                msg = str(err).splitlines()[0][:160].replace("|", "/") if str(err) else ""
                write(f"| {preset} | **failed**: {type(err).__name__}: {msg} | | | | | |\n")
                continue
            finite = "" if math.isfinite(r["loss"]) else " **(not finite)**"
            failed += not math.isfinite(r["loss"])
            peak = "–" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
            write(
                f"| {preset} | yes | {r['batch']} | {r['steps']} | {r['s_per_step']:.4f} | {r['loss']:.4g}{finite} "
                f"| {peak} |\n"
            )
    write(f"\n{len(presets) - failed}/{len(presets)} presets ran with finite losses.\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
