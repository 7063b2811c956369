"""``localssl reproduce speedrun``: time to accuracy on CIFAR-10, one table across rule families.

**Budgets are steps.** A budget of *B* minutes is *B* × ``steps_per_minute(rule, width)`` optimizer steps:
the steps one core made in a minute on the reference machine, on the fast path (``train.precision=auto``),
measured by ``localssl bench --suite speedrun-steps`` (one torch thread per process, two processes at once
on the 2-core machine) and written into :data:`STEPS_PER_MINUTE`. So the table reproduces on any machine;
the wall and CPU time each cell actually took are reported beside it.

**One run per seed, probed at nested budgets.** A run trains in "minutes": epochs of
``train.max_steps_per_epoch`` = steps per minute (each a fresh shuffled draw of the train set, seeded by
``(seed, epoch)``), to ``train.epochs`` = 1, 3, 10 in turn (:func:`localssl.train.resume` continues it
exactly) in ``OUT/runs/<rule>-w<width>-lr<f>x-s<seed>/train/``. After each budget its checkpoint is copied to the
sibling folder ``at-<B>min/`` and that copy is probed with the
honest probe (:func:`localssl.evaluate.probe.probe`: 30 epochs of Adam on the z-scored pooled features of
every layer, the epoch chosen on 5000 held-out train images, the test split scored once).

**One width and learning rate per rule, chosen once.** Every candidate of :attr:`SpeedrunScale.widths` ×
:attr:`SpeedrunScale.lr_factors` (× the preset's own learning rate) trains seed 0 to the selection budget
(3 minutes); the candidate whose probe has the best *validation* accuracy (held-out train images; the test
split plays no part) is the rule's setting. Its seed-0 run continues to the last budget; seeds 1, ... train
with it from scratch. Random init (the ``random`` preset: the encoder at initialisation) is probed at every
width a rule chose, once per seed, and each rule is compared with random init of its own network.

**A recipe whose schedule depends on the run's length** (:attr:`SpeedrunScale.choice_budget`, the record's
cosine decay): the candidates cannot be the first minutes of the final run, so each is its own run of
``choice_budget`` minutes (``OUT/runs/<slug>-h<N>-s0/``, its schedule over those minutes), compared on validation
accuracy at its end; the chosen recipe's final runs then train from scratch. Candidates may also differ in their
linear warm-up (:attr:`SpeedrunScale.warmups`, in minutes).

**The record** (``--scale record --seeds 1``): one CLAPP++ run of 60 minutes of the whole machine (both cores,
two torch threads, steps from :data:`RECORD_STEPS_PER_MINUTE`) with a cosine learning-rate decay over the run,
its recipe (peak learning rate, warm-up) chosen among 4 candidates of 15 minutes each; the probe's time is
reported apart. The record ships its
encoder: once a rule's last budget is probed, its seed-0 run is exported with ``localssl export --ship``
(:func:`ship_finished`: the safetensors file and its model card, random init's probe beside it) into the
package's ``localssl/weights/`` under the name :attr:`SpeedrunScale.ship` gives it, replacing the file an
earlier record shipped, so a rerun of the record replaces the shipped encoder through the same command.

Rules run in groups (CLAPP++ and BP-CLAPP++ first, then ``clapp++both``, then the one-seed families two at a
time), each group's candidates before its final runs, ``--jobs`` runs at once, ``threads`` torch threads each (one;
two for the record). Finished budgets and probes are kept on disk (``OUT/runs/``) and reused, so a stopped
speedrun continues where it stopped and ``--only RULE`` runs just that rule (the report lists everything
finished). Writes ``results.csv`` (one row per probed budget), ``results.md`` and ``results.png`` (accuracy
against minutes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localssl.checkpoint.store import load_latest
from localssl.config import load_config
from localssl.evaluate.card import training_time
from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, current, run_cells
from localssl.experiments.library.speedrun_report import write_report
from localssl.experiments.library.speedrun_scales import (  # noqa: F401 (the study's scales, named here too)
    RECORD_STEPS_PER_MINUTE,
    SCALES,
    STEPS_PER_MINUTE,
    SpeedrunScale,
    choice_rows,
    recipe,
)
from localssl.registry import ConfigError


@dataclasses.dataclass(frozen=True)
class Candidate:
    rule: str
    width: float
    lr_factor: float
    seed: int
    warmup: float = 0.0  # minutes of linear warm-up (train.warmup_epochs)
    horizon: int | None = None  # a choice run of this many minutes (None: the scale's budget chain)

    @property
    def slug(self) -> str:
        extra = (f"-wu{self.warmup:g}" if self.warmup else "") + (f"-h{self.horizon}" if self.horizon else "")
        return f"{self.rule}-w{self.width:g}-lr{self.lr_factor:g}x{extra}-s{self.seed}"

    def budgets(self, sc: SpeedrunScale) -> tuple[int, ...]:
        """The budgets this run trains through: its own length for a choice run, else the scale's chain."""
        return (self.horizon,) if self.horizon else sc.budgets


