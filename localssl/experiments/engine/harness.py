"""Reproduction harness: a paper table as a grid of (row × dataset × seed) runs, each run or reused.

A :class:`~localssl.experiments.engine.grid.Table` lists rows (method label, preset, overrides, published
numbers per dataset) and the dataset columns it reports. :func:`run_table` trains every cell at one
:class:`~localssl.experiments.engine.grid.Scale` (``smoke``: about a minute, for tests; ``cpu``: a stated
reduced protocol for 2 CPU cores; ``paper``: the presets as published: full width, the paper's epochs
and batch size), linear-probes it (:func:`localssl.evaluate.probe.probe`) and writes ``results.csv``
(long form, one probe accuracy per row), ``results.md`` (ours as mean ± std over seeds beside the
published numbers) and ``results.png`` (see :mod:`localssl.experiments.engine.report`).

Each cell is run or reused (:mod:`localssl.experiments.engine.runs`: a run is keyed by what it learns), so an
interrupted grid continues where it stopped, and a row added later (a new preset) trains only that row. To the
engine (:mod:`localssl.experiments.engine`) a table's cell is a train + probe run (:func:`table_cells`): it runs
them in parallel processes (``--jobs``), submits them to SLURM (``--launcher slurm``) or lists them (``--status``).

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
import functools
import hashlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from localssl.config import RunConfig, available_presets, default_data_root, load_config
from localssl.data import DatasetError, dataset_info, load_split
from localssl.experiments import engine, worker_count
from localssl.experiments.engine.grid import DATASET_LABELS, Cell, GridResult, Row, Scale, Table
from localssl.experiments.engine.local import default_threads
from localssl.experiments.engine.report import write_reports
from localssl.experiments.engine.run import run_cells, show_status, submit_table
from localssl.experiments.engine.runs import (
    RunLock,
    find_run_dir,
    finished_epochs,
    finished_steps,
    probe_done,
    probe_or_reuse,
    probe_overrides,
    read_provenance,
    run_key,
    run_or_reuse,
    runs_root,
)
from localssl.registry import ConfigError


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
        *scale.per_preset.get(row.preset, ()),
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
            label = data_label(data_name, root)
            columns[ds] = f"{label}: {table.column_labels[ds]}" if ds in table.column_labels else label

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
    launcher = engine.current()
    if launcher.kind == "slurm" or launcher.status:
        todo = _through_launcher(table, sc, seeds, todo, root, runs_dir, out, launcher, keep_features, result)
        if todo is None:
            return result
        jobs = 1  # every cell is finished: reused here, not submitted again
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
            epochs = finished_epochs(run_dir)
            res, probed = probe_or_reuse(cfg, run_dir, epochs, keep_features)
            trained, probed = statuses.get(run_dir, (trained, probed))  # what a parallel worker did
        result.cells.append(
            Cell(
                row,
                ds,
                cfg.data.name,
                seed,
                float(res["test_acc_pct"]),
                float(res["val_acc_pct"]),
                epochs,
                finished_steps(run_dir),
                run_dir,
                trained,
                probed,
                read_provenance(run_dir),
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


def _through_launcher(
    table: Table,
    sc: Scale,
    seeds: int,
    todo: list[tuple[Row, str, int]],
    root: str | None,
    runs_dir: Path,
    out: Path,
    launcher: engine.Launcher,
    keep_features: bool,
    result: GridResult,
) -> list[tuple[Row, str, int]] | None:
    """``--status`` or ``--launcher slurm``: print every cell's state (after submitting the cells that need
    it). Returns the cells to report from (each finished: :func:`run_table` reuses them) once no cell is
    queued, running or unsubmitted, the failed ones noted in ``result``; else ``None`` (nothing to report yet)."""
    labelled = [(f"{row.label} · {ds} · seed {seed}", row_config(row, sc, ds, seed, root)) for row, ds, seed in todo]
    cells = table_cells(labelled, runs_dir, keep_features)
    folder = out / "slurm"  # a table's records sit beside its report
    statuses = None if launcher.status else submit_table(table.name, cells, folder)
    show_status(f"{table.name} at scale {sc.name}", cells, statuses, folder)
    if launcher.status:
        return None
    assert statuses is not None
    if any(s.state not in ("finished", "failed") for s in statuses):
        print(
            f"watch: `localssl reproduce {table.name} --scale {sc.name} --seeds {seeds} --out {out} --status`; this "
            "command again, once the jobs have ended, writes the report",
            file=sys.stderr,
        )
        return None
    for (row, ds, seed), status in zip(todo, statuses):
        if status.state == "failed":
            result.failed[(row.label, ds, seed)] = status.detail
            print(f"failed: {status.label}: {status.detail} (--retry-failed submits it again)", file=sys.stderr)
    return [cell for cell, status in zip(todo, statuses) if status.state == "finished"]


def kept_cells(result: GridResult, path: Path, order: Mapping[tuple[str, str], int]) -> list[Cell]:
    """The per-seed values of every row not in ``result.only`` from ``path`` (the grid's earlier
    ``results.csv``), as cells marked ``kept``. Their provenance is the run folder's ``harness.json`` when the
    folder is still in the run store, else it says the run is not on disk. A file from another table or
    scale, or with a row or dataset column this grid does not run, is refused (naming the fix)."""
    table, sc = result.table, result.scale
    rerun = f"run the whole table without --only: `localssl reproduce {table.name} --scale {sc.name}`"
    if not path.exists():
        raise ConfigError(f"--only keeps the other rows from {path}, which does not exist; {rerun}")
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
            # rows that share a preset (e.g. two probe layers of one run) are told apart by their label
            row = next((r for r in table.rows if r.label == rec.get("method") and r.preset == rec["preset"]), None)
            if row is None or (row.label, rec["dataset"]) not in order:
                raise ConfigError(
                    f"{path} has {rec['preset']} on {rec['dataset']}, which this run of table {table.name} does not "
                    f"include (preset missing or dataset not on disk); {rerun}"
                )
            run_dir = Path(result.runs_dir) / rec["run"]
            provenance = read_provenance(run_dir) or {"code": "run folder not on disk (value kept from results.csv)"}
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


def table_cells(labelled: Sequence[tuple[str, RunConfig]], runs_dir: Path, keep_features: bool) -> list[engine.Cell]:
    """A table's cells to the engine: each ``(label, cfg)`` trained (or reused) and probed in ``runs_dir``,
    finished once its run has all its epochs and its probe is done. A cell's key is its run's key; rows that
    share a run (several probes of one encoder) add their probe settings' hash to it."""
    job = functools.partial(_cell_job, runs_dir=runs_dir, keep_features=keep_features)
    cells, seen = [], set()
    for label, cfg in labelled:
        key = run_key(cfg)
        if key in seen:
            key += "-" + hashlib.sha1(" ".join(probe_overrides(cfg)).encode()).hexdigest()[:8]
        seen.add(key)

        def finished(cfg: RunConfig = cfg) -> bool:
            now = find_run_dir(cfg, runs_dir)
            epochs = finished_epochs(now)
            return epochs == cfg.train.epochs and probe_done(cfg, now, epochs)

        cells.append(engine.Cell(key, label, job, cfg, finished, find_run_dir(cfg, runs_dir)))
    return cells


