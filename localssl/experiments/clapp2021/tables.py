"""CLAPP 2021 (Illing et al., NeurIPS 2021) Tables 1 and 5, STL-10 column: linear-probe accuracy of
CLAPP and its baselines, and of CLAPP's loss trained in 1–6 gradient-isolated modules.

``localssl reproduce clapp2021-table1`` / ``clapp2021-table5``. These use the patch-grid protocol of
the paper (64 px grey crops cut into 16 px patches, presets ``clapp2021``, ``cpc``, ``gim``, ...); the
STL-10 column runs where STL-10 is on disk (``localssl data download stl10``).
"""

from __future__ import annotations

from pathlib import Path

from localssl.experiments import experiment
from localssl.experiments.engine.grid import SMOKE_OVERRIDES, Row, Scale, Table
from localssl.experiments.engine.harness import run_table

S = "stl10"

PATCH_SCALES: dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        "pipeline check only, not a measurement: the STL-10 column uses the 4000/1000-image CIFAR-10 subset "
        "shipped with localssl (upsampled to 96 px by the patch-grid views); VGG-6 at width 1/16, 64 pretraining "
        "images, 1 epoch, batch 32 for every preset; probe: 200 train / 100 validation images, 2 epochs.",
        overrides=SMOKE_OVERRIDES,
        substitute={S: "cifar10-mini"},
    ),
    "cpu": Scale(
        "cpu",
        "reduced for 2 CPU cores: VGG-6 at width 1/8, pretraining on 2000 images of STL-10 unlabeled "
        "(drawn with the seed) for 3 epochs, batch 32 images (7×7 patches each), the preset's optimizer and "
        "learning rate; linear probe as implemented by `localssl probe` on the preset's probe layers (30 epochs "
        "of Adam 1e-3, best of 1000 held-out train images, tested once on the 8000 test images).",
        overrides=("model.width=0.125", "data.train_subset=2000", "train.epochs=3"),
    ),
    "paper": Scale(
        "paper",
        "the presets as published: VGG-6 at full width, the preset's epochs (600 for CLAPP, 300 for CPC/GIM), batch "
        "32 images, all of STL-10 unlabeled; linear probe as implemented by `localssl probe`.",
    ),
}

SUPERVISED_NOTE = (
    "our preset trains on whole 96 px images with one crop+flip view (the CLAPP++ protocol) and is probed on all "
    "layers, not on patches as in the paper."
)

TABLE1 = Table(
    name="clapp2021-table1",
    title="CLAPP 2021 Table 1: CLAPP and its baselines on STL-10, VGG-6",
    source="Illing et al. 2021, *Local plasticity rules can learn deep representations using self-supervised "
    "contrastive predictions*, Table 1",
    datasets=(S,),
    rows=(
        Row("Random init", "random-patch", published={S: 21.8}),
        Row("Greedy supervised", "greedy-supervised", published={S: 65.0}, note=SUPERVISED_NOTE),
        Row("Supervised", "supervised", published={S: 73.2}, note=SUPERVISED_NOTE),
        Row("CPC", "cpc", published={S: 81.1}),
        Row("GIM (3 modules)", "gim", published={S: 78.3}),
        Row("Hinge loss CPC", "hinge-cpc", published={S: 80.3}),
        Row("CLAPP", "clapp2021", published={S: 74.0}),
    ),
    scales=PATCH_SCALES,
)

TABLE5 = Table(
    name="clapp2021-table5",
    title="CLAPP 2021 Table 5: the CLAPP loss in gradient-isolated modules, STL-10, VGG-6",
    source="Illing et al. 2021, Table 5 (Fig. 3 inset); module layouts of their Table 3",
    datasets=(S,),
    rows=(
        Row("6 modules, layer-wise (CLAPP)", "clapp2021", ("rule.splits=6",), published={S: 74.0}),
        Row("4 modules upper (3,1,1,1)", "clapp2021", ("rule.splits=[3,1,1,1]",), published={S: 75.4}),
        Row("4 modules lower (1,1,1,3)", "clapp2021", ("rule.splits=[1,1,1,3]",), published={S: 76.2}),
        Row("3 modules (2,2,2)", "clapp2021", ("rule.splits=3",), published={S: 77.4}),
        Row("2 modules (3,3)", "clapp2021", ("rule.splits=2",), published={S: 77.6}),
        Row("1 module, end-to-end (hinge loss CPC)", "clapp2021", ("rule.splits=1",), published={S: 80.3}),
    ),
    scales=PATCH_SCALES,
)


@experiment(
    "clapp2021-table1",
    "CLAPP 2021 Table 1 (STL-10): random, (greedy) supervised, CPC, GIM, hinge CPC, CLAPP",
)
def run_table1(out: Path, scale: str, seeds: int) -> None:
    run_table(TABLE1, out, scale, seeds)


@experiment("clapp2021-table5", "CLAPP 2021 Table 5 (STL-10): CLAPP loss in 6/4/3/2/1 gradient-isolated modules")
def run_table5(out: Path, scale: str, seeds: int) -> None:
    run_table(TABLE5, out, scale, seeds)
