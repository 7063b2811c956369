"""Reproduction harness: a paper table as a grid of (row × dataset × seed) runs, each run or reused.

A :class:`Table` lists :class:`Row` s (method label, preset, overrides, published numbers per dataset)
and the dataset columns it reports. :func:`run_table` trains every cell at one :class:`Scale`
(``smoke``: about a minute, for tests; ``cpu``: a stated reduced protocol for 2 CPU cores; ``paper``:
the presets as published: full width, the paper's epochs and batch size), linear-probes it
(:func:`localssl.evaluate.probe.probe`) and writes ``results.csv`` (long form, one probe accuracy per
row), ``results.md`` (ours as mean ± std over seeds beside the published numbers) and
``results.png`` (see :mod:`localssl.experiments.report`).

**Run or reuse.** A run lives in ``RUNS/<preset>-<key>/``; ``key`` hashes the resolved config's
non-default settings (:func:`key_dict`) without those that cannot change what is learned (``name``,
``out_dir``, ``data.root``, ``train.device``, ``train.progress``, ``train.log_every``) and without the
``probe`` section, together with :data:`KEY_VERSION`. A finished run is reused; a run with a checkpoint
but fewer epochs is continued with :func:`localssl.train.resume` (bit-identical to an uninterrupted
run); a run that died before its first checkpoint is restarted. A probe is reused when ``probe.json``
holds the same probe settings for the same checkpoint epoch. So an interrupted grid continues where it
stopped, and a row added later (a new preset) trains only that row. ``RUNS`` is ``$LOCALSSL_RUNS`` if
set, else ``OUT/runs``.

A row whose preset does not exist in this version of the library is skipped with a visible note; a
dataset that is not on disk is reported as not run with the command that gets it. No number is ever
filled in for a cell that did not run.

**Re-running some rows.** ``only=[preset, ...]`` (``localssl reproduce NAME --only PRESET``) runs only
those rows and keeps every other row's per-seed values from the ``results.csv`` already in ``OUT``
(:func:`kept_cells`), e.g. after a fix to one preset when the other rows' run folders are gone;
``results.md`` states which rows were re-run and that the others were kept.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from localssl.config import RunConfig, available_presets, default_data_root, load_config, read_run_config
from localssl.data import DatasetError, dataset_info, load_split
from localssl.registry import ConfigError

# Bump when a code change makes earlier runs invalid: every run is then retrained. 2 (2026-12-01): the
# clapp++both default became two hinge losses (objective.combine=sum_losses), STL-10 pretrains on the
# unlabeled split with the official normalisation, and the probe classifier's init is seeded by probe.seed.
KEY_VERSION = 2

# Settings that do not change what a run learns: left out of its key (and free to differ on reuse).
KEY_EXCLUDED = {
    "name": None,
    "out_dir": None,
    "probe": None,
    "data": ("root",),
    "train": ("device", "progress", "log_every", "checkpoint_every", "checkpoint_every_minutes"),
}

DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "stl10": "STL-10",
    "tinyimagenet": "Tiny ImageNet",
    "mnist": "MNIST",
    "cifar10-mini": "CIFAR-10 subset shipped with localssl (cifar10-mini, 4000 train / 1000 test)",
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


# --------------------------------------------------------------------------------------- run keys
def _non_default(section: Any) -> dict[str, Any]:
    """A config section's fields that differ from the section's defaults (``name`` always kept)."""
    values = dataclasses.asdict(section)
    try:
        defaults = dataclasses.asdict(type(section)())
    except TypeError:  # a section without defaults for every field: keep it whole
        return values
    return {k: v for k, v in values.items() if k == "name" or k not in defaults or v != defaults[k]}


def key_dict(cfg: RunConfig) -> dict[str, Any]:
    """What a run learns from: every config section's non-default settings, after the dataset's ``auto``
    values are resolved, without the settings in :data:`KEY_EXCLUDED`. Keeping only non-default values
    means that a new option added to the library (with a default that keeps the old behaviour) leaves
    existing runs valid; a change of behaviour (code or default) needs a :data:`KEY_VERSION` bump."""
    from localssl.train import resolve_config

    cfg = resolve_config(cfg)
    raw: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        excluded = KEY_EXCLUDED.get(f.name, ())
        if excluded is None:
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            raw[f.name] = {k: v for k, v in _non_default(value).items() if k not in excluded}
        else:
            raw[f.name] = value
    return raw


def run_key(cfg: RunConfig) -> str:
    """12 hex digits identifying what a run learns: same config (and :data:`KEY_VERSION`) -> same key."""
    blob = json.dumps({"key_version": KEY_VERSION, "config": key_dict(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def runs_root(out: Path) -> Path:
    env = os.environ.get("LOCALSSL_RUNS")
    return Path(env).expanduser() if env else Path(out) / "runs"


def find_run_dir(cfg: RunConfig, runs_dir: Path) -> Path:
    """The directory of ``cfg``'s run: an existing ``*-<key>`` one (any preset name), else a new name."""
    key = run_key(cfg)
    existing = sorted(Path(runs_dir).glob(f"*-{key}"))
    if existing:
        return existing[0]
    slug = "".join(c if c.isalnum() or c in "+-_." else "_" for c in cfg.name)
    return Path(runs_dir) / f"{slug}-{key}"


