"""CLAPP++ Table 2 (Delrocq et al. 2026): linear-probe accuracy of local and backprop SSL rules on
CIFAR-10, STL-10 and Tiny ImageNet — ``localssl reproduce table2 --scale smoke|cpu|gpu|paper --seeds N [--jobs N]``.

Rows whose preset is not in the library yet are listed as not run. Random init (not in the paper's
table) is added as the floor of the linear probe, twice: read through the all-layer probe of the
SimCLR-view presets (``random``) and through the patch-grid probe of CLAPP 2021 (``random-patch``);
the report states each trained row's difference from its floor.
"""

from __future__ import annotations

from pathlib import Path

from localssl.experiments import SCALES, experiment
from localssl.experiments.engine.grid import IMAGE_SCALES, PAPER_PROBE, Row, Scale, Table
from localssl.experiments.engine.harness import run_table

C, S, T = "cifar10", "stl10", "tinyimagenet"

# Sizing of the ``gpu`` scale (`localssl bench --suite table2-flops`, benchmarks/RESULTS.md): one CIFAR-10 epoch
# (50 000 images) of the 11 trained rows at full width is 15.1 PFLOP of training (CLAPP++ family 10-12
# GFLOP per image, backprop rows 14.5, CLAPP 2021's 49 patches 63, predictive coding's inference 136);
# half of it, plus each probe's feature pass (a forward pass of 60 000 images, about 3.8 PFLOP for all
# rows), is about 11.4 PFLOP: 7.6 minutes at the assumed 25 TFLOP/s.
GPU_TFLOPS = 25
GPU = Scale(
    "gpu",
    "one H100-class GPU, about 8 minutes: VGG-6 at full width, every preset with its own optimizer, learning "
    "rate and batch size (32 images; SCFF 100, LPL 1024, as published), one epoch on 25 000 CIFAR-10 train "
    "images (drawn with the seed): 781 optimizer steps for the batch-32 rows, 0.17% of the paper's 469 000. "
    f"Sized at an assumed {GPU_TFLOPS} TFLOP/s achieved on the device as a whole (TF32 convolutions at batch "
    "32, several `--jobs` sharing it): 7.6 PFLOP of training and 3.8 PFLOP of probe features for all rows "
    "(`localssl bench --suite table2-flops`); `benchmarks/device_check.sh` measures the real rate. "
    + PAPER_PROBE
    + ". "
    "An early-training comparison of the rules, not the published accuracies.",
    overrides=("model.width=1.0", "data.train_subset=25000", "train.epochs=1"),
    datasets=(C,),
)

TABLE2 = Table(
    name="table2",
    title="CLAPP++ Table 2: local vs backprop self-supervised learning, VGG-6",
    source="Delrocq et al. 2026, *Can Local Learning Match Self-Supervised Backpropagation?*, Table 2",
    datasets=(C, S, T),
    rows=(
        Row("Random init (not in Table 2)", "random"),
        Row("Random init, patch-grid probe (floor of the CLAPP 2021 row)", "random-patch"),
        Row(
            "BP-CLAPP++",
            "bp-clapp++",
            published={C: 80.49, S: 80.36, T: 37.55},
            published_std={C: 0.20, S: 0.26, T: 0.61},
        ),
        Row(
            "BP-InfoNCE",
            "bp-infonce",
            published={C: 80.69, S: 81.97, T: 36.78},
            published_std={C: 0.84, S: 1.23, T: 0.73},
        ),
        Row("Naive CLAPP DFA", "dfa-clapp", published={S: 52.30}),
        Row("Naive CLAPP Predictive Coding", "pc-clapp", published={S: 36.75}),
        Row("CLAPP (Illing et al., 2021)", "clapp2021", published={S: 73.6}, floor="random-patch"),
        Row("LPL (Halvagal and Zenke, 2023)", "lpl", published={C: 59.4, S: 63.2}),
        Row("Stochastic FF (Zhu et al., 2025)", "stochastic-ff", published={C: 76.96}),
        Row("SCFF (Chen et al., 2025)", "scff", published={C: 80.60, S: 77.14, T: 35.67}),
        Row("CLAPP++ (no 2D spatial dependence)", "clapp++nospatial", published={C: 73.21, S: 75.10, T: 28.18}),
        Row(
            "CLAPP++",
            "clapp++",
            published={C: 80.51, S: 78.66, T: 36.63},
            published_std={C: 0.27, S: 0.16, T: 0.32},
        ),
        Row(
            "CLAPP++DFB",
            "clapp++dfb",
            published={C: 80.65, S: 79.38, T: 36.70},
            published_std={C: 0.18, S: 0.17, T: 0.24},
        ),
        Row(
            "CLAPP++both",
            "clapp++both",
            published={C: 81.18, S: 79.62, T: 37.78},
            published_std={C: 0.18, S: 0.28, T: 0.67},
        ),
    ),
    scales={**IMAGE_SCALES, "gpu": GPU},
    floor="random",
)


@experiment(
    "table2",
    "CLAPP++ Table 2: every implemented rule, linear probe on CIFAR-10 / STL-10 / Tiny ImageNet",
    scales=(*SCALES, "gpu"),
)
def run(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(TABLE2, out, scale, seeds, only=only)
