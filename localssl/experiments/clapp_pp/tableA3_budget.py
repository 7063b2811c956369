"""Table A3 at a CPU budget (issue 5): does backprop learn there, and where does iPC's first update point?

* ``localssl reproduce tableA3-bp``: the BP rows of CLAPP++ Table A3 (cross-entropy, the CLAPP objective, the
  LPL objective, each trained end to end) and random init, with the protocol of ``localssl reproduce
  tableA3`` (the same jobs, pretraining that never sees the probe's validation images, a linear probe on the
  top layer chosen on held-out train images), so that a ``--scale`` for the PC grid can be chosen where BP is
  above its floor.
* ``localssl reproduce tableA3-alignment``: for each objective and each point of the paper's PC grid, the
  cosine and relative norm of iPC's weight update (the sum of its ``T`` weight gradients, its update to first
  order in the learning rate) against the end-to-end backprop gradient of the same top objective on the same
  batch (:func:`localssl.evaluate.alignment.gradient_alignment`), per layer, at VGG-6's random
  initialisation, on views of the CIFAR-10 test images shipped with the package (no dataset needed).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
from pathlib import Path

from localssl.experiments import experiment
from localssl.experiments.clapp_pp.tableA3 import GRID_ALPHA, GRID_T, OBJECTIVES, Job, run_jobs
from localssl.experiments.engine import Cell, run_cells
from localssl.registry import ConfigError

BATCH = {"cross_entropy": 64, "clapp": 32, "lpl": 128}  # images per batch, as in the tableA3 cpu protocol


@dataclasses.dataclass(frozen=True)
class Budget:
    protocol: str
    common: tuple[str, ...]


BP_SCALES = {
    "smoke": Budget(
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl, VGG-6 at width 1/32, "
        "256 pretraining images, 1 epoch; probe: 200 train / 100 validation images, 2 epochs.",
        (
            "data.name=cifar10-mini",
            "model.width=0.03125",
            "data.train_subset=256",
            "train.epochs=1",
            "probe.layers=6",
            "probe.epochs=2",
            "probe.train_subset=200",
            "probe.val_size=100",
        ),
    ),
    "cpu": Budget(
        "VGG-6 at width 1/8, 5000 CIFAR-10 train images (disjoint from the probe's validation images) × 4 epochs, "
        "Adam 1e-3 without weight decay, batch 64 / 32 / 128 images for cross-entropy / CLAPP / LPL; linear probe "
        "on the top layer (10 000 labelled train images, 2000 held out for validation, the full test set).",
        (
            "data.name=cifar10",
            "model.width=0.125",
            "data.train_subset=5000",
            "train.epochs=4",
            "train.lr=1e-3",
            "train.optimizer=adam",
            "train.weight_decay=0.0",
            "probe.layers=6",
            "probe.train_subset=10000",
            "probe.val_size=2000",
        ),
    ),
}


@experiment(
    "tableA3-bp",
    "Table A3's backprop rows vs random init at a CPU budget: does BP learn there?",
    tuple(BP_SCALES),
)
def run_bp(out: Path, scale: str, seeds: int) -> None:
    budget = BP_SCALES[scale]
    jobs = []
    for seed in range(seeds):
        common = (*budget.common, f"train.seed={seed}")
        jobs.append(Job("random", "random", None, None, seed, "random", common))
        for obj, (preset, _) in OBJECTIVES.items():
            over = (*common, f"train.batch_size={BATCH[obj]}", "rule.name=backprop")
            jobs.append(Job(obj, "BP", None, None, seed, preset, over))
    runs = Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    results = run_jobs(jobs, runs, workers=1, study="tableA3-bp")
    rows = []
    for job, r in zip(jobs, results):
        summary = runs / job.run_name / "summary.json"
        steps = json.loads(summary.read_text())["global_step"] if summary.exists() else 0
        label = "random init (floor)" if job.rule == "random" else OBJECTIVES[job.objective][1]
        rows.append({"row": label, "seed": job.seed, "steps": steps, **{k: r.get(k) for k in ("test_acc", "val_acc")}})
        rows[-1]["final_loss"] = r.get("final_loss")
    with open(Path(out) / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"# Table A3 at a CPU budget: does backprop learn? (scale `{scale}`)",
        "",
        f"`localssl reproduce tableA3-bp --scale {scale} --seeds {seeds}`. {budget.protocol}",
        "",
        "| top objective, trained by backprop | seed | optimizer steps | probe test acc (%) | val acc (%) "
        "| last-epoch loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        loss = "–" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
        lines.append(f"| {r['row']} | {r['seed']} | {r['steps']} | {r['test_acc']:.2f} | {r['val_acc']:.2f} | {loss} |")
    (Path(out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


ALIGN_SCALES = {
    "smoke": {"width": 0.03125, "batches": 1, "grid_T": (1, 2), "grid_alpha": (0.1,)},
    "cpu": {"width": 0.125, "batches": 4, "grid_T": GRID_T, "grid_alpha": GRID_ALPHA},
}


def measure(objective: str, T: int, alpha: float, width: float, n_batches: int) -> list:
    """Per layer, iPC's summed update against BP's gradient on ``n_batches`` batches (mean over batches)."""
    import torch

    from localssl.build import build
    from localssl.config import load_config
    from localssl.data import load_split
    from localssl.evaluate.alignment import gradient_alignment
    from localssl.train import resolve_config

    bs = BATCH[objective]
    overrides = ["data.name=cifar10-mini", f"model.width={width}", f"train.batch_size={bs}"]
    cfg = resolve_config(load_config(OBJECTIVES[objective][0], [*overrides, f"rule.T={T}", f"rule.alpha={alpha}"]))
    comp = build(cfg, torch.device("cpu"))
    data = load_split("cifar10-mini", "test")
    if len(data) < n_batches * bs:
        raise ValueError(f"{n_batches} batches need {n_batches * bs} test images; cifar10-mini has {len(data)}")
    torch.manual_seed(0)
    batches = [
        comp.views(data.images[i * bs : (i + 1) * bs], data.labels[i * bs : (i + 1) * bs]) for i in range(n_batches)
    ]
    return gradient_alignment(comp.encoder, comp.rule, batches)


def _measure(point: tuple[str, int, float], width: float, n_batches: int) -> list:
    """One grid point of the alignment table: a cell of the engine."""
    objective, T, alpha = point
    return measure(objective, T, alpha, width, n_batches)


def _cell(value: float, digits: str) -> str:
    return "–" if math.isnan(value) else format(value, digits)


@experiment(
    "tableA3-alignment",
    "iPC's weight update vs backprop's at init, per objective, grid point and layer",
    tuple(ALIGN_SCALES),
)
def run_alignment(out: Path, scale: str, seeds: int) -> None:
    if seeds != 1:
        raise ConfigError("tableA3-alignment measures the encoder at its seed-0 initialisation; leave out --seeds")
    s = ALIGN_SCALES[scale]
    rows, lines = (
        [],
        [
            "| objective | T | α | cosine with BP, layers 1 → 6 | ‖Δ_PC‖ / ‖Δ_BP‖, layers 1 → 6 |",
            "| --- | --- | --- | --- | --- |",
        ],
    )
    points = [(o, T, a) for o in OBJECTIVES for T in s["grid_T"] for a in s["grid_alpha"]]

    def measured(i: int, layers: list) -> None:  # one line per grid point, as it ends
        objective, T, alpha = points[i]
        rows.extend(
            {"objective": objective, "T": T, "alpha": alpha, "layer": k + 1, "cosine": r.cosine, "rel_norm": r.rel_norm}
            for k, r in enumerate(layers)
        )
        cos = " ".join(_cell(r.cosine, "+.3f") for r in layers)
        rel = " ".join(_cell(r.rel_norm, ".1e") for r in layers)
        lines.append(f"| {OBJECTIVES[objective][1]} | {T} | {alpha:g} | {cos} | {rel} |")
        print(lines[-1], flush=True)

    fn = functools.partial(_measure, width=s["width"], n_batches=s["batches"])
    cells = [Cell(f"{o}-T{T}-a{a:g}", f"{o}, T={T}, α={a:g}", fn, (o, T, a)) for o, T, a in points]
    run_cells("tableA3-alignment", cells, on_result=measured)
    with open(Path(out) / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = [
        f"# Predictive coding (Table A3 objectives): iPC update vs backprop at initialisation (scale `{scale}`)",
        "",
        f"`localssl reproduce tableA3-alignment --scale {scale}`. VGG-6 width {s['width']} at its random "
        f"initialisation (seed 0); {s['batches']} batch(es) of cifar10-mini test images per grid point (batch 64 / 32 "
        '/ 128 images for cross-entropy / CLAPP / LPL). "–": the PC update of that layer is exactly 0 (with T = 1 no '
        "prediction error has reached any encoder layer yet).",
        "",
    ]
    (Path(out) / "results.md").write_text("\n".join([*head, *lines]) + "\n")