# --------------------------------------------------------------------------------------- one run
def _config(c: Candidate, sc: SpeedrunScale, epochs: int) -> Any:
    base = load_config(c.rule, [*sc.overrides])
    overrides = [
        *sc.overrides,
        f"model.width={c.width}",
        f"train.lr={base.train.lr * c.lr_factor:.6g}",
        f"train.max_steps_per_epoch={sc.steps_per_minute(c.rule, c.width)}",
        f"train.epochs={epochs}",
        *([f"train.warmup_epochs={c.warmup:g}"] if c.warmup else []),
        f"train.seed={c.seed}",
        f"probe.seed={c.seed}",
        "train.progress=false",
    ]
    return load_config(c.rule, overrides)


def _add_time(folder: Path, wall: float, cpu: float) -> None:
    """Training time spent on the run so far (work lost to an interruption is not counted)."""
    path = folder / "timing.json"
    t = json.loads(path.read_text()) if path.exists() else {"train_wall_s": 0.0, "train_cpu_s": 0.0}
    t = {"train_wall_s": t["train_wall_s"] + wall, "train_cpu_s": t["train_cpu_s"] + cpu}
    path.write_text(json.dumps(t))


def _epochs_done(run_dir: Path) -> int:
    """Epochs ('minutes') completed by the run's newest verified checkpoint; 0 before its first."""
    if not any((run_dir / f).exists() for f in ("checkpoint.pt", "checkpoint.prev.pt")):
        return 0
    return int(load_latest(run_dir, "cpu")[0]["epoch"])


