"""Training FLOP per image of every table2 row on CIFAR-10 at full width: the sizing of ``--scale gpu``.

A full-width step is too slow to count on a small CPU, so each preset's forward + backward FLOP of one
training step (``torch.utils.flop_counter``: convolutions and matrix products, as ``localssl bench``)
are counted at widths 1/16 and 1/8 and extrapolated to width 1 with ``a·w² + b·w`` (a convolution's
FLOP grow with ``c_in·c_out``, i.e. ``w²``, except the first layer's, which grow with ``w``; the ``B``
maps grow with ``w²``). Prints GFLOP per source image for each row and the total of one CIFAR-10 epoch
(50 000 images) of every trained row.

    OMP_NUM_THREADS=1 python benchmarks/table2_flops.py
"""

from __future__ import annotations

import torch

from localssl.bench import Runner, Spec
from localssl.config import available_presets
from localssl.experiments.table2 import TABLE2

WIDTHS = (0.0625, 0.125)


def gflop_per_image(preset: str, width: float) -> float:
    runner = Runner(Spec(preset, preset), [f"model.width={width}", "train.device=cpu"], n_batches=2)
    return runner.counted_step() / runner.batch_size / 1e9


def main() -> None:
    torch.set_num_threads(1)
    presets = set(available_presets())
    total = 0.0
    print("| row | preset | batch | GFLOP/img w=1/16 | w=1/8 | w=1 (extrapolated) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in TABLE2.rows:
        if row.preset not in presets:
            print(f"| {row.label} | {row.preset} | – | not in this version | | |")
            continue
        (w1, w2), (f1, f2) = WIDTHS, [gflop_per_image(row.preset, w) for w in WIDTHS]
        # f = a w² + b w through both points
        a = (f2 / w2 - f1 / w1) / (w2 - w1)
        b = f1 / w1 - a * w1
        full = a + b
        total += full
        batch = Runner(Spec(row.preset, row.preset), ["model.width=0.0625", "train.device=cpu"], 1).batch_size
        print(f"| {row.label} | {row.preset} | {batch} | {f1:.4f} | {f2:.4f} | {full:.2f} |")
    print(f"\none CIFAR-10 epoch (50 000 images) of every row: {total * 50_000 / 1e6:.2f} PFLOP")


if __name__ == "__main__":
    main()
