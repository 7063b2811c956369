"""Does a factored (low-rank) ``B`` keep CLAPP++'s accuracy? A short linear-probe comparison.

Pretrains ``clapp++`` with the dense ``B`` and with ``objective.B_rank=R`` (R = 512 × width, the rank
whose speed ``benchmarks/b_cost.py`` measures) on the same data, seed and budget, plus ``random``
(untrained encoder) as the floor, then linear-probes each run. Writes ``results.csv`` (long form:
variant, seed, metric, value) into ``--out`` and appends a table to benchmarks/RESULTS.md. The budget
is small (CPU): it tells whether the factored ``B`` loses accuracy *at this scale*, not at 300 epochs.

    python benchmarks/b_rank_probe.py [--seeds 1] [--out runs/b_rank_probe] [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import statistics
from pathlib import Path

from localssl.bench import append_to_section, machine_description
from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain

BUDGET = [
    "data.name=cifar10",
    "data.train_subset=5000",
    "model.width=0.125",
    "train.epochs=4",
    "train.progress=false",
    "probe.epochs=20",
    "probe.train_subset=10000",
    "probe.val_size=1000",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default="runs/b_rank_probe")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    base = [*BUDGET, *args.overrides, f"out_dir={out}"]
    width = load_config("clapp++", base).model.width
    rank = max(1, round(512 * width))
    variants = {"dense B": ("clapp++", []), f"rank {rank} B": ("clapp++", [f"objective.B_rank={rank}"])}
    variants["random init"] = ("random", [])
    rows = []
    for seed in range(args.seeds):
        for name, (preset, extra) in variants.items():
            run = pretrain(load_config(preset, [*base, *extra, f"train.seed={seed}", f"probe.seed={seed}"]))
            res = probe(run)
            for metric in ("test_acc", "val_acc"):
                rows.append({"variant": name, "seed": seed, "metric": metric, "value": res[metric]})
            print(f"{name} seed {seed}: test {res['test_acc']:.4f} val {res['val_acc']:.4f}  ({run})")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["variant", "seed", "metric", "value"])
        w.writeheader()
        w.writerows(rows)
    lines = ["| variant | test acc (mean over seeds) | per seed |", "| --- | ---: | --- |"]
    for name in variants:
        accs = [r["value"] for r in rows if r["variant"] == name and r["metric"] == "test_acc"]
        lines.append(f"| {name} | {100 * statistics.mean(accs):.2f} | {', '.join(f'{100 * a:.2f}' for a in accs)} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        cmd = "python benchmarks/b_rank_probe.py " + " ".join([f"--seeds {args.seeds}", *args.overrides])
        append_to_section(
            Path(args.results),
            f"\n### {datetime.date.today().isoformat()} — low-rank B accuracy: `{cmd}`\n\n"
            f"Machine: {machine_description()}, shared. Budget: {' '.join(BUDGET + args.overrides)}; "
            f"linear probe test accuracy (%).\n\n{table}\n",
        )


if __name__ == "__main__":
    main()
