"""How close is incremental predictive coding's weight update to backprop's, per objective and grid point?

For each Table A3 objective (cross-entropy, the CLAPP objective, the LPL objective) and each point of the
paper's grid (``T ∈ {1, 9, 17}`` × ``α ∈ {0.01, 0.1, 0.5}``), the iPC rule's update of every layer on a
batch (the sum of its ``T`` weight gradients, i.e. iPC's update to first order in the learning rate;
see ``localssl/rules/predictive_coding.py``) is compared with the end-to-end backprop gradient of the same
top objective on the same batch (:func:`localssl.evaluate.alignment.gradient_alignment`): cosine
similarity and relative norm ``‖Δ_PC‖ / ‖Δ_BP‖`` per layer, mean over batches. The encoder is VGG-6 at
its random initialisation (seed 0), batches are views of the CIFAR-10 test images shipped with the
package (``cifar10-mini``), so no dataset is needed.

    python benchmarks/pc_alignment.py --width 0.125 --batches 4

Prints a Markdown table and appends it to ``benchmarks/RESULTS.md`` (unless ``--no-append``).
"""

from __future__ import annotations

import argparse
import math

import torch
from record import append_section

from localssl.build import build
from localssl.config import load_config
from localssl.data import load_split
from localssl.evaluate.alignment import gradient_alignment
from localssl.experiments.tableA3 import GRID_ALPHA, GRID_T, OBJECTIVES
from localssl.train import resolve_config

BATCH = {"cross_entropy": 64, "clapp": 32, "lpl": 128}  # images per batch, as in the tableA3 cpu protocol


def measure(objective: str, T: int, alpha: float, width: float, n_batches: int) -> list:
    preset = OBJECTIVES[objective][0]
    bs = BATCH[objective]
    cfg = resolve_config(
        load_config(
            preset,
            [
                "data.name=cifar10-mini",
                f"model.width={width}",
                f"train.batch_size={bs}",
                f"rule.T={T}",
                f"rule.alpha={alpha}",
            ],
        )
    )
    comp = build(cfg, torch.device("cpu"))
    data = load_split("cifar10-mini", "test")
    if len(data) < n_batches * bs:
        raise SystemExit(f"--batches {n_batches} needs {n_batches * bs} test images; cifar10-mini has {len(data)}")
    torch.manual_seed(0)
    batches = [
        comp.views(data.images[i * bs : (i + 1) * bs], data.labels[i * bs : (i + 1) * bs]) for i in range(n_batches)
    ]
    return gradient_alignment(comp.encoder, comp.rule, batches)


def cell(value: float, digits: str) -> str:
    return "–" if math.isnan(value) else format(value, digits)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    lines = [
        "| objective | T | α | cosine with BP, layers 1 → 6 | ‖Δ_PC‖ / ‖Δ_BP‖, layers 1 → 6 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for objective, (_, label) in OBJECTIVES.items():
        for T in GRID_T:
            for alpha in GRID_ALPHA:
                rows = measure(objective, T, alpha, a.width, a.batches)
                cos = " ".join(cell(r.cosine, "+.3f") for r in rows)
                rel = " ".join(cell(r.rel_norm, ".1e") for r in rows)
                lines.append(f"| {label} | {T} | {alpha:g} | {cos} | {rel} |")
                print(lines[-1], flush=True)
    if a.no_append:
        return
    append_section(
        "Predictive coding (Table A3 objectives): iPC update vs backprop at initialisation",
        a.threads,
        f"VGG-6 width {a.width} at its random initialisation (seed 0); {a.batches} batches of cifar10-mini test "
        'images per grid point (batch 64 / 32 / 128 images for cross-entropy / CLAPP / LPL). "–": the PC update '
        "of that layer is exactly 0 (with T = 1 no prediction error has reached any encoder layer yet).",
        lines,
    )


if __name__ == "__main__":
    main()
