"""Which layers does a short pretraining improve? A linear probe of every layer alone, trained vs at init.

For each preset: the encoder at its random initialisation (``train.epochs=0``: same seed, same
architecture, activity normalisation included) and after ``--epochs`` epochs on ``--subset`` CIFAR-10
train images are probed layer by layer (``probe.layers=1`` … ``6``) and with all layers concatenated
(``probe.layers=all``, the library's protocol), with the library's linear probe (``--probe-subset``
labelled train images, 1000 held out for validation, the full test set once).

    python benchmarks/layer_probe.py --presets clapp++ --epochs 2
    python benchmarks/layer_probe.py --presets lpl --epochs 5

Prints a Markdown table and appends it to ``benchmarks/RESULTS.md`` (unless ``--no-append``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from record import append_section

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain

LAYERS = ("1", "2", "3", "4", "5", "6", "all")


def probe_layers(run_dir: Path, probe_subset: int) -> dict[str, float]:
    out = {}
    for layers in LAYERS:
        overrides = [f"probe.layers={layers}", f"probe.train_subset={probe_subset}", "probe.val_size=1000"]
        out[layers] = 100 * probe(run_dir, overrides)["test_acc"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["clapp++"])
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--subset", type=int, default=4000, help="pretraining images")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--probe-subset", type=int, default=5000)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/layer-probe")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    lines = [
        "| preset | pretraining | steps | " + " | ".join(f"layer {k}" for k in LAYERS[:-1]) + " | all layers |",
        "| --- | --- | --- | " + " | ".join("---" for _ in LAYERS) + " |",
    ]
    for preset in a.presets:
        for epochs in (0, a.epochs):
            overrides = [
                "data.name=cifar10",
                *([f"data.root={a.data_root}"] if a.data_root else []),
                f"data.train_subset={a.subset}",
                f"model.width={a.width}",
                f"train.batch_size={a.batch_size}",
                f"train.epochs={epochs}",
                "train.progress=false",
                f"out_dir={Path(a.out) / preset}",
            ]
            run_dir = pretrain(load_config(preset, overrides))
            steps = json.loads((run_dir / "summary.json").read_text()).get("global_step", 0)
            accs = probe_layers(run_dir, a.probe_subset)
            when = "random init" if epochs == 0 else f"{epochs} epoch(s)"
            lines.append(f"| `{preset}` | {when} | {steps} | " + " | ".join(f"{accs[k]:.2f}" for k in LAYERS) + " |")
            print(lines[-1], flush=True)
    if a.no_append:
        return
    append_section(
        "Layer by layer: what a short pretraining does to each layer's linear probe",
        a.threads,
        f"VGG-6 width {a.width}, {a.subset} CIFAR-10 train images (seed 0), batch {a.batch_size} images for every "
        f"preset (each keeps its optimiser and learning rate); probe test accuracy (%) of each layer alone "
        f"(pooled with the CLAPP++ kernels) and of all six concatenated; {a.probe_subset} labelled train images, "
        "1000 held out for validation, full test set.",
        lines,
    )


if __name__ == "__main__":
    main()
