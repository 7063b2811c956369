"""Cost of the online probe (issue 17): training-step time with and without it, one process, alternating.

For each preset, a :class:`~localssl.train.Trainer` at the given width runs rounds of ``--steps`` training
steps; inside every step the rule's step (views + gradients + optimizer) and the online read-outs' step
are timed separately on the same batch, so the ratio is measured under identical load. The held-out
scoring (every ``train.online_probe_every`` steps and at epoch ends) is timed once and amortised.

    OMP_NUM_THREADS=1 python benchmarks/online_probe_cost.py --width 0.25 --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from localssl.config import load_config
from localssl.train import Trainer, load_pretrain_data


def measure(preset: str, width: float, steps: int, rounds: int, holdout: int, every: int) -> dict[str, float]:
    cfg = load_config(
        preset,
        [
            f"model.width={width}",
            "train.online_probe=true",
            f"train.online_probe_holdout={holdout}",
            "data.train_subset=5000",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, Path(tmp), data=load_pretrain_data(cfg))
        perm = torch.randperm(len(tr.images), generator=torch.Generator().manual_seed(0))
        bs = cfg.train.batch_size
        rule_t, probe_t = [], []
        k = 0
        for _ in range(rounds):
            r = p = 0.0
            for _ in range(steps):
                idx = perm[(k * bs) % (len(perm) - bs) :][:bs]
                k += 1
                t0 = time.perf_counter()
                tr.optimize(tr.make_views(idx))
                t1 = time.perf_counter()
                tr.online_probe_step(idx)
                t2 = time.perf_counter()
                r, p = r + t1 - t0, p + t2 - t1
            rule_t.append(r / steps)
            probe_t.append(p / steps)
        t0 = time.perf_counter()
        tr.online_probe_accuracy()
        score = time.perf_counter() - t0
    rule, probe = statistics.median(rule_t), statistics.median(probe_t)
    return {
        "rule_step_ms": 1e3 * rule,
        "probe_step_ms": 1e3 * probe,
        "score_s": score,
        "ratio_step": (rule + probe) / rule,
        "ratio_with_scoring": (rule + probe + score / every) / rule,
        "rounds_ratio": [round((a + b) / a, 3) for a, b in zip(rule_t, probe_t)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["clapp++", "bp-clapp++"])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--holdout", type=int, default=1000)
    ap.add_argument("--every", type=int, default=500, help="train.online_probe_every the scoring is amortised over")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, torch threads {torch.get_num_threads()}, width {args.width}, batch 32")
    print(
        "| preset | rule step (ms) | probe step (ms) | step ratio (median) | rounds | scoring 1000 held-out (s) "
        f"| ratio incl. scoring every {args.every} steps |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        m = measure(preset, args.width, args.steps, args.rounds, args.holdout, args.every)
        print(
            f"| {preset} | {m['rule_step_ms']:.1f} | {m['probe_step_ms']:.1f} | {m['ratio_step']:.3f} | "
            f"{m['rounds_ratio']} | {m['score_s']:.2f} | {m['ratio_with_scoring']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