# --------------------------------------------------------------------------------------- run or reuse
def _finished_epochs(run_dir: Path) -> int | None:
    summary = run_dir / "summary.json"
    if not (summary.exists() and (run_dir / "checkpoint.pt").exists()):
        return None
    return int(json.loads(summary.read_text()).get("epochs", -1))


def _finished_steps(run_dir: Path) -> int:
    return int(json.loads((run_dir / "summary.json").read_text()).get("global_step", 0))


def run_or_reuse(cfg: RunConfig, runs_dir: Path) -> tuple[Path, str]:
    """Train ``cfg`` unless its run exists: returns ``(run_dir, 'trained' | 'resumed' | 'reused')``."""
    from localssl.train import pretrain, resume

    run_dir = find_run_dir(cfg, runs_dir)
    if (run_dir / "config.yaml").exists():
        try:
            stored = run_key(read_run_config(run_dir))
        except ConfigError as err:
            raise ConfigError(
                f"{run_dir}/config.yaml cannot be read by this version of localssl ({err}); delete the directory "
                "to retrain that run"
            ) from err
        if stored != run_key(cfg):
            raise RuntimeError(
                f"{run_dir}/config.yaml does not match its key (stored config hashes to {stored}); "
                "the directory was edited or copied by hand: delete it to retrain"
            )
    if _finished_epochs(run_dir) == cfg.train.epochs:
        return run_dir, "reused"
    cpu0 = time.process_time()
    if (run_dir / "checkpoint.pt").exists():  # interrupted: continue exactly where it stopped
        resume(run_dir, [f"data.root={cfg.data.root}"] if cfg.data.root else [])
        _record(run_dir, pretrain_cpu_s=time.process_time() - cpu0)
        return run_dir, "resumed"
    for stale in ("metrics.csv", "steps.csv", "summary.json", "probe.json"):  # died before its first epoch
        (run_dir / stale).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_provenance(cfg, run_dir)
    pretrain(cfg, run_dir)
    _record(run_dir, pretrain_cpu_s=time.process_time() - cpu0)
    return run_dir, "trained"


def _write_provenance(cfg: RunConfig, run_dir: Path) -> None:
    """``harness.json``: the run's key, the code that created it, and (later) its CPU seconds."""
    from localssl.experiments.report import code_version
    from localssl.utils import atomic_write_json

    atomic_write_json(
        {"key": run_key(cfg), "key_version": KEY_VERSION, "code": code_version(), "created": time.strftime("%F %T")},
        run_dir / "harness.json",
    )


