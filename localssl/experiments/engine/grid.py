"""A paper table as data: :class:`Table` (rows × dataset columns at a :class:`Scale`), the finished
:class:`Cell` s of a grid and their :class:`GridResult`, and the statistics its reports print.

The lowest module of the reproduction harness: :mod:`~localssl.experiments.engine.report` writes a
:class:`GridResult`, :mod:`~localssl.experiments.engine.harness` fills one; the experiments that declare
tables (``table2.py``, ``clapp2021.py``, ``studies.py``) import from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "stl10": "STL-10",
    "tinyimagenet": "Tiny ImageNet",
    "mnist": "MNIST",
    "cifar10-mini": "CIFAR-10 subset shipped with localssl (cifar10-mini, 4000 train / 1000 test)",
    "synthetic-speech": "synthetic speech (8 classes, generated in code)",
    "espeak-demo": "eSpeak NG corpus espeak-demo",
    "espeak-cpu": "eSpeak NG corpus espeak-cpu",
    "espeak-gpu": "eSpeak NG corpus espeak-gpu",
}


# --------------------------------------------------------------------------------------- definitions
@dataclasses.dataclass(frozen=True)
class Row:
    """One method of a table: the preset that implements it and the paper's numbers (in %)."""

    label: str
    preset: str
    overrides: tuple[str, ...] = ()
    published: Mapping[str, float] = dataclasses.field(default_factory=dict)  # dataset -> %, absent = "–"
    published_std: Mapping[str, float] = dataclasses.field(default_factory=dict)
    datasets: tuple[str, ...] | None = None  # run only on these columns (None: all)
    note: str = ""  # shown under the table (e.g. how our preset differs from the paper's setup)
    floor: str | None = None  # preset of the row this one is compared against (default: the table's floor)


@dataclasses.dataclass(frozen=True)
class Scale:
    """A protocol for the whole table: overrides applied to every run (before the row's own)."""

    name: str
    protocol: str  # stated in results.md
    overrides: tuple[str, ...] = ()
    per_dataset: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # preset -> overrides of that preset's rows at this scale only, after the row's own (e.g. a learning rate
    # the scale chose for one method on validation data)
    per_preset: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    substitute: Mapping[str, str] = dataclasses.field(default_factory=dict)  # column -> data.name used
    datasets: tuple[str, ...] | None = None  # columns run at this scale (None: all)


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # the experiment name (``localssl reproduce NAME``)
    title: str
    source: str  # the paper and table the published numbers come from
    datasets: tuple[str, ...]
    rows: tuple[Row, ...]
    scales: Mapping[str, Scale]
    metric: str = "linear-probe test accuracy (%)"
    floor: str | None = None  # preset of the baseline row (random init) every trained row is compared with
    column_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)  # column -> label (else the data's)

    def floors(self) -> set[str]:
        """Presets that serve as a floor (they are never compared with a floor themselves)."""
        return {p for p in [self.floor, *(r.floor for r in self.rows)] if p is not None}

    def floor_of(self, row: Row) -> Row | None:
        """The row ``row`` is compared against (``None``: no floor, or ``row`` is a floor)."""
        preset = row.floor or self.floor
        if preset is None or row.preset in self.floors():
            return None
        return next(r for r in self.rows if r.preset == preset)

    def __post_init__(self) -> None:
        labels = [r.label for r in self.rows]
        if len(set(labels)) != len(labels):
            raise ValueError(f"table {self.name}: row labels must be unique, got {labels}")
        presets = {r.preset for r in self.rows}
        if not self.floors() <= presets:
            raise ValueError(f"table {self.name}: floor preset(s) {sorted(self.floors() - presets)} have no row")

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise ValueError(f"{self.name} has no scale '{name}'; scales: {', '.join(self.scales)}")
        return self.scales[name]


@dataclasses.dataclass
class Cell:
    """One finished (row, dataset, seed): the probe's accuracies in %."""

    row: Row
    dataset: str
    data: str  # the data.name actually used (a scale may substitute a smaller set)
    seed: int
    test_acc: float
    val_acc: float
    epochs: int
    steps: int  # optimizer steps of the pretraining
    run_dir: Path
    trained: str  # 'trained', 'resumed', 'reused' or 'kept' (from an earlier results.csv, see ``only``)
    probed: str  # 'probed', 'reused' or 'kept'
    provenance: dict[str, Any]  # the run's harness.json: code version that created it, CPU seconds


