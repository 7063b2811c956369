"""How far apart are the honest probe (the default) and the paper's (``probe.protocol=paper``)?

For each preset (default: ``random`` = VGG-6 at init, and ``clapp++`` after ``--epochs`` epochs on
``--subset`` CIFAR-10 train images), one run is pretrained and probed with both protocols on the same
encoder:

- honest: ``--probe-subset`` labelled images besides ``--val-size`` held out for validation, fixed features z-scored, 30
  epochs, batch 256, the best-validation epoch tested once;
- paper: ``--probe-subset`` labelled images (no validation split), a fresh crop + flip of every image each
  epoch, no z-scoring, batch 32, ``--paper-epochs`` epochs (the paper: 300); the last epoch's test accuracy
  and, selected on the test set, the best epoch's.

    OMP_NUM_THREADS=1 python benchmarks/probe_protocols.py --data-root /work/shared/data
    OMP_NUM_THREADS=1 python benchmarks/probe_protocols.py --dataset cifar10-mini --subset 4000 \
        --probe-subset 4000 --val-size 800 --paper-epochs 8

Prints a Markdown table and writes every result to ``--out``/probe_protocols.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["random", "clapp++"])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--subset", type=int, default=10000, help="pretraining images")
    p.add_argument("--epochs", type=int, default=1, help="pretraining epochs (presets that train)")
    p.add_argument("--probe-subset", type=int, default=10000, help="labelled train images for either probe")
    p.add_argument("--val-size", type=int, default=5000, help="the honest probe's held-out images")
    p.add_argument("--paper-epochs", type=int, default=10)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/probe-protocols")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    rows, results = [], {}
    for preset in a.presets:
        overrides = [
            f"data.name={a.dataset}",
            f"model.width={a.width}",
            f"data.train_subset={a.subset}",
            "train.progress=false",
            "train.device=cpu",
            f"out_dir={a.out}",
        ]
        if preset != "random":
            overrides.append(f"train.epochs={a.epochs}")
        if a.data_root:
            overrides.append(f"data.root={a.data_root}")
        run = pretrain(load_config(preset, overrides))
        t0 = time.process_time()
        honest = probe(
            run, [f"probe.train_subset={a.probe_subset}", f"probe.val_size={a.val_size}", "probe.progress=false"]
        )
        t1 = time.process_time()
        paper = probe(
            run,
            [
                "probe.protocol=paper",
                f"probe.epochs={a.paper_epochs}",
                f"probe.train_subset={a.probe_subset}",
                "probe.progress=false",
            ],
        )
        t2 = time.process_time()
        results[preset] = {"run": str(run), "honest": honest, "paper": paper, "cpu_s": [t1 - t0, t2 - t1]}
        rows.append(
            f"| `{preset}` | {100 * honest['test_acc']:.2f} | {100 * honest['val_acc']:.2f} "
            f"| {100 * paper['test_acc']:.2f} | {100 * paper['best_test_acc_selected_on_test']:.2f} "
            f"(epoch {paper['best_epoch_selected_on_test']}) | {t1 - t0:.0f} / {t2 - t1:.0f} |"
        )
        print(rows[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_protocols.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=1))
    print(
        "| preset | honest test (%) | honest val (%) | paper last epoch (%) | paper best epoch, selected on test (%) "
        "| probe CPU s honest / paper |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