def _snapshot(train_dir: Path, snap: Path, timing: dict[str, float]) -> None:
    """Copy the run as it stands (its checkpoint, config and records) to ``snap``, atomically."""
    tmp = snap.with_name(snap.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(train_dir, tmp, ignore=shutil.ignore_patterns(".lock", "checkpoint*.pt", "*.tmp*"))
    shutil.copy2(load_latest(train_dir, "cpu")[1], tmp / "checkpoint.pt")  # the newest verified checkpoint
    (tmp / "timing.json").write_text(json.dumps(timing))
    shutil.rmtree(snap, ignore_errors=True)  # an incomplete copy from a stopped call
    tmp.rename(snap)


def read_cell(snap: Path) -> dict[str, Any]:
    """A probed budget's row (``cell.json``), its training time read again from the snapshot's records
    (:func:`~localssl.evaluate.card.training_time`: a call killed before it recorded its time is counted)."""
    timing = training_time(snap)
    return {
        **json.loads((snap / "cell.json").read_text()),
        "train_wall_s": timing["wall_s"],
        "train_cpu_s": timing["cpu_s"],
    }


def _probe_cell(c: Candidate, budget: int, snap: Path) -> dict[str, Any]:
    """Probe ``snap`` once (kept in ``cell.json``) and return its row."""
    from localssl.evaluate.probe import probe

    done = snap / "cell.json"
    if done.exists():
        return read_cell(snap)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    res = probe(snap)
    probe_wall, probe_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    summary = json.loads((snap / "summary.json").read_text())
    timing = training_time(snap)  # timing.json, or the epochs' seconds where a killed call is missing from it
    row = {
        "rule": c.rule,
        "width": c.width,
        "lr_factor": c.lr_factor,
        "warmup_min": c.warmup,
        "horizon_min": c.horizon,
        "seed": c.seed,
        "budget_min": budget,
        "steps": int(summary.get("global_step", 0)),
        "test_acc": round(float(res["test_acc_pct"]), 4),
        "val_acc": round(float(res["val_acc_pct"]), 4),
        "train_wall_s": timing["wall_s"],
        "train_cpu_s": timing["cpu_s"],  # None: a call that trained it was killed before it could record its CPU
        "probe_wall_s": round(probe_wall, 1),
        "probe_cpu_s": round(probe_cpu, 1),
    }
    done.write_text(json.dumps(row))
    print(f"speedrun: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def train_and_probe(
    c: Candidate, sc: SpeedrunScale, runs: Path, up_to: int, probe_at: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Train ``c`` budget by budget up to ``up_to`` minutes (reusing what is on disk), snapshot each budget,
    probe the snapshots in ``probe_at``. ``sc.threads`` torch threads: the threads the budget's steps were
    measured with (one core's minutes; the whole machine's for the record)."""
    import torch

    from localssl.train import pretrain, resume

    torch.set_num_threads(sc.threads)
    folder = runs / c.slug
    train_dir = folder / "train"
    rows = []
    for budget in (b for b in c.budgets(sc) if b <= up_to):
        snap = folder / f"at-{budget}min"
        if not (snap / "checkpoint.pt").exists():
            done = _epochs_done(train_dir) if (train_dir / "config.yaml").exists() else None
            if done is not None and done > budget:
                raise RuntimeError(
                    f"{folder} has trained past {budget} minutes but its copy {snap.name} is gone: delete {folder} "
                    "to train that run again"
                )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            if done is None:
                pretrain(_config(c, sc, budget), run_dir=train_dir)
            elif done < budget:
                resume(train_dir, [f"train.epochs={budget}"])  # also a run stopped before its first checkpoint
            if done is None or done < budget:
                _add_time(folder, time.perf_counter() - wall0, time.process_time() - cpu0)
            _snapshot(train_dir, snap, json.loads((folder / "timing.json").read_text()))
        if budget in probe_at:
            rows.append(_probe_cell(c, budget, snap))
    return rows


def probe_random(width: float, seed: int, sc: SpeedrunScale, runs: Path) -> list[dict[str, Any]]:
    """The encoder at initialisation (preset ``random``) at ``width``, probed once (budget 0)."""
    import torch

    from localssl.train import pretrain

    torch.set_num_threads(sc.threads)
    c = Candidate("random", width, 1.0, seed)
    folder = runs / c.slug
    snap = folder / "at-0min"
    if not (snap / "checkpoint.pt").exists():
        overrides = [*sc.overrides, f"model.width={width}", f"train.seed={seed}", f"probe.seed={seed}"]
        shutil.rmtree(folder / "train", ignore_errors=True)  # a run of no steps: written again whole
        pretrain(load_config("random", [*overrides, "train.progress=false"]), run_dir=folder / "train")
        _snapshot(folder / "train", snap, {"train_wall_s": 0.0, "train_cpu_s": 0.0})
    return [_probe_cell(c, 0, snap)]


# --------------------------------------------------------------------------------------- selection
def finished(runs: Path) -> list[dict[str, Any]]:
    """Every probed budget under ``runs``."""
    return [read_cell(f.parent) for f in sorted(runs.glob("*/at-*min/cell.json"))]


def chosen(rows: list[dict[str, Any]], rule: str, sc: SpeedrunScale) -> dict[str, Any] | None:
    """The candidate of ``rule`` with the best validation accuracy at the selection budget (seed 0), once
    every candidate has been probed there; ``None`` before."""
    at = choice_rows(rows, rule, sc)
    if len({recipe(r) for r in at}) < len(sc.candidates()):
        return None
    # ties: the cheaper width, the preset's learning rate, no warm-up
    return max(at, key=lambda r: (r["val_acc"], *(-x for x in recipe(r))))


Job = tuple[str, Candidate, int, tuple[int, ...]]  # ('train' | 'random', candidate, up to (min), probed budgets)


def _job(item: Job, sc: SpeedrunScale, runs: Path) -> list[dict[str, Any]]:
    kind, c, up_to, probe_at = item
    if kind == "random":
        return probe_random(c.width, c.seed, sc, runs)
    return train_and_probe(c, sc, runs, up_to, probe_at)


def _cells(items: list[Job], sc: SpeedrunScale, runs: Path) -> list[Cell]:
    """Each job a cell of the engine: a budget chain (or random init's probe), finished once its last budget's
    probe (``at-<B>min/cell.json``) is on disk."""
    job = functools.partial(_job, sc=sc, runs=runs)
    return [
        Cell(
            f"{kind}-{c.slug}-to{up_to}",
            f"{kind} {c.slug} to {up_to} min",
            job,
            (kind, c, up_to, probe_at),
            (runs / c.slug / f"at-{probe_at[-1]}min" / "cell.json").exists,
            runs / c.slug / "train",
        )
        for kind, c, up_to, probe_at in items
    ]


def _run(items: list[Job], sc: SpeedrunScale, runs: Path, report: Callable[..., None]) -> None:
    if items:
        run_cells("speedrun", _cells(items, sc, runs), worker_count(1), threads=sc.threads, on_result=report)


# --------------------------------------------------------------------------------------- the study
@experiment(
    "speedrun",
    "time to accuracy on CIFAR-10: every rule family at 1, 3 and 10 minutes of one core (scale cpu); "
    "the best CLAPP++ in 60 minutes of the whole machine (scale record)",
    tuple(SCALES),
)
def run(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    sc = SCALES[scale]
    rules = (*sc.main, *sc.others)
    unknown = [r for r in only or [] if r not in rules]
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: not a rule of the speedrun; its rules: {', '.join(rules)}")
    for rule in only or rules:  # a missing steps figure fails here, before anything trains
        for width in sc.widths:
            sc.steps_per_minute(rule, width)
    out = Path(out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)

    def report(*_: Any) -> None:  # after every job, so a stopped speedrun still reports what it has
        rows = finished(runs)
        picks = {r: chosen(rows, r, sc) for r in rules}
        write_report(out, scale, sc, seeds, rows, {r: p for r, p in picks.items() if p is not None})

    if current().status:  # every cell known now: the candidates, and the final runs of the rules already chosen
        known = [job for group in sc.groups() for phase in _phases(group, only, sc, seeds, runs) for job in phase]
        run_cells("speedrun", _cells(known, sc, runs))
    for group in sc.groups():
        cands, finals = _phases(group, only, sc, seeds, runs)
        _run(cands, sc, runs, report)
        _, finals = _phases(group, only, sc, seeds, runs, strict=True)
        _run(finals, sc, runs, report)
    report()
    for path in ship_finished(sc, scale, runs, only):
        print(f"speedrun: shipped {path}", file=sys.stderr, flush=True)
    print((out / "results.md").read_text())


def _phases(
    group: tuple[str, ...], only: list[str] | None, sc: SpeedrunScale, seeds: int, runs: Path, strict: bool = False
) -> tuple[list[Job], list[Job]]:
    """A group's candidates (seed 0 to the selection budget) and its final runs (the chosen setting's seeds to the
    last budget, random init at each chosen width), for the rules whose candidates are all probed (``strict``:
    every rule's must be)."""
    group = tuple(r for r in group if only is None or r in only)
    cands = [
        ("train", Candidate(r, w, f, 0, u, sc.choice_budget), sc.select_at, (sc.select_at,))
        for r in group
        for w, f, u in sc.candidates()
    ]
    rows = finished(runs)
    finals: list[Job] = []
    floors: set[tuple[float, int]] = set()
    for r in group:
        pick = chosen(rows, r, sc)
        if pick is None:
            if strict:
                raise RuntimeError(f"speedrun: the candidates of {r} did not all finish")
            continue
        w, f, u = recipe(pick)
        for s in range(seeds if r in sc.main else 1):
            finals.append(("train", Candidate(r, w, f, s, u), sc.budgets[-1], sc.budgets))
            floors.add((w, s))
    finals += [("random", Candidate("random", w, 1.0, s), 0, (0,)) for w, s in sorted(floors)]
    return cands, finals


def ship_finished(sc: SpeedrunScale, scale: str, runs: Path, only: list[str] | None = None) -> list[Path]:
    """Ship (``localssl export --ship``) the seed-0 run of each rule in :attr:`SpeedrunScale.ship` whose last
    budget is probed, with random init of its network as the card's baseline; returns the files written.
    The card names the speedrun command as the one that made the encoder."""
    from localssl.evaluate.export import export_run
    from localssl.experiments.engine.report import code_version

    rows = finished(runs)
    shipped = []
    for rule, name in sc.ship:
        pick = chosen(rows, rule, sc)
        if pick is None or (only is not None and rule not in only):
            continue
        width, factor, warmup = recipe(pick)
        snap = runs / Candidate(rule, width, factor, 0, warmup).slug / f"at-{sc.budgets[-1]}min"
        if not (snap / "cell.json").exists():
            continue
        base = runs / Candidate("random", width, 1.0, 0).slug / "at-0min"
        made_by = f"localssl reproduce speedrun --scale {scale} --seeds 1 --jobs 1"
        done = export_run(
            snap,
            ship=name,
            baseline=base if (base / "cell.json").exists() else None,
            made_by=made_by,
            code=code_version(),
        )
        shipped.append(done.path)
    return shipped
