"""``localssl reproduce probe-protocols``: how far apart are the honest probe (the default) and the paper's?

For each preset (``random`` = VGG-6 at init, and ``clapp++`` after a short pretraining) one run is
pretrained and probed with both protocols on the same encoder:

- honest: labelled images besides a held-out validation split, fixed features z-scored, 30 epochs, batch
  256, the best-validation epoch tested once;
- paper (``probe.protocol=paper``): the same labelled images (no validation split), a fresh crop + flip of
  every image each epoch, no z-scoring, batch 32, a few epochs (the paper: 300); the last epoch's test
  accuracy and, selected on the test set, the best epoch's.

Writes ``results.json`` (every probe result), ``results.csv`` and ``results.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import time
from pathlib import Path

from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, run_cells


@dataclasses.dataclass(frozen=True)
class Budget:
    protocol: str
    pretrain: tuple[str, ...]  # every preset
    epochs: int  # pretraining epochs of the presets that train
    probe_subset: int
    val_size: int
    paper_epochs: int
    presets: tuple[str, ...] = ("random", "clapp++")


SCALES = {
    "smoke": Budget(
        "pipeline check only, not a measurement: 64 images of the CIFAR-10 subset shipped with localssl, VGG-6 at "
        "width 1/16, 1 epoch; probes on 200 labelled images (honest: 100 held out), 1 paper epoch.",
        ("data.name=cifar10-mini", "model.width=0.0625", "data.train_subset=64"),
        epochs=1,
        probe_subset=200,
        val_size=100,
        paper_epochs=1,
    ),
    "cpu": Budget(
        "the CIFAR-10 subset shipped with localssl (4000 train / 1000 test images), VGG-6 at width 1/8 (4096 pooled "
        "features from all six layers), `random` (the encoder at init) and `clapp++` after one epoch on the 4000 "
        "images (125 steps of batch 32). Honest: 3200 labelled images (800 held out for validation), 30 epochs of "
        "Adam 1e-3 at batch 256. Paper: all 4000 labelled images, fresh RandomResizedCrop + flip every epoch "
        "through the frozen encoder, Adam 1e-3 at batch 32, 8 epochs instead of 300.",
        ("data.name=cifar10-mini", "model.width=0.125", "data.train_subset=4000"),
        epochs=1,
        probe_subset=4000,
        val_size=800,
        paper_epochs=8,
    ),
}


@experiment(
    "probe-protocols",
    "the honest linear probe (default) vs the paper's protocol on the same encoders",
    tuple(SCALES),
)
def run(out: Path, scale: str, seeds: int) -> None:
    b = SCALES[scale]
    items = [(preset, seed) for seed in range(seeds) for preset in b.presets]
    runs = Path(out) / "runs"
    job = functools.partial(_job, scale=scale, runs=runs)
    cells = [Cell(f"{p}-s{s}", f"{p} seed {s}", job, (p, s), run_dir=runs / f"{p}-s{s}") for p, s in items]
    done = run_cells("probe-protocols", cells, worker_count(1))
    results = {f"{preset}-s{seed}": result for (preset, seed), (result, _) in zip(items, done)}
    rows = [row for _, row in done]
    (Path(out) / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    with open(Path(out) / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"# Probe protocols: the honest probe vs the paper's (scale `{scale}`)",
        "",
        f"`localssl reproduce probe-protocols --scale {scale} --seeds {seeds}`. {b.protocol}",
        "",
        "| encoder | seed | honest: test (val) (%) | paper: last epoch (%) | paper: best epoch, selected on test (%) "
        "| probe CPU s: honest / paper |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `{r['preset']}` | {r['seed']} | {r['honest_test']:.2f} ({r['honest_val']:.2f}) | {r['paper_last']:.2f} "
            f"| {r['paper_best_on_test']:.2f} (epoch {r['paper_best_epoch']}) | {r['honest_cpu_s']:.0f} / "
            f"{r['paper_cpu_s']:.0f} |"
        )
    (Path(out) / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _job(item: tuple[str, int], scale: str, runs: Path) -> tuple[dict, dict]:
    """One encoder (``item``: preset, seed): pretrain it unless its checkpoint exists, probe it both ways; a cell of
    the engine (this process, a worker process or a SLURM job), its result held in memory only."""
    from localssl.config import load_config
    from localssl.evaluate.probe import probe
    from localssl.train import pretrain

    preset, seed = item
    b = SCALES[scale]
    overrides = [*b.pretrain, "train.progress=false", "train.device=cpu", f"train.seed={seed}"]
    overrides.append(f"train.epochs={0 if preset == 'random' else b.epochs}")
    run_dir = runs / f"{preset}-s{seed}"
    if not (run_dir / "checkpoint.pt").exists():
        pretrain(load_config(preset, overrides), run_dir)
    t0 = time.process_time()
    honest = probe(run_dir, [f"probe.train_subset={b.probe_subset}", f"probe.val_size={b.val_size}"])
    t1 = time.process_time()
    paper_overrides = ["probe.protocol=paper", f"probe.epochs={b.paper_epochs}"]
    paper = probe(run_dir, [*paper_overrides, f"probe.train_subset={b.probe_subset}"])
    t2 = time.process_time()
    row = {
        "preset": preset,
        "seed": seed,
        "honest_test": honest["test_acc_pct"],
        "honest_val": honest["val_acc_pct"],
        "paper_last": paper["test_acc_pct"],
        "paper_best_on_test": paper["best_test_acc_selected_on_test_pct"],
        "paper_best_epoch": paper["best_epoch_selected_on_test"],
        "honest_cpu_s": t1 - t0,
        "paper_cpu_s": t2 - t1,
    }
    return {"honest": honest, "paper": paper, "cpu_s": [t1 - t0, t2 - t1]}, row
