"""Layer streaming vs the summed loss for rules with a top-layer reference (CLAPP++DFB, CLAPP++both).

DFB and both need the top layer's activity before the first layer's loss. Two ways (``rules/local.py``):

* streaming (``rule.streaming=true``): one extra forward pass without graph to get the top activity,
  then forward → loss → backward layer by layer (one layer's activations alive at a time);
* summed (``rule.streaming=false``): one forward keeping every layer's graph, one backward of the summed
  loss (no extra forward; every layer's activations alive at once).

Both give the same gradients (tests/test_train_step_each_layer.py, tests/test_rules.py). This script
measures the price of each with ``localssl bench`` machinery (same process, alternating rounds):
images/s and peak activation memory of streaming relative to summed, and ``same`` (streaming, no extra
forward) for reference.

    python benchmarks/streaming_tradeoff.py [--rounds 5] [--threads 1] [key=value ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from localssl.bench import Spec, append_results, format_table, run_bench


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
    for preset in ("clapp++dfb", "clapp++both"):
        specs = [
            Spec(f"{preset} streaming", preset, ("rule.streaming=true",)),
            Spec("clapp++ (same, streaming)", "clapp++", ("rule.streaming=true",)),
            Spec(f"{preset} summed", preset, ("rule.streaming=false",)),
        ]
        out = run_bench(specs, overrides, rounds=args.rounds, steps=args.steps, memory_repeats=1)
        print(format_table(out))
        if not args.no_record:
            cmd = "python benchmarks/streaming_tradeoff.py " + " ".join(
                [f"--rounds {args.rounds}", *([f"--threads {args.threads}"] if args.threads else []), *args.overrides]
            )
            append_results(
                Path(args.results),
                cmd,
                out,
                note=f"Streaming vs summed loss for {preset}: ratios are against the summed path (last row).",
            )


if __name__ == "__main__":
    main()
