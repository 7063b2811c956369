"""``localssl reproduce core-cifar10``: the core presets on full CIFAR-10 at a CPU budget, probed after every epoch.

Each preset is pretrained one epoch at a time (``train.epochs=1``, then :func:`localssl.train.resume` with
``train.epochs=2``, ...) and linear-probed after every epoch; the report gives the probe accuracy per epoch
and the first epoch at which the preset beats random init (its encoder at initialisation, probed the same
way). Finished epochs are kept in ``OUT/runs/<preset>-s<seed>/probe_epoch<E>.json`` and reused, so a stopped
run continues where it stopped and ``--only PRESET`` trains only that preset (the report lists every preset
with a finished epoch). A cell is one preset × seed; the engine runs
``--jobs`` of them at a time (:mod:`localssl.experiments.engine`).

Writes ``results.csv`` (preset, seed, epoch, test and validation accuracy, training images/s) and
``results.md``. Throughput of ``clapp++`` against ``bp-clapp++`` at this width: ``localssl bench clapp++
model.width=0.25``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from localssl.config import load_config
from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, run_cells
from localssl.experiments.engine.report import code_version
from localssl.registry import ConfigError
from localssl.safe_files import read_text
from localssl.utils import machine_name

PRESETS = (
    "clapp++",
    "bp-clapp++",
    "clapp++nospatial",
    "clapp++dfb",
    "clapp++both",
    "bp-infonce",
    "scff",
    "lpl",
    "ff",
    "phyll",
    "vicreg",
    "supervised",
    "greedy-supervised",
)


@dataclasses.dataclass(frozen=True)
class Budget:
    protocol: str
    overrides: tuple[str, ...]
    epochs: int
    presets: tuple[str, ...] = PRESETS


SCALES = {
    "smoke": Budget(
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl, VGG-6 at width 1/16, "
        "64 pretraining images, 2 epochs, batch 32; probe: 200 train / 100 validation images, 2 epochs.",
        (
            "data.name=cifar10-mini",
            "model.width=0.0625",
            "train.batch_size=32",
            "data.train_subset=64",
            "probe.epochs=2",
            "probe.train_subset=200",
            "probe.val_size=100",
        ),
        epochs=2,
        presets=("clapp++", "bp-clapp++"),
    ),
    "cpu": Budget(
        "VGG-6 at width 1/4, batch 32 images, each preset's optimizer and learning rate, all 50 000 CIFAR-10 train "
        "images per epoch, 3 epochs; linear probe on all six layers (pooled 4-4-4-2-2-1), 30 epochs of Adam 1e-3, "
        "5000 train images held out for validation, the test accuracy at the best-validation epoch.",
        ("data.name=cifar10", "model.width=0.25", "train.batch_size=32", "probe.epochs=30"),
        epochs=3,
    ),
}
# The fast path's accuracy check (issue 26): the `cpu` scale's first epoch of clapp++ at the default precision
# (bf16 where the CPU computes it natively) and pinned to fp32 (contiguous), 3 seeds each.
for _name, _pin in (("cpu-epoch1", ()), ("cpu-epoch1-fp32", ("train.precision=fp32", "train.channels_last=false"))):
    SCALES[_name] = Budget(
        SCALES["cpu"].protocol.replace("3 epochs", "1 epoch") + f" Precision: {'fp32' if _pin else 'the default'}.",
        (*SCALES["cpu"].overrides, *_pin),
        epochs=1,
        presets=("clapp++",),
    )


def train_epochs(preset: str, seed: int, budget: Budget, runs: Path) -> list[dict[str, Any]]:
    """Pretrain ``preset`` epoch by epoch (reusing finished epochs), probe after each; one row per epoch."""
    from localssl.checkpoint import load_checkpoint
    from localssl.evaluate.probe import probe
    from localssl.train import pretrain, resume

    run_dir = runs / f"{preset}-s{seed}"
    overrides = [*budget.overrides, f"train.seed={seed}", f"probe.seed={seed}", "train.progress=false"]
    rows = []
    for epoch in range(1, budget.epochs + 1) if preset != "random" else [0]:
        done = run_dir / f"probe_epoch{epoch}.json"
        if done.exists():
            rows.append(json.loads(read_text(done)))
            continue
        ckpt = run_dir / "checkpoint.pt"
        if not ckpt.exists():
            pretrain(load_config(preset, [*overrides, f"train.epochs={epoch}"]), run_dir=run_dir)
        elif load_checkpoint(ckpt)["epoch"] < epoch:
            resume(run_dir, [f"train.epochs={epoch}"])
        res = probe(run_dir)
        summary = json.loads(read_text(run_dir / "summary.json"))
        row = {
            "preset": preset,
            "seed": seed,
            "epoch": epoch,
            "test_acc": round(res["test_acc_pct"], 4),
            "val_acc": round(res["val_acc_pct"], 4),
            "train_images_per_s": summary.get("images_per_s"),
        }
        done.write_text(json.dumps(row))
        rows.append(row)
        print(f"core-cifar10: {json.dumps(row)}", file=sys.stderr, flush=True)
    return rows


def finished(runs: Path) -> list[dict[str, Any]]:
    """Every probed epoch under ``runs``."""
    return [json.loads(read_text(f)) for f in sorted(runs.glob("*/probe_epoch*.json"))]


def mean_text(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def run_precision(run_dir: Path) -> str:
    """How a run computed, as its ``config.yaml`` recorded it (``train.precision=auto`` is resolved before
    the run starts): e.g. ``bf16 + channels_last`` or ``fp32``; ``unknown`` without a config."""
    try:
        train = yaml.safe_load(read_text(run_dir / "config.yaml"))["train"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "unknown"
    return str(train.get("precision", "unknown")) + (" + channels_last" if train.get("channels_last") is True else "")


def write_report(out: Path, scale: str, budget: Budget, seeds: int, rows: list[dict[str, Any]]) -> None:
    order = {p: i for i, p in enumerate(("random", *budget.presets))}
    rows = sorted(rows, key=lambda r: (order.get(r["preset"], len(order)), r["preset"], r["seed"], r["epoch"]))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["preset", "seed", "epoch", "test_acc", "val_acc", "train_images_per_s"])
        w.writeheader()
        w.writerows(rows)
    acc = {}
    for r in rows:
        acc.setdefault((r["preset"], r["epoch"]), []).append(r["test_acc"])
    epochs = range(1, budget.epochs + 1)
    random = acc.get(("random", 0))
    speed: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get("train_images_per_s"):
            speed.setdefault(r["preset"], {}).setdefault(r["epoch"], []).append(r["train_images_per_s"])
    precisions: dict[str, list[str]] = {}  # one config.yaml read per run, not per probed epoch
    for preset, seed in dict.fromkeys((r["preset"], r["seed"]) for r in rows):
        precisions.setdefault(run_precision(out / "runs" / f"{preset}-s{seed}"), []).append(preset)
    lines = [
        f"# Core presets on CIFAR-10, probed after every epoch (scale `{scale}`)",
        "",
        f"- **Command:** `localssl reproduce core-cifar10 --scale {scale} --seeds {seeds}` (`--only PRESET` trains "
        "one preset; finished epochs are reused).",
        f"- **Protocol:** {budget.protocol}",
        f"- **Seeds:** {seeds}; linear-probe test accuracy (%), mean ± sample std over seeds where there are several.",
        "- **Precision** (as each run's `config.yaml` recorded it): "
        + "; ".join(f"{p}: {', '.join(dict.fromkeys(names))}" for p, names in precisions.items())
        + ".",
        *(
            [f"- **Not run here:** {', '.join(missing)} (presets of this scale without a finished epoch here)."]
            if (missing := [p for p in budget.presets if p not in {r["preset"] for r in rows}])
            else []
        ),
        f"- **Code:** {code_version()}; report written {time.strftime('%Y-%m-%d %H:%M')} on {machine_name()}. "
        "Training images/s are wall-clock rates of each epoch's process, not a speed comparison unless the runs "
        "had the machine to themselves.",
        "",
        "| preset | " + " | ".join(f"epoch {e}" for e in epochs) + " | first epoch > random init | training images/s |",
        "| --- | " + " | ".join("---" for _ in epochs) + " | --- | --- |",
        f"| random init | {mean_text(random) if random else 'not run'} (no training) |" + " |" * (budget.epochs + 1),
    ]
    floor = statistics.mean(random) if random else None
    for preset in dict.fromkeys(r["preset"] for r in rows if r["preset"] != "random"):
        means = [statistics.mean(acc[(preset, e)]) if (preset, e) in acc else None for e in epochs]
        cells = ["not run" if (preset, e) not in acc else mean_text(acc[(preset, e)]) for e in epochs]
        first = None if floor is None else next((e for e, m in zip(epochs, means) if m is not None and m > floor), None)
        ran = sum(m is not None for m in means)
        verdict = first or ("not within budget" if ran == budget.epochs else f"not in {ran} epoch(s) run")
        rates = " / ".join(f"{statistics.mean(speed[preset][e]):.0f}" for e in epochs if e in speed.get(preset, {}))
        lines.append(f"| {preset} | " + " | ".join(cells) + f" | {verdict if floor is not None else '–'} | {rates} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


@experiment(
    "core-cifar10",
    "core presets on full CIFAR-10 (width 1/4, 3 epochs), probed after every epoch",
    tuple(SCALES),
)
def run(out: Path, scale: str, seeds: int, only: list[str] | None = None) -> None:
    budget = SCALES[scale]
    unknown = [p for p in only or [] if p not in budget.presets]
    if unknown:
        raise ConfigError(f"--only {', '.join(unknown)}: not a preset of core-cifar10; its presets: {budget.presets}")
    runs = Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    todo = [(p, s) for s in range(seeds) for p in ("random", *(only or budget.presets))]
    job = functools.partial(_job, budget=budget, runs=runs)

    def report(*_: Any) -> None:  # after every preset, so a stopped run still reports what it has
        write_report(out, scale, budget, seeds, [r for r in finished(runs) if r["seed"] < seeds])

    cells = [
        Cell(f"{p}-s{s}", f"{p} seed {s}", job, (p, s), _finished(p, s, budget, runs), runs / f"{p}-s{s}")
        for p, s in todo
    ]
    run_cells("core-cifar10", cells, worker_count(1), on_result=report)
    report()
    print(read_text(out / "results.md"))


def _job(item: tuple[str, int], budget: Budget, runs: Path) -> list[dict[str, Any]]:
    preset, seed = item
    return train_epochs(preset, seed, budget, runs)


def _finished(preset: str, seed: int, budget: Budget, runs: Path) -> Callable[[], bool]:
    """Whether the chain ``preset`` × ``seed`` has probed its last epoch."""
    last = runs / f"{preset}-s{seed}" / f"probe_epoch{budget.epochs if preset != 'random' else 0}.json"
    return last.exists
