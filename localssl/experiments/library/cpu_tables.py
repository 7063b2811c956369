"""Accuracy studies at small CPU budgets, declared as tables of the reproduction harness (like ``table2.py``).

Each is ``localssl reproduce NAME --scale smoke|cpu [--seeds N] [--jobs N] [--only PRESET]``; the ``cpu``
scale is the budget whose numbers are in ``benchmarks/RESULTS.md``, the ``smoke`` scale a pipeline check.

* ``b-rank``: CLAPP++ with the dense ``B`` vs a factored ``B = UV`` of rank 512 × width (the rank whose
  speed ``localssl bench --suite b-cost`` measures), random init as the floor;
* ``patch-cifar10``: CLAPP 2021, CPC, hinge CPC and GIM on a small CIFAR-10 patch grid, against random init;
* ``speech-synthetic``: CPC and CLAPP (BPTT, e-prop) on the synthetic speech task, GRU and last-conv probes;
* ``zoo-cifar10``: FF, PhyLL, SCFF, LPL, VICReg (and ``clapp++`` for reference) at one CIFAR-10 budget, the
  FF-family encoders also at their own initialisation;
* ``layer-probe``: each layer of ``clapp++`` and ``lpl`` probed alone (and all together), at initialisation
  and after a short pretraining.

Rows that share a preset and a recipe share one run: the ``probe`` section is not part of a run's key
(:mod:`localssl.experiments.engine.runs`), so the probes of several layers read the same encoder.
"""

from __future__ import annotations

from pathlib import Path

from localssl.experiments import experiment
from localssl.experiments.engine.grid import SMOKE_OVERRIDES, Row, Scale, Table
from localssl.experiments.engine.harness import run_table

C, SPEECH = "cifar10", "synthetic-speech"
SCALES = ("smoke", "cpu")
MINI = {C: "cifar10-mini"}


def smoke_scale(*extra: str) -> Scale:
    """The harness's smoke settings on the CIFAR-10 subset shipped with localssl (``extra`` first)."""
    return Scale(
        "smoke",
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl, VGG-6 at width 1/16, "
        "64 pretraining images, 1 epoch, batch 32; probe: 200 train / 100 validation images, 2 epochs.",
        overrides=(*extra, *SMOKE_OVERRIDES),
        substitute=MINI,
    )


# ----------------------------------------------------------------------------------------- b-rank
B_RANK_CPU = (
    "data.train_subset=5000",
    "model.width=0.125",
    "train.epochs=4",
    "probe.epochs=20",
    "probe.train_subset=10000",
    "probe.val_size=1000",
)
B_RANK = Table(
    name="b-rank",
    title="Does a factored (low-rank) B keep CLAPP++'s accuracy? Dense vs rank-64 B, CIFAR-10",
    source="Delrocq et al. 2026 (CLAPP++, dense B); the factored B = UV is this library's cost cut",
    datasets=(C,),
    rows=(
        Row("Random init", "random"),
        Row("CLAPP++, dense B", "clapp++", published={C: 80.51}, published_std={C: 0.27}),
        Row("CLAPP++, rank-64 B = UV", "clapp++", ("objective.B_rank=64",)),  # 512 × width 1/8
    ),
    scales={
        "smoke": smoke_scale(),
        "cpu": Scale(
            "cpu",
            "VGG-6 at width 1/8 (rank 64 = 512 × width, 8–16× fewer B parameters), 5000 CIFAR-10 train images "
            "(drawn with the seed) × 4 epochs, each preset's optimizer and learning rate; linear probe on all six "
            "layers (`localssl probe`, 20 epochs, 10 000 labelled images, 1000 held out for validation, the full "
            "test set). Whether the factored B loses accuracy at this scale, not at 300 epochs.",
            overrides=B_RANK_CPU,
        ),
    },
    floor="random",
)


