"""``localssl reproduce rhm-settings``: which RHM settings show the published contrast (layer-wise SSL ≈ BP,
direct feedback fails)?

One axis at a time away from the ``rhm`` experiment's cpu-scale setting (v=8, n_c=8, m=4, s=2, L=3; width 128,
Adam, default init): depth L, multiplicity m, initial weight scale, optimiser. For each setting, the recipes
``bp``, ``dfa`` and ``clapp`` of :mod:`localssl.experiments.rhm.sample_complexity` are trained at P = 4·P* (one
seed per ``--seeds``) and tested on held-out inputs (bp/dfa: their read-out; clapp: linear probe on all frozen
layers). Runs go through :func:`localssl.experiments.rhm.sample_complexity.run_jobs` (cells of the engine,
``--jobs`` processes; each finished run is kept in ``OUT/jobs`` and reused). Writes ``results.csv`` and
``results.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from localssl.data.rhm import RHMParams
from localssl.experiments import experiment, worker_count
from localssl.experiments.rhm.sample_complexity import RECIPES, Job, run_jobs

BASE = RHMParams(v=8, n_c=8, m=4, s=2, L=3)
SMALL = RHMParams(v=8, n_c=4, m=2, s=2, L=3)


@dataclasses.dataclass(frozen=True)
class Budget:
    settings: dict[str, tuple[RHMParams, dict[str, Any]]]  # name -> (RHM, recipe changes)
    rules: tuple[str, ...] = ("bp", "dfa", "clapp")
    mult: float = 4.0  # P / P*
    n_test: int = 4096
    min_test: int = 256  # a setting whose Pmax − P is smaller is not run (no room for a test set)
    smoke: dict[str, Any] = dataclasses.field(default_factory=dict)  # recipe changes for every run


SCALES = {
    "smoke": Budget(
        {"base": (SMALL, {}), "init0.1": (SMALL, {"model": {"init_scale": 0.1}})},
        mult=1.0,
        n_test=128,
        min_test=64,
        smoke={"model": {"width": 32}, "min_steps": 150, "train": {"epochs": 1}},
    ),
    "cpu": Budget(
        {
            "base": (BASE, {}),
            "L2": (RHMParams(v=8, n_c=8, m=4, s=2, L=2), {}),
            "L4": (RHMParams(v=8, n_c=8, m=4, s=2, L=4), {}),
            "m6": (RHMParams(v=8, n_c=8, m=6, s=2, L=3), {}),
            "init0.1": (BASE, {"model": {"init_scale": 0.1}}),
            "sgd": (BASE, {"train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}),
        }
    ),
}


def make_jobs(budget: Budget, seeds: int) -> tuple[list[tuple[str, str, int]], list[Job], set[str]]:
    """``(setting, rule, seed)`` of every job, the jobs, and the settings left out (no room for a test set)."""
    keys, jobs, skipped = [], [], set()
    for name, (params, change) in budget.settings.items():
        n_train = round(budget.mult * params.p_star)
        if params.pmax - n_train < budget.min_test:  # e.g. L2 at 4·P*: P* = 128 but Pmax = 512
            skipped.add(name)
            continue
        for rule in budget.rules:
            recipe = RECIPES[rule]
            for key, value in [*change.items(), *budget.smoke.items()]:  # dict fields are merged key by key
                recipe = recipe.replace(**{key: value})
            recipe = recipe.replace(label=f"{name}-{rule}")  # the job's cache name: one per setting and rule
            for seed in range(seeds):
                keys.append((name, rule, seed))
                jobs.append(Job(recipe, params, n_train, min(budget.n_test, params.pmax - n_train), seed))
    return keys, jobs, skipped


@experiment(
    "rhm-settings",
    "RHM: bp, dfa and clapp at 4·P* with one axis changed (depth, m, init, optimiser)",
    ("smoke", "cpu"),
)
def run(out: Path, scale: str, seeds: int) -> None:
    budget = SCALES[scale]
    keys, jobs, skipped = make_jobs(budget, seeds)
    workers = worker_count(2)
    print(f"rhm-settings: {len(jobs)} runs on {workers} worker process(es)", file=sys.stderr, flush=True)
    results = run_jobs(jobs, workers, cache=Path(out) / "jobs", study="rhm-settings")
    rows = [
        {"setting": s, "rule": r, "seed": seed, "P": res["result"]["P"], "test_acc": res["result"]["test_acc"]}
        for (s, r, seed), res in zip(keys, results)
    ]
    with open(Path(out) / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["setting", "rule", "seed", "P", "test_acc"])
        w.writeheader()
        w.writerows(rows)
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        acc.setdefault((r["setting"], r["rule"]), []).append(r["test_acc"])
    lines = [
        f"# RHM settings at P = {budget.mult:g}·P* (scale `{scale}`)",
        "",
        f"`localssl reproduce rhm-settings --scale {scale} --seeds {seeds}`; {os.cpu_count()}-core CPU, {workers} "
        f"worker(s). Test accuracy on up to {budget.n_test} held-out inputs (fewer where Pmax − P is smaller), mean "
        f"over {seeds} seed(s) (supervised rules: their read-out; self-supervised: linear probe on all frozen layers).",
        "",
        "| setting | RHM (v, n_c, m, s, L) | P* | " + " | ".join(budget.rules) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in budget.rules) + " |",
    ]
    for name, (p, change) in budget.settings.items():
        cells = [
            f"P ≥ Pmax − {budget.min_test}: not run" if name in skipped else f"{sum(v) / len(v):.3f}"
            for v in (acc.get((name, r), []) for r in budget.rules)
        ]
        lines.append(
            f"| {name} {change or ''} | ({p.v}, {p.n_c}, {p.m}, {p.s}, {p.L}) | {p.p_star} | "
            + " | ".join(cells)
            + " |"
        )
    (Path(out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