def _provenance(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "harness.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record(run_dir: Path, **seconds: float) -> None:
    """Add process CPU seconds (all threads) to ``harness.json`` (summed over resumes)."""
    from localssl.utils import atomic_write_json

    info = _provenance(run_dir)
    for k, v in seconds.items():
        info[k] = round(info.get(k, 0.0) + v, 1)
    atomic_write_json(info, run_dir / "harness.json")


def _probe_signature(settings: dict[str, Any]) -> dict[str, Any]:
    """Probe settings that differ from the defaults (as for run keys: a new probe option keeps old probes)."""
    from localssl.config import ProbeConfig

    defaults = dataclasses.asdict(ProbeConfig())
    defaults.pop("progress")  # progress bars change no result
    return {k: settings.get(k, v) for k, v in defaults.items() if settings.get(k, v) != v}


def probe_overrides(cfg: RunConfig) -> list[str]:
    """Every ``probe.*`` setting of ``cfg`` as an override (the run's stored probe section is not trusted)."""
    return [f"probe.{k}={json.dumps(v)}" for k, v in dataclasses.asdict(cfg.probe).items()]


def probe_or_reuse(cfg: RunConfig, run_dir: Path, epochs: int, keep_features: bool = False) -> tuple[dict, str]:
    """``probe.json`` of ``run_dir`` if it was written with ``cfg.probe`` at checkpoint ``epochs``, else probe."""
    from localssl.evaluate.probe import probe

    path = run_dir / "probe.json"
    if path.exists():
        old = json.loads(path.read_text())
        old = old.get(cfg.probe.protocol) or old  # probe.json keeps each protocol's result under its name
        same = _probe_signature(old.get("probe") or {}) == _probe_signature(dataclasses.asdict(cfg.probe))
        if same and old.get("checkpoint_epoch") == epochs:
            return old, "reused"
    extra = [f"data.root={cfg.data.root}"] if cfg.data.root else []
    # the feature cache (all train and test images, ~1 GB at width 1/8 on CIFAR-10) is not needed:
    # probe.json is what is reused
    cpu0 = time.process_time()
    result = probe(run_dir, [*probe_overrides(cfg), *extra], cache_features=keep_features)
    _record(run_dir, probe_cpu_s=time.process_time() - cpu0)
    return result, "probed"


# --------------------------------------------------------------------------------------- datasets
def data_missing(name: str, root: str | None) -> str | None:
    """``None`` if dataset ``name`` can be read under ``root``, else why not and the command to get it."""
    info = dataset_info(name)
    try:
        load_split(name, info.test_split, root)
    except DatasetError:
        # the reader's message names absolute paths of this machine; the committed report must not
        return f"dataset not on disk; get it with `localssl data download {name}`, then rerun"
    return None


def data_label(name: str, root: str | None) -> str:
    """Column label; CIFAR-10 read from the JPEG re-encoding is labelled 'CIFAR-10 (JPEG copy)'."""
    label = DATASET_LABELS.get(name, name)
    if name == "cifar10":
        r = Path(root).expanduser() if root else default_data_root()
        if not (r / "cifar-10-batches-py").is_dir():
            label += " (JPEG copy)"
    return label


# --------------------------------------------------------------------------------------- the grid
def row_config(row: Row, scale: Scale, dataset: str, seed: int, root: str | None) -> RunConfig:
    data_name = scale.substitute.get(dataset, dataset)
    overrides = [
        *scale.overrides,
        *scale.per_dataset.get(dataset, ()),
        f"data.name={data_name}",
        *row.overrides,
        f"train.seed={seed}",
        f"probe.seed={seed}",
    ]
    if root:
        overrides.append(f"data.root={root}")
    return load_config(row.preset, overrides)


def run_table(
    table: Table,
    out: Path,
    scale: str,
    seeds: int,
    runs_dir: Path | None = None,
    root: str | None = None,
    keep_features: bool = False,
    only: Sequence[str] | None = None,
    jobs: int | None = None,
) -> GridResult:
    """Run (or reuse) every cell of ``table`` at ``scale`` for seeds ``0..seeds-1``; write the reports.

    Seeds are the outer loop, so a grid stopped part-way already holds whole tables for the first
    seeds. The tables are rewritten after every cell, the figure after every seed. Several processes
    may run the same grid at once (they share the run store; see :class:`RunLock`). ``only``: run just
    these presets' rows, keeping the others from ``OUT/results.csv`` (:func:`kept_cells`).

    ``jobs`` (default ``$LOCALSSL_WORKERS``, else 1): cells trained and probed at once, in that many
    processes (:func:`run_cells_in_parallel`); the reports are then written from the finished runs in
    the sequential order, so they hold the same numbers as a sequential grid."""
    from localssl.experiments import worker_count
    from localssl.experiments.report import write_reports

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    sc = table.scale(scale)
    if only is not None:
        only = tuple(dict.fromkeys(only))
        unknown = [p for p in only if p not in {r.preset for r in table.rows}]
        if unknown:
            raise ConfigError(
                f"--only {', '.join(unknown)}: not a preset of table {table.name}; its presets: "
                + ", ".join(r.preset for r in table.rows)
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(runs_dir) if runs_dir is not None else runs_root(out)
    t0 = time.perf_counter()

    presets = set(available_presets())
    row_notes: dict[str, str] = {}
    rows = []
    for row in table.rows:
        if row.preset not in presets:
            row_notes[row.label] = f"not run: preset `{row.preset}` does not exist in this version of localssl"
        else:
            rows.append(row)

    columns: dict[str, str] = {}
    not_run: dict[str, str] = {}
    for ds in table.datasets:
        if sc.datasets is not None and ds not in sc.datasets:
            not_run[ds] = f"not run at scale `{sc.name}`"
            continue
        data_name = sc.substitute.get(ds, ds)
        missing = data_missing(data_name, root)
        if missing:
            not_run[ds] = f"not run ({missing})"
        else:
            columns[ds] = data_label(data_name, root)

    result = GridResult(table, sc, seeds, [], columns, not_run, row_notes, runs_dir, 0.0, only or ())
    order = {(r.label, ds): i for i, (ds, r) in enumerate((ds, r) for ds in columns for r in rows)}
    if only is not None:  # read before any cell runs: a results.csv that cannot be kept stops here
        result.cells.extend(kept_cells(result, out / "results.csv", order))
        rows = [r for r in rows if r.preset in only]
    todo = [
        (row, ds, seed)
        for seed in range(seeds)
        for ds in columns
        for row in rows
        if row.datasets is None or ds in row.datasets
    ]
    jobs = worker_count(1) if jobs is None else jobs
    statuses: dict[Path, tuple[str, str]] = {}
    if jobs > 1:
        cfgs = [row_config(row, sc, ds, seed, root) for row, ds, seed in todo]
        statuses = run_cells_in_parallel(cfgs, runs_dir, jobs, keep_features)

    def cell(row: Row, ds: str, seed: int, wait: bool) -> bool:
        """Run or reuse one cell under its lock; ``False`` if another process holds it and ``wait`` is off."""
        cfg = row_config(row, sc, ds, seed, root)
        with RunLock(runs_dir, run_key(cfg), wait=wait) as held:
            if not held:
                print(
                    f"[{table.name}/{sc.name}] {row.label} · {ds} · seed {seed}: {held.holder} runs it, later",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            print(f"[{table.name}/{sc.name}] {row.label} · {ds} · seed {seed}", file=sys.stderr, flush=True)
            run_dir, trained = run_or_reuse(cfg, runs_dir)
            epochs = _finished_epochs(run_dir)
            res, probed = probe_or_reuse(cfg, run_dir, epochs, keep_features)
            trained, probed = statuses.get(run_dir, (trained, probed))  # what a parallel worker did
        result.cells.append(
            Cell(
                row,
                ds,
                cfg.data.name,
                seed,
                100.0 * float(res["test_acc"]),
                100.0 * float(res["val_acc"]),
                epochs,
                _finished_steps(run_dir),
                run_dir,
                trained,
                probed,
                _provenance(run_dir),
            )
        )
        result.cells.sort(key=lambda c: (c.seed, order[(c.row.label, c.dataset)]))
        result.seconds = time.perf_counter() - t0
        write_reports(result, out, figure=False)
        return True

    deferred = []
    for i, (row, ds, seed) in enumerate(todo):
        if not cell(row, ds, seed, wait=False):
            deferred.append((row, ds, seed))
        if i + 1 == len(todo) or todo[i + 1][2] != seed:  # the figure after every seed
            write_reports(result, out)
    for row, ds, seed in deferred:  # cells another process was running: wait for it, then reuse
        cell(row, ds, seed, wait=True)
    result.seconds = time.perf_counter() - t0
    write_reports(result, out)
    return result


def kept_cells(result: GridResult, path: Path, order: Mapping[tuple[str, str], int]) -> list[Cell]:
    """The per-seed values of every row not in ``result.only`` from ``path`` (the grid's earlier
    ``results.csv``), as cells marked ``kept``. Their provenance is the run folder's ``harness.json`` when the
    folder is still in the run store, else it says the run is not on disk. A file from another table or
    scale, or with a row or dataset column this grid does not run, is refused (naming the fix)."""
    table, sc = result.table, result.scale
    rerun = f"run the whole table without --only: `localssl reproduce {table.name} --scale {sc.name}`"
    if not path.exists():
        raise ConfigError(f"--only keeps the other rows from {path}, which does not exist; {rerun}")
    by_preset = {r.preset: r for r in table.rows}
    cells = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if (rec.get("table"), rec.get("scale")) != (table.name, sc.name):
                raise ConfigError(
                    f"{path} holds table {rec.get('table')} at scale {rec.get('scale')}, not {table.name} at "
                    f"{sc.name}; give the matching --out or {rerun}"
                )
            if rec["preset"] in result.only or int(rec["seed"]) >= result.seeds:
                continue
            row = by_preset.get(rec["preset"])
            if row is None or (row.label, rec["dataset"]) not in order:
                raise ConfigError(
                    f"{path} has {rec['preset']} on {rec['dataset']}, which this run of table {table.name} does not "
                    f"include (preset missing or dataset not on disk); {rerun}"
                )
            run_dir = Path(result.runs_dir) / rec["run"]
            provenance = _provenance(run_dir) or {"code": "run folder not on disk (value kept from results.csv)"}
            cells.append(
                Cell(
                    row,
                    rec["dataset"],
                    rec["data"],
                    int(rec["seed"]),
                    float(rec["test_acc"]),
                    float(rec["val_acc"]),
                    int(rec["epochs"]),
                    int(rec["steps"]),
                    run_dir,
                    "kept",
                    "kept",
                    provenance,
                )
            )
    cells.sort(key=lambda c: (c.seed, order[(c.row.label, c.dataset)]))
    return cells


def _cell_job(cfg: RunConfig, runs_dir: Path, keep_features: bool, threads: int) -> tuple[str, str, str]:
    """One cell in a worker process: train (or reuse) and probe it under its lock."""
    import torch

    torch.set_num_threads(threads)
    with RunLock(runs_dir, run_key(cfg), wait=True):
        run_dir, trained = run_or_reuse(cfg, runs_dir)
        _, probed = probe_or_reuse(cfg, run_dir, _finished_epochs(run_dir), keep_features)
    return str(run_dir), trained, probed


def run_cells_in_parallel(
    cfgs: list[RunConfig], runs_dir: Path, jobs: int, keep_features: bool = False
) -> dict[Path, tuple[str, str]]:
    """Train and probe the cells ``cfgs`` in ``jobs`` processes at once (``spawn``: a fresh interpreter
    each; on CUDA they share the device), the cells handed out in the given order. On CPU each process
    gets ``cpu_count // jobs`` torch threads, so ``jobs`` = the core count runs one single-threaded run per
    core. Every run is seeded by its config alone, so which process runs it does not change what it
    learns. Returns ``run_dir -> (trained, probed)`` as each worker reported it."""
    import concurrent.futures as cf
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"running {len(cfgs)} cell(s) in {jobs} processes, {threads} torch thread(s) each", file=sys.stderr)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_cell_job, cfg, runs_dir, keep_features, threads) for cfg in cfgs]
        done = [f.result() for f in futures]
    return {Path(d): (trained, probed) for d, trained, probed in done}


class RunLock:
    """``RUNS/.<key>.lock``: one process at a time trains or probes a run, so several processes can work
    through the same grid (``localssl reproduce ...`` started twice uses two cores). A lock whose
    process died on this machine is taken over; ``wait=True`` polls until the holder releases it."""

    poll_s = 10.0

    def __init__(self, runs_dir: Path, key: str, wait: bool) -> None:
        self.path = Path(runs_dir) / f".{key}.lock"
        self.wait, self.held, self.holder = wait, False, ""

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                self.holder = self.path.read_text().strip()
            except FileNotFoundError:  # released meanwhile
                return self._try()
            host, _, pid = self.holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                self.path.unlink(missing_ok=True)  # stale: its process died
                return self._try()
            self.holder = f"process {pid} on {host}"
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        return True

    def __enter__(self) -> RunLock:
        self.held = self._try()
        while not self.held and self.wait:
            time.sleep(self.poll_s)
            self.held = self._try()
        return self

    def __bool__(self) -> bool:
        return self.held

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