@experiment(
    "b-rank",
    "CLAPP++ with a dense vs a factored rank-64 B: linear probe on CIFAR-10 at a CPU budget",
    SCALES,
)
def run_b_rank(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(B_RANK, out, scale, seeds, only=only)


# ---------------------------------------------------------------------------------- patch-cifar10
PATCH_GRID = ("views.crop_size=32", "views.resize=null", "objective.steps=1", "train.batch_size=32")
PATCH_NOTE = "published on STL-10 with the paper's 7×7 grid and 300–600 epochs (Illing et al. 2021, Table 1): {}%"
PATCH = Table(
    name="patch-cifar10",
    title="CLAPP 2021, CPC, GIM on a small CIFAR-10 patch grid (CPU budget)",
    source="Illing et al. 2021, Table 1 (STL-10; not comparable with this budget, see the notes)",
    datasets=(C,),
    rows=(
        Row("Random init", "random-patch", note=PATCH_NOTE.format(21.8)),
        Row("CPC", "cpc", note=PATCH_NOTE.format(81.1)),
        Row("Hinge-loss CPC", "hinge-cpc", note=PATCH_NOTE.format(80.3)),
        Row("GIM", "gim", note=PATCH_NOTE.format(78.3)),
        Row("CLAPP", "clapp2021", note=PATCH_NOTE.format(74.0)),
        Row("CLAPP, asymmetric", "clapp2021-asym", note=PATCH_NOTE.format(74.1)),
    ),
    scales={
        "smoke": smoke_scale(*PATCH_GRID),
        "cpu": Scale(
            "cpu",
            "the CIFAR-10 subset shipped with localssl (cifar10-mini), 1024 pretraining images × 5 epochs, batch 32, "
            "VGG-6 at width 1/8, the grey 32 px image cut into a 3×3 grid of 16 px patches (stride 8), 1 prediction "
            "step (the paper's 7×7 grid and 5 steps cost about 5× more per image); linear probe on layer 6 averaged "
            "over the grid (30 epochs, 500 held-out validation images, the 1000 test images). Speed of the same "
            "presets: `localssl bench --suite patch-grid`.",
            overrides=(
                *PATCH_GRID,
                "data.train_subset=1024",
                "model.width=0.125",
                "train.epochs=5",
                "probe.epochs=30",
                "probe.val_size=500",
            ),
            substitute=MINI,
        ),
    },
    floor="random-patch",
)


@experiment(
    "patch-cifar10",
    "CLAPP 2021, CPC, hinge CPC, GIM vs random init on a CIFAR-10 patch grid (CPU)",
    SCALES,
)
def run_patch(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(PATCH, out, scale, seeds, only=only)


# ------------------------------------------------------------------------------- speech-synthetic
FROZEN = ("rule.name=frozen", "train.epochs=0")
GRU, CONV = ("probe.layers=6",), ("probe.layers=5",)
LIBRI = "published frame accuracy on LibriSpeech (Illing et al. 2021), another task: {}%"
SPEECH_TABLE = Table(
    name="speech-synthetic",
    title="CPC and CLAPP on the synthetic speech task (CPU budget)",
    source="Illing et al. 2021, LibriSpeech phone classification (another task: see the notes)",
    datasets=(SPEECH,),
    rows=(
        Row("Random init, GRU probe", "cpc-audio", (*FROZEN, *GRU), note=LIBRI.format(27.7)),
        Row("Random init, last-conv probe", "cpc-audio", (*FROZEN, *CONV)),
        Row("CPC, GRU probe", "cpc-audio", GRU, note=LIBRI.format(64.3)),
        Row("CPC, last-conv probe", "cpc-audio", CONV),
        Row("CLAPP (BPTT), GRU probe", "clapp-audio", GRU, note=LIBRI.format(61.7)),
        Row("CLAPP (BPTT), last-conv probe", "clapp-audio", CONV),
        Row("CLAPP (e-prop), GRU probe", "clapp-audio-eprop", GRU, note=LIBRI.format(58.6)),
        Row("CLAPP (e-prop), last-conv probe", "clapp-audio-eprop", CONV),
    ),
    scales={
        "smoke": Scale(
            "smoke",
            "pipeline check only, not a measurement: 8 utterances × 1 epoch, GIM's audio encoder at width 1/32; "
            "probe: 8 train / 8 validation utterances, 1 epoch.",
            overrides=(
                "data.train_subset=8",
                "model.width=0.03125",
                "views.window=6400",
                "train.epochs=1",
                "train.progress=false",
                "probe.epochs=1",
                "probe.train_subset=8",
                "probe.val_size=8",
            ),
        ),
        "cpu": Scale(
            "cpu",
            "synthetic-speech (8 classes: silence + 7 formant vowels, chance 12.5 %), 256 pretraining utterances "
            "(drawn with the seed) × 6 epochs, batch 8, Adam 1e-3 for every method, GIM's audio encoder at width "
            "1/16 (32 conv channels, 16 GRU units), 6400-sample windows, 12 prediction steps; frame-level linear "
            "probe on the GRU output (layer 6) and on the last conv layer (layer 5): 20 epochs, 64 held-out "
            "utterances, the 128 test utterances.",
            overrides=(
                "data.train_subset=256",
                "model.width=0.0625",
                "views.window=6400",
                "train.epochs=6",
                "train.lr=1e-3",
                "probe.epochs=20",
                "probe.val_size=64",
            ),
        ),
    },
)


@experiment("speech-synthetic", "CPC and CLAPP (BPTT, e-prop) vs random init on synthetic speech (CPU)", SCALES)
def run_speech(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(SPEECH_TABLE, out, scale, seeds, only=only)


# ------------------------------------------------------------------------------------ zoo-cifar10
AT_INIT = ("train.epochs=0",)
ZOO = Table(
    name="zoo-cifar10",
    title="Rule zoo on CIFAR-10 at one CPU budget: FF, PhyLL, SCFF, LPL, VICReg against random init",
    source="Chen et al. 2025 (SCFF, Table 1); Halvagal and Zenke 2023 (LPL); Delrocq et al. 2026 (CLAPP++)",
    datasets=(C,),
    rows=(
        Row("Random init", "random"),
        Row("FF", "ff"),
        Row("FF, its encoder at init (epochs 0)", "ff", AT_INIT),
        Row("PhyLL", "phyll"),
        Row("PhyLL, its encoder at init (epochs 0)", "phyll", AT_INIT),
        Row("SCFF", "scff", published={C: 80.60}),
        Row("SCFF, its encoder at init (epochs 0)", "scff", AT_INIT),
        Row("LPL", "lpl", published={C: 59.4}),
        Row("VICReg (layer-local)", "vicreg"),
        Row("CLAPP++ (core, for reference)", "clapp++", published={C: 80.51}, published_std={C: 0.27}),
    ),
    scales={
        "smoke": smoke_scale(),
        "cpu": Scale(
            "cpu",
            "VGG-6 at width 1/8, the same 4000 CIFAR-10 train images (drawn with the seed) × 2 epochs, batch 64 for "
            "every preset (each keeps its own optimizer and learning rate); linear probe on all six layers pooled "
            "with the CLAPP++ kernels, 5000 labelled train images, 30 epochs, 1000 held out for validation, the full "
            "test set. FF, PhyLL and SCFF normalise activity between layers, so their untrained encoders (epochs 0) "
            "differ from the plain random one. Speed and memory of the same presets: `localssl bench --suite zoo`.",
            overrides=(
                "data.train_subset=4000",
                "model.width=0.125",
                "train.epochs=2",
                "train.batch_size=64",
                "probe.train_subset=5000",
                "probe.epochs=30",
                "probe.val_size=1000",
            ),
        ),
    },
    floor="random",
)


@experiment("zoo-cifar10", "FF, PhyLL, SCFF, LPL, VICReg (and CLAPP++) vs random init on CIFAR-10 (CPU)", SCALES)
def run_zoo(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(ZOO, out, scale, seeds, only=only)


# ------------------------------------------------------------------------------------ layer-probe
LAYERS = ("1", "2", "3", "4", "5", "6", "all")


def layer_rows(preset: str) -> tuple[Row, ...]:
    """Each layer alone and all together, of ``preset``'s encoder at init and pretrained (the scale's epochs)."""
    rows = []
    for when, extra in (("random init", AT_INIT), ("pretrained", ())):
        for layers in LAYERS:
            name = "all layers" if layers == "all" else f"layer {layers}"
            rows.append(Row(f"{preset}, {when}, {name}", preset, (*extra, f"probe.layers={layers}")))
    return tuple(rows)


LAYER_PROBE = Table(
    name="layer-probe",
    title="Layer by layer: what a short pretraining does to each layer's linear probe (CIFAR-10)",
    source="Delrocq et al. 2026 (CLAPP++) and Halvagal and Zenke 2023 (LPL) publish all-layer probes only",
    datasets=(C,),
    rows=(*layer_rows("clapp++"), *layer_rows("lpl")),
    scales={
        "smoke": smoke_scale(),
        "cpu": Scale(
            "cpu",
            "VGG-6 at width 1/8, 4000 CIFAR-10 train images (drawn with the seed), batch 32 for both presets (each "
            "keeps its optimizer and learning rate), at initialisation (epochs 0: same seed, same architecture) and "
            "after 5 epochs (625 steps); linear probe of each layer alone (pooled with the CLAPP++ kernels) and of "
            "all six concatenated: 5000 labelled train images, 1000 held out for validation, the full test set.",
            overrides=(
                "data.train_subset=4000",
                "model.width=0.125",
                "train.batch_size=32",
                "train.epochs=5",
                "probe.train_subset=5000",
                "probe.val_size=1000",
            ),
        ),
    },
)


@experiment(
    "layer-probe",
    "each layer of clapp++ and lpl probed alone, at init and after 5 epochs (CIFAR-10)",
    SCALES,
)
def run_layer_probe(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    run_table(LAYER_PROBE, out, scale, seeds, only=only)