def _cell_job(cfg: RunConfig, runs_dir: Path, keep_features: bool) -> tuple[str, str, str]:
    """One cell in a worker process or a SLURM job: train (or reuse) and probe it under its lock."""
    with RunLock(runs_dir, run_key(cfg), wait=True):
        run_dir, trained = run_or_reuse(cfg, runs_dir)
        _, probed = probe_or_reuse(cfg, run_dir, finished_epochs(run_dir), keep_features)
    return str(run_dir), trained, probed


def run_cells_in_parallel(
    cfgs: list[RunConfig], runs_dir: Path, jobs: int, keep_features: bool = False
) -> dict[Path, tuple[str, str]]:
    """Train and probe the cells ``cfgs`` in ``jobs`` processes at once (the engine's local backend:
    ``spawn``, on CUDA they share the device), the cells handed out in the given order. On CPU each process
    gets ``cpu_count // jobs`` torch threads, so ``jobs`` = the core count runs one single-threaded run per
    core. Every run is seeded by its config alone, so which process runs it does not change what it
    learns. Returns ``run_dir -> (trained, probed)`` as each worker reported it."""
    threads = default_threads(jobs)
    print(f"running {len(cfgs)} cell(s) in {jobs} processes, {threads} torch thread(s) each", file=sys.stderr)
    labelled = [(f"{cfg.name} (seed {cfg.train.seed}, {cfg.data.name})", cfg) for cfg in cfgs]
    done = run_cells("cells", table_cells(labelled, runs_dir, keep_features), jobs, threads=threads)
    return {Path(d): (trained, probed) for d, trained, probed in done}
