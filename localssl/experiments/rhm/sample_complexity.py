"""``localssl reproduce rhm``: sample-complexity curves on the Random Hierarchy Model.

Claim under test (Delrocq, Wu, Bellec & Gerstner 2026, "Self-supervised local learning rules learn the
hidden hierarchical structure of high-dimensional data"): on the RHM (Cagnetta et al., PRX 2024)
layer-wise self-supervised rules, evaluated by a linear probe, learn with about as few samples as
supervised backprop (P ≈ P* = n_c·m^L), while direct feedback (DFA) fails.

For every recipe of :data:`RECIPES` (registered views × model × objective × credit assignment), every
seed and every training-set size ``P`` (multiples of P*), one network is trained on the ``P`` training
inputs only and evaluated on a fixed, disjoint test set:

* ``results.csv`` — ``rule,P,P_over_Pstar,seed,evaluation,test_acc`` (readout: the rule's own
  cross-entropy read-out; ``probe:all``: a linear probe on all frozen layers concatenated, as the
  library's probe does, trained on the same ``P`` labelled inputs for a fixed number of epochs);
* ``probes.csv`` — ``rule,P,P_over_Pstar,seed,layers,test_acc``: linear probe on each frozen layer and on
  all layers concatenated, for every rule (backprop included);
* ``sensitivity.csv`` — ``rule,P,P_over_Pstar,seed,layer,level,sensitivity`` (synonymic sensitivity,
  :func:`localssl.evaluate.rhm.synonym_sensitivity`);
* ``correlation.csv`` — ``rule,P,P_over_Pstar,seed,layer,level,eta2`` (feature correlation);
* ``results.md`` — accuracy table, smallest ``P/P*`` reaching 95 %, the claims beside our numbers;
* ``accuracy_vs_P.png``, ``sensitivity.png``, ``correlation.png`` (re-drawn from the CSVs by :func:`render`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from localssl.data.rhm import RandomHierarchyModel, RHMParams
from localssl.evaluate.rhm import feature_correlation, probe_accuracy, readout_accuracy, synonym_sensitivity
from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, run_cells
from localssl.experiments.rhm.loop import DEFAULT_PROBE, Recipe, build_recipe, rhm_data, train_rhm
from localssl.utils import save_figure

THRESHOLD = 0.95

TRAIN = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 30}  # 3000 steps for P <= 6400
SUPERVISED = {"views": {"name": "rhm_plain"}, "objective": {"name": "cross_entropy"}, "train": TRAIN, "min_steps": 3000}
# self-supervised: sibling subtrees under level-0 and level-1 nodes as positive pairs (the siblings of
# layer 2 and layer 1 positions), small initial weights (init_scale 0.1: see benchmarks/RESULTS.md)
SIBLINGS = {"views": {"name": "rhm_siblings", "depths": [0, 1]}, "train": TRAIN, "min_steps": 3000}
CNN = {"name": "rhm_cnn", "width": 128}

RECIPES: dict[str, Recipe] = {
    # supervised backprop (Cagnetta et al. 2024): cross-entropy on the top layer, end-to-end
    "bp": Recipe("bp", model=CNN, rule={"name": "backprop"}, **SUPERVISED),
    # direct feedback alignment of the same top-layer cross-entropy (Nøkland 2016)
    "dfa": Recipe("dfa", model=CNN, rule={"name": "dfa"}, **SUPERVISED),
    # direct random target projection (Frenkel et al. 2021): the label, not the error, sent down
    "drtp": Recipe("drtp", model=CNN, rule={"name": "drtp"}, **SUPERVISED),
    # layer-wise contrastive (CLAPP-like): hinge loss, trainable B over channel × position
    "clapp": Recipe(
        "clapp",
        model={**CNN, "init_scale": 0.1},
        objective={"name": "contrastive", "f": "hinge", "B": "trainable", "pooling": "none"},
        rule={"name": "local", "reference": "same"},
        evaluation="probe",
        **SIBLINGS,
    ),
    # layer-wise non-contrastive (LPL, Halvagal & Zenke 2023) on the same pairs; predictive term without
    # stop-gradient as the official LPL code (the `lpl` preset follows the Methods' stop-gradient instead;
    # the RHM numbers were measured with this form)
    "lpl": Recipe(
        "lpl",
        model={**CNN, "init_scale": 0.1},
        objective={"name": "lpl", "pooling": "global", "stop_gradient": False},
        rule={"name": "local", "reference": "same"},
        evaluation="probe",
        **SIBLINGS,
    ),
}


@dataclasses.dataclass(frozen=True)
class Scale:
    params: RHMParams
    multiples: tuple[float, ...]  # P / P*
    seeds: int
    n_test: int
    width: int | None = None  # overrides the recipes' width (smoke)
    steps: int | None = None  # overrides the recipes' min_steps (smoke)


SCALES: dict[str, Scale] = {
    "smoke": Scale(RHMParams(v=8, n_c=4, m=2, s=2, L=3), (1.0, 4.0), 1, 256, width=32, steps=150),
    "cpu": Scale(RHMParams(v=8, n_c=8, m=4, s=2, L=3), (1.0, 2.0, 4.0, 8.0, 16.0), 2, 4096),
    "paper": Scale(RHMParams(v=8, n_c=8, m=4, s=2, L=3), (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0), 5, 8192),
}


@dataclasses.dataclass(frozen=True)
class Job:
    recipe: Recipe
    params: RHMParams
    n_train: int
    n_test: int
    seed: int


def run_job(job: Job) -> dict[str, Any]:
    """Train one network and measure it (one process, one thread)."""
    torch.set_num_threads(1)
    p, recipe = job.params, job.recipe
    rhm = RandomHierarchyModel(p, seed=job.seed)  # rules and data both depend on the seed
    _tr, x, y, te, xt, yt = rhm_data(rhm, job.n_train, job.n_test, split_seed=job.seed, whiten=recipe.whiten)
    built = build_recipe(recipe, p, seed=job.seed)
    t0 = time.perf_counter()
    train_rhm(built, recipe, x, y)
    seconds = time.perf_counter() - t0
    n_layers = len(built.encoder)
    key = {"rule": recipe.label, "P": job.n_train, "P_over_Pstar": job.n_train / p.p_star, "seed": job.seed}
    probes = []
    for name, layers in [*((str(k + 1), [k]) for k in range(n_layers)), ("all", list(range(n_layers)))]:
        acc = probe_accuracy(built.encoder, x, y, xt, yt, p.n_c, DEFAULT_PROBE, layers)["test_acc"]
        probes.append({**key, "layers": name, "test_acc": round(acc, 5)})
    if recipe.evaluation == "readout":
        acc = readout_accuracy(built.encoder, built.rule.objectives[str(n_layers)], xt, yt)
    else:
        acc = next(r["test_acc"] for r in probes if r["layers"] == recipe.probe_layers)
    probe_idx = te[: min(len(te), 2048)]
    sens = synonym_sensitivity(built.encoder, rhm, probe_idx, recipe.whiten, seed=job.seed)
    corr = feature_correlation(built.encoder, rhm, probe_idx, recipe.whiten)
    evaluation = recipe.evaluation if recipe.evaluation == "readout" else f"probe:{recipe.probe_layers}"
    return {
        "result": {**key, "evaluation": evaluation, "test_acc": round(acc, 5), "train_seconds": round(seconds, 1)},
        "probes": probes,
        "sensitivity": [
            {**key, "layer": k + 1, "level": lvl, "sensitivity": round(float(sens[k, lvl]), 5)}
            for k in range(sens.shape[0])
            for lvl in range(sens.shape[1])
        ],
        "correlation": [
            {**key, "layer": k + 1, "level": lvl, "eta2": round(float(corr[k, lvl]), 5)}
            for k in range(corr.shape[0])
            for lvl in range(corr.shape[1])
            if not math.isnan(float(corr[k, lvl]))
        ],
    }


def make_jobs(scale: Scale, seeds: int, recipes: dict[str, Recipe]) -> list[Job]:
    jobs = []
    for label, recipe in recipes.items():
        if scale.width is not None:
            recipe = recipe.replace(model={"width": scale.width})
        if scale.steps is not None:
            recipe = recipe.replace(min_steps=scale.steps, train={"epochs": 1})
        recipe = recipe.replace(label=label)
        for seed in range(seeds):
            for mult in scale.multiples:
                jobs.append(Job(recipe, scale.params, round(mult * scale.params.p_star), scale.n_test, seed))
    return jobs


def job_name(job: Job) -> str:
    return f"{job.recipe.label}-P{job.n_train}-s{job.seed}"


def run_jobs(
    jobs: list[Job],
    workers: int,
    cache: Path | None = None,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
    study: str = "rhm",
) -> list[dict[str, Any]]:
    """Run jobs as cells of the engine, in ``workers`` processes (:func:`~localssl.experiments.engine.run_cells`;
    results in job order).

    Seed 0 first, small ``P`` first within a seed, so an interrupted grid has the low end of every
    curve (where the 95 % thresholds are). With ``cache``, each finished job is stored as
    ``cache/<rule>-P<P>-s<seed>.json`` (the cell's result file) and reused by the next call; ``on_result`` is
    called with the results so far after every job (the experiment re-draws its tables, so a stopped grid still
    reports)."""
    cost = [job.n_train * (2 if job.recipe.evaluation == "probe" else 1) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i].seed, cost[i]))
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for i, job in enumerate(jobs):
            f = cache / f"{job_name(job)}.json"
            if f.exists():
                out[i] = json.loads(f.read_text())

    def finished(k: int, res: dict[str, Any]) -> None:
        i = order[k]
        out[i] = res
        _progress(jobs[i], res)
        if on_result is not None:
            on_result([o for o in out if o is not None])

    cells = [
        Cell(job_name(jobs[i]), job_name(jobs[i]), run_job, jobs[i], result=cache / f"{job_name(jobs[i])}.json")
        if cache is not None
        else Cell(job_name(jobs[i]), job_name(jobs[i]), run_job, jobs[i])
        for i in order
    ]
    run_cells(study, cells, workers, on_result=finished)
    return [o for o in out if o is not None]


def _progress(job: Job, res: dict[str, Any]) -> None:
    r = res["result"]
    print(
        f"rhm: {r['rule']:>6} P={r['P']:>6} (P/P*={r['P_over_Pstar']:g}) seed={r['seed']} "
        f"test_acc={r['test_acc']:.3f} ({r['train_seconds']:.0f}s)",
        file=sys.stderr,
        flush=True,
    )


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def mean_curve(rows: list[dict[str, Any]], rule: str) -> list[tuple[float, float, float]]:
    """(P/P*, mean test accuracy, std over seeds) of one rule."""
    by_p: dict[float, list[float]] = {}
    for r in rows:
        if r["rule"] == rule:
            by_p.setdefault(r["P_over_Pstar"], []).append(r["test_acc"])
    out = []
    for mult in sorted(by_p):
        accs = torch.tensor(by_p[mult])
        out.append((mult, float(accs.mean()), float(accs.std()) if len(accs) > 1 else 0.0))
    return out


def threshold_multiple(curve: list[tuple[float, float, float]], threshold: float = THRESHOLD) -> float | None:
    """Smallest P/P* of the grid whose mean accuracy reaches ``threshold`` (None: never)."""
    return next((mult for mult, acc, _ in curve if acc >= threshold), None)


def write_markdown(
    out: Path,
    scale_name: str,
    scale: Scale,
    rows: list[dict[str, Any]],
    sens: list[dict],
    corr: list[dict],
    probes: list[dict],
) -> None:
    p = scale.params
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    mults = sorted({r["P_over_Pstar"] for r in rows})
    evaluation = {r["rule"]: r["evaluation"] for r in rows}
    seeds = len({r["seed"] for r in rows})
    lines = [
        f"# Random Hierarchy Model: test accuracy vs P ({scale_name} scale)",
        "",
        f"RHM v={p.v}, n_c={p.n_c}, m={p.m}, s={p.s}, L={p.L}: P* = n_c·m^L = {p.p_star}, Pmax = {p.pmax}; "
        f"{scale.n_test} test inputs disjoint from training; {seeds} seed(s) (each seed draws new rules and data); "
        f"chance = {1 / p.n_c:.3f}. Mean ± std over seeds.",
        "",
        "| rule | evaluation | " + " | ".join(f"P = {m:g}·P*" for m in mults) + " | smallest P/P* ≥ 95 % |",
        "| --- | --- | " + " | ".join("---" for _ in mults) + " | --- |",
    ]
    for rule in rules:
        curve = mean_curve(rows, rule)
        cells = {m: f"{a:.3f} ± {s:.3f}" for m, a, s in curve}
        t = threshold_multiple(curve)
        lines.append(
            f"| {rule} | {evaluation[rule]} | "
            + " | ".join(cells.get(m, "–") for m in mults)
            + f" | {'> ' + format(mults[-1], 'g') if t is None else format(t, 'g')} |"
        )
    lines += [
        "",
        "## Linear probes of every rule (top layer / all layers concatenated), mean over seeds",
        "",
        "| rule | " + " | ".join(f"P = {m:g}·P*" for m in mults) + " |",
        "| --- | " + " | ".join("---" for _ in mults) + " |",
    ]
    top_name = str(p.L)
    for rule in rules:
        cells = []
        for m in mults:
            pair = []
            for name in (top_name, "all"):
                xs = [
                    r["test_acc"]
                    for r in probes
                    if r["rule"] == rule and r["P_over_Pstar"] == m and r["layers"] == name
                ]
                pair.append(f"{sum(xs) / len(xs):.3f}" if xs else "–")
            cells.append(" / ".join(pair))
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Published claim (Delrocq et al. 2026, abstract): layer-wise SSL rules are as data-efficient as",
        "supervised backprop; direct-feedback rules fail. Cagnetta et al. 2024: BP learns at P ≈ P*.",
        "",
        "## Layer k against the hidden features of its own level L − k, at the largest P",
        "",
        "Synonymic sensitivity S = E‖h(x) − h(x')‖² / E‖h(x) − h(y)‖² (x' = x with every production rule below "
        "level L − k resampled, y another input; 0 = invariant to synonyms) and correlation ratio η² (fraction "
        "of the layer's variance explained by the level-(L − k) feature of each position; 1 = a function of it). "
        "Each cell: S / η².",
        "",
        "| rule | " + " | ".join(f"layer {k}" for k in range(1, p.L + 1)) + " |",
        "| --- | " + " | ".join("---" for _ in range(p.L)) + " |",
    ]
    top = max(mults)

    def mean_at(rows_: list[dict], rule: str, k: int, value: str) -> str:
        xs = [
            r[value]
            for r in rows_
            if r["rule"] == rule and r["P_over_Pstar"] == top and r["layer"] == k and r["level"] == p.L - k
        ]
        return f"{sum(xs) / len(xs):.3f}" if xs else "–"

    for rule in rules:
        cells = [
            f"{mean_at(sens, rule, k, 'sensitivity')} / {mean_at(corr, rule, k, 'eta2')}" for k in range(1, p.L + 1)
        ]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, scale: Scale, rows: list[dict[str, Any]], sens: list[dict], corr: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = scale.params
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for rule in rules:
        curve = mean_curve(rows, rule)
        xs, ys, es = zip(*curve)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=rule)
    ax.axhline(THRESHOLD, color="grey", ls="--", lw=0.8)
    ax.axhline(1 / p.n_c, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"P / P*   (P* = n_c·m^L = {p.p_star})")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"RHM v={p.v} n_c={p.n_c} m={p.m} s={p.s} L={p.L}")
    ax.legend()
    save_figure(fig, out / "accuracy_vs_P.png", dpi=120)

    per_layer_figure(out / "sensitivity.png", p, rules, sens, "sensitivity", "synonymic sensitivity")
    per_layer_figure(out / "correlation.png", p, rules, corr, "eta2", "η² with the layer's own level")


def per_layer_figure(path: Path, p: RHMParams, rules: list[str], rows: list[dict], value: str, ylabel: str) -> None:
    """One panel per layer k: ``value`` at level L − k (the level the layer's positions stand for) vs P/P*."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, p.L, figsize=(4 * p.L, 3.5), sharey=True)
    for k, ax in enumerate(axes, start=1):
        for rule in rules:
            pts: dict[float, list[float]] = {}
            for r in rows:
                if r["rule"] == rule and r["layer"] == k and r["level"] == p.L - k:
                    pts.setdefault(r["P_over_Pstar"], []).append(r[value])
            xs = sorted(pts)
            ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=rule)
        ax.set_xscale("log", base=2)
        ax.set_title(f"layer {k}: level {p.L - k}")
        ax.set_xlabel("P / P*")
    axes[0].set_ylabel(ylabel)
    axes[-1].legend()
    save_figure(fig, path, dpi=120)


INT_KEYS, FLOAT_KEYS = ("P", "seed", "layer", "level"), ("P_over_Pstar", "test_acc", "sensitivity", "eta2")


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in INT_KEYS:
            if k in r:
                r[k] = int(r[k])
        for k in FLOAT_KEYS:
            if k in r:
                r[k] = float(r[k])
    return rows


def render(out: Path, scale: str) -> None:
    """(Re)write ``results.md`` and the figures from the CSV files in ``out``."""
    sc = SCALES[scale]
    rows, sens, corr, probes = (read_csv(out / f"{n}.csv") for n in ("results", "sensitivity", "correlation", "probes"))
    write_markdown(out, scale, sc, rows, sens, corr, probes)
    plot(out, sc, rows, sens, corr)


@experiment(
    "rhm",
    "Random Hierarchy Model: BP vs DFA vs layer-wise SSL, test accuracy vs P/P*, synonym sensitivity",
)
def run(out: Path, scale: str, seeds: int) -> None:
    sc = SCALES[scale]
    n_seeds = max(seeds, sc.seeds)
    workers = worker_count(2)
    jobs = make_jobs(sc, n_seeds, RECIPES)
    print(f"rhm: {len(jobs)} runs on {workers} worker process(es)", file=sys.stderr, flush=True)
    run_jobs(jobs, workers, cache=out / "jobs", on_result=lambda results: write_all(out, scale, results))


def write_all(out: Path, scale: str, results: list[dict[str, Any]]) -> None:
    """The CSV files of the finished runs, then ``results.md`` and the figures from them."""
    write_csv(out / "results.csv", [r["result"] for r in results])
    write_csv(out / "probes.csv", [x for r in results for x in r["probes"]])
    write_csv(out / "sensitivity.csv", [x for r in results for x in r["sensitivity"]])
    write_csv(out / "correlation.csv", [x for r in results for x in r["correlation"]])
    render(out, scale)
