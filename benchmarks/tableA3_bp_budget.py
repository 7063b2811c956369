"""Does backprop learn at a CPU budget? The BP rows of CLAPP++ Table A3 against random init.

Table A3 compares incremental predictive coding with backprop; that comparison only means something
where backprop itself has moved the encoder's top layer above its random initialisation. This script
trains the BP rows (cross-entropy, the CLAPP objective, the LPL objective) and probes random init at
one budget, with the protocol of ``localssl reproduce tableA3`` (the same jobs, pretraining that never
sees the probe's validation images, a linear probe on the top layer chosen on held-out train images),
so that a ``--scale`` for the PC grid can be chosen where BP is above the floor.

    python benchmarks/tableA3_bp_budget.py --width 0.125 --subset 5000 --epochs 4

Prints a Markdown table and appends it to ``benchmarks/RESULTS.md`` (unless ``--no-append``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from record import append_section

from localssl.experiments.tableA3 import OBJECTIVES, Job, run_job

BATCH = {"cross_entropy": 64, "clapp": 32, "lpl": 128}  # as in the tableA3 cpu protocol


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--subset", type=int, default=5000, help="pretraining images")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/tableA3-bp-budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()

    common = (
        "data.name=cifar10",
        *([f"data.root={a.data_root}"] if a.data_root else []),
        f"model.width={a.width}",
        f"data.train_subset={a.subset}",
        f"train.epochs={a.epochs}",
        "train.lr=1e-3",
        "train.optimizer=adam",
        "train.weight_decay=0.0",
        "probe.layers=6",
        "probe.train_subset=10000",
        "probe.val_size=2000",
        f"train.seed={a.seed}",
    )
    jobs = [Job("random", "random", None, None, a.seed, "random", common)]
    for obj, (preset, _) in OBJECTIVES.items():
        over = (*common, f"train.batch_size={BATCH[obj]}", "rule.name=backprop")
        jobs.append(Job(obj, "BP", None, None, a.seed, preset, over))
    runs = Path(a.out)
    runs.mkdir(parents=True, exist_ok=True)
    lines = [
        "| top objective, trained by backprop | optimizer steps | probe test acc (%) | val acc (%) | last-epoch loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    for job in jobs:
        r = run_job(job, runs, threads=a.threads)
        label = "random init (floor)" if job.rule == "random" else OBJECTIVES[job.objective][1]
        summary = runs / job.run_name / "summary.json"
        steps = json.loads(summary.read_text())["global_step"] if summary.exists() else 0
        loss = "–" if r.get("final_loss") is None else f"{r['final_loss']:.3f}"
        lines.append(f"| {label} | {steps} | {r['test_acc']:.2f} | {r['val_acc']:.2f} | {loss} |")
        print(lines[-1], flush=True)
    if a.no_append:
        return
    append_section(
        "Table A3 at a CPU budget: does backprop learn?",
        a.threads,
        f"VGG-6 width {a.width}, {a.subset} CIFAR-10 train images × {a.epochs} epochs (Adam 1e-3, no weight decay; "
        f"batch 64 / 32 / 128 images for cross-entropy / CLAPP / LPL), seed {a.seed}; linear probe on the top layer "
        "(10 000 labelled train images, 2000 held out for validation, full test set), as `localssl reproduce tableA3`.",
        lines,
    )


if __name__ == "__main__":
    main()