@dataclasses.dataclass
class GridResult:
    table: Table
    scale: Scale
    seeds: int
    cells: list[Cell]
    columns: dict[str, str]  # dataset -> column label, for the columns that ran
    not_run: dict[str, str]  # dataset -> why the column did not run
    row_notes: dict[str, str]  # row label -> why it did not run (or where it did not)
    runs_dir: Path
    seconds: float
    only: tuple[str, ...] = ()  # presets re-run by ``only``; the other rows are kept from results.csv
    # (row label, dataset, seed) -> why that cell failed (a SLURM job that raised: reported, not retried)
    failed: dict[tuple[str, str, int], str] = dataclasses.field(default_factory=dict)


# The ``smoke`` scale of every table: a pipeline check in about a minute, not a measurement.
SMOKE_OVERRIDES = (
    "model.width=0.0625",
    "data.train_subset=64",
    "train.batch_size=32",
    "train.epochs=1",
    "train.progress=false",
    "probe.epochs=2",
    "probe.train_subset=200",
    "probe.val_size=100",
)
PAPER_PROBE = (
    "linear probe as implemented by `localssl probe`: 30 epochs of Adam 1e-3 on the z-scored pooled features of the "
    "preset's probe layers (all six layers for the SimCLR-view presets), the epoch with the best accuracy on 5000 "
    "held-out train images is tested once on the full test split; not the paper's probe on augmented train images"
)

# Scales for tables of SimCLR-view presets (CLAPP++ Table 2 and tables built like it).
IMAGE_SCALES: dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        "pipeline check only, not a measurement: the CIFAR-10 column uses the 4000/1000-image subset shipped "
        "with localssl; VGG-6 at width 1/16, 64 pretraining images, 1 epoch, batch 32 for every preset; probe: "
        "200 train / 100 validation images, 2 epochs.",
        overrides=SMOKE_OVERRIDES,
        substitute={"cifar10": "cifar10-mini"},
        datasets=("cifar10",),
    ),
    "cpu": Scale(
        "cpu",
        "reduced for 2 CPU cores: VGG-6 at width 1/8 (16-32-32-64-128-128 channels); pretraining on 20 000 train "
        "images (drawn with the seed) for one epoch (STL-10: 2000 unlabeled images, 3 epochs; Tiny ImageNet: "
        "5000 images, 3 epochs), each preset with its own optimizer, learning rate and batch size (32 images; SCFF "
        "100, LPL 1024, as published); "
        "linear probe as implemented by `localssl probe`: 30 epochs of Adam 1e-3 on the z-scored pooled features "
        "of the preset's probe layers (all six for the SimCLR-view presets), trained on 20 000 train images (STL-10: "
        "its 4000 labelled train images), the epoch with the best accuracy on 5000 other train images (STL-10: "
        "1000) is tested once on the full test split. On CIFAR-10 that is 625 optimizer steps (SCFF 200, LPL "
        "19), 0.13% of the paper's 469 000, each with about 1/64 of the multiply-adds: it checks the whole "
        "pipeline and compares the rules early in training; it does not reproduce the published accuracies.",
        overrides=("model.width=0.125", "data.train_subset=20000", "train.epochs=1", "probe.train_subset=20000"),
        per_dataset={
            "stl10": ("data.train_subset=2000", "train.epochs=3"),
            "tinyimagenet": ("data.train_subset=5000", "train.epochs=3"),
        },
    ),
    "paper": Scale(
        "paper",
        "the presets as published: VGG-6 at full width, the preset's epochs (300 for the CLAPP++ family), batch "
        "32 images, full datasets; " + PAPER_PROBE + ".",
    ),
}


# --------------------------------------------------------------------------------------- statistics
def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1 in the denominator; ``None`` for one value)."""
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_mean_std(values: Sequence[float], digits: int = 2, n_expected: int | None = None) -> str:
    """``'80.51 ± 0.27'`` (sample std over seeds), ``'80.51'`` for one value, ``'–'`` for none;
    ``' (n=2)'`` is appended when fewer values than ``n_expected`` exist (an unfinished grid)."""
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
    if n_expected is not None and len(values) != n_expected:
        text += f" (n={len(values)})"
    return text
