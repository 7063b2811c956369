"""Cutting the cost of CLAPP++'s dense ``B`` matrices: speed of the variants against BP-CLAPP++.

With 2D spatial dependence each layer's ``B`` is dense over channel × space: 8192² and 4096² entries at
full width (about 200M parameters, ten times the encoder). Variants measured here, in one process,
alternating rounds, each against ``bp-clapp++`` (the last row):

* ``clapp++`` — dense fp32 ``B``, fused AdamW (the default; fused is about 3× faster than foreach on
  CPU for these tensors);
* ``clapp++ rank R`` — factored ``B = U V`` of rank R (``objective.B_rank``), R = 512 × width: 8× fewer
  parameters in the 4096-dim layers, 16× in the 8192-dim ones. Accuracy: ``benchmarks/b_rank_probe.py``;
* ``clapp++ step_each_layer`` — the optimizer of each layer stepped right after its backward (same
  result; the ``B`` gradient is freed at once, so it is still in cache when the optimizer reads it);
* ``clapp++nospatial`` — no spatial dependence (``B`` on globally pooled activity: 1024² at most).

    python benchmarks/b_cost.py [--rounds 5] [--threads 1] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from localssl.bench import Spec, append_results, format_table, run_bench
from localssl.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["train.device=cpu", *args.overrides]
    width = load_config("clapp++", overrides).model.width
    rank = max(1, round(512 * width))
    specs = [
        Spec("clapp++", "clapp++"),
        Spec(f"clapp++ rank {rank}", "clapp++", (f"objective.B_rank={rank}",)),
        Spec("clapp++ step_each_layer", "clapp++", ("train.step_each_layer=true",)),
        Spec("clapp++nospatial", "clapp++nospatial"),
        Spec("bp-clapp++", "bp-clapp++"),
    ]
    out = run_bench(specs, overrides, rounds=args.rounds, steps=args.steps, memory_repeats=1)
    print(format_table(out))
    if not args.no_record:
        cmd = "python benchmarks/b_cost.py " + " ".join(
            [f"--rounds {args.rounds}", *([f"--threads {args.threads}"] if args.threads else []), *args.overrides]
        )
        append_results(Path(args.results), cmd, out, note="Variants of the B cost; ratios against bp-clapp++.")


if __name__ == "__main__":
    main()
