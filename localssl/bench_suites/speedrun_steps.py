"""The ``speedrun-steps`` suite: how many optimizer steps one core makes in a minute, for every rule and
width of ``localssl reproduce speedrun`` (:mod:`localssl.experiments.library.speedrun`), on the fast path.

Every (rule, width) runs in a fresh process with one torch thread, two processes at once on a 2-core
machine (the load the speedrun's ``--jobs 2`` puts on it); ``--threads 2`` measures the record's scale instead
(one process with two threads: the whole machine); ``--warmup`` untimed steps first (default 20:
the fast path's first steps are slower), then ``--steps`` timed ones (default 40) through
:meth:`~localssl.train.Trainer.train_epoch` (views, rule, optimizer, the logged row) on random images of
CIFAR-10's shape, or with ``images=cifar10`` on CIFAR-10 itself (from the data root; the record's figures are of
CIFAR-10: on the reference machine its steps ran about a quarter faster than on random images). Steps per minute
= 60 / (seconds per step), rounded down. The speedrun's table of steps (``STEPS_PER_MINUTE``) is this suite's
output on the reference machine, written into the study by hand and dated there, so that the speedrun's budgets
are steps and reproduce on any machine.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Any

from localssl.bench_suites import Options, heading, suite
from localssl.bench_suites.smoke import smoke_one
from localssl.experiments.engine.local import run_jobs
from localssl.experiments.library.speedrun import SCALES

IMAGES = ("random", "cifar10")


def _measure(
    item: tuple[str, float], steps: int, warmup: int, overrides: tuple[str, ...], images: str = "random"
) -> dict[str, Any]:
    rule, width = item
    with tempfile.TemporaryDirectory() as tmp:
        r = smoke_one(
            rule,
            steps,
            ["data.name=cifar10", f"model.width={width}", *overrides],
            Path(tmp),
            warmup,
            random_images=images == "random",
        )
    return {"rule": rule, "width": width, "batch": r["batch"], "s_per_step": r["s_per_step"]}


def _scale_items(threads: int, presets: list[str] | None) -> tuple[list[tuple[str, float]], int]:
    """(rule, width) to measure: every rule of the measured speedrun scales whose runs use ``threads`` torch
    threads, at each scale's widths (``presets``: those rules, whether or not a scale runs them yet, so that a
    rule's figure can be measured before it joins a scale), and how many of those runs the scale puts on the
    machine at once."""
    items: list[tuple[str, float]] = []
    scales = [sc for sc in SCALES.values() if sc.fixed_steps is None and sc.threads == threads]
    if not scales:
        raise ValueError(
            f"speedrun-steps: no speedrun scale runs with {threads} thread(s); --threads 1 measures the cpu scale, "
            "--threads 2 the record"
        )
    for sc in scales:
        for rule in presets or (*sc.main, *sc.others):
            for width in sc.widths:
                if (rule, width) not in items:
                    items.append((rule, width))
    return items, scales[-1].jobs


@suite("speedrun-steps", "steps per minute of one core for every rule and width of the speedrun (fast path)", None)
def speedrun_steps(opts: Options) -> dict[str, Any]:
    threads = opts.threads or 1
    images = next((o.split("=", 1)[1] for o in opts.overrides if o.startswith("images=")), "random")
    if images not in IMAGES:
        raise ValueError(f"speedrun-steps: images={images} is not one of {', '.join(IMAGES)}")
    overrides = tuple(o for o in opts.overrides if not o.startswith("images="))
    if images == "cifar10":  # a missing data set fails here, before the report's heading is written
        from localssl.config import load_config
        from localssl.data.catalog import load_split

        load_split("cifar10", "train", load_config("clapp++", ["data.name=cifar10", *overrides]).data.root)
    items, per_machine = _scale_items(threads, opts.presets)
    steps = opts.steps if opts.steps > 2 else 40  # the bench default (2) is too few for a steady state
    warmup = opts.warmup if opts.warmup > 1 else 20
    job = functools.partial(_measure, steps=steps, warmup=warmup, overrides=overrides, images=images)
    jobs = min(per_machine, len(items))  # the load the speedrun puts on the reference machine
    opts.emit(
        heading(opts, f"speedrun steps per minute: {threads} torch thread(s) per process, {jobs} process(es) at once")
        + f"{warmup} warm-up steps, then {steps} timed steps of `Trainer.train_epoch` on "
        + ("random images of CIFAR-10's shape" if images == "random" else "CIFAR-10's train images")
        + ", default precision (`train.precision=auto`).\n\n"
        "| rule | width | batch | s/step | steps per minute |\n| --- | ---: | ---: | ---: | ---: |\n"
    )
    rows = []

    def emit_row(_: int, r: dict[str, Any]) -> None:
        r["steps_per_minute"] = math.floor(60.0 / r["s_per_step"])
        rows.append(r)
        opts.emit(f"| {r['rule']} | {r['width']} | {r['batch']} | {r['s_per_step']:.4f} | {r['steps_per_minute']} |\n")

    names = [f"{r} width {w}" for r, w in items]
    run_jobs(job, items, jobs, names=names, threads=threads, fresh=True, on_result=emit_row)
    return {"rows": rows}
