"""Lower precision for CLAPP++'s ``B``: is a bf16 ``B`` matmul cheaper on this machine?

Times one ``B`` map's forward ``B r`` and weight gradient (rows = 64 views, as at batch 32) for the
full-width dims (8192 and 4096) three ways, alternating, median of ``--reps`` (process CPU seconds):

* fp32 — what ``clapp++`` does;
* bf16 autocast — fp32 master weights cast to bf16 every step (what ``train.precision=bf16`` does);
* bf16 stored — ``B`` kept in bf16 (no cast; the optimizer would then update bf16 weights, whose
  8-bit mantissa rounds away Adam steps below half an ulp — an accuracy risk this script does not
  measure).

    python benchmarks/b_precision.py [--threads 1] [--reps 5]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

import torch

from localssl.bench import append_to_section, machine_description

ROWS = 64


def one_step(weight: torch.Tensor, r: torch.Tensor, z: torch.Tensor, autocast: bool) -> float:
    weight.grad = None
    t0 = time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        pred = r @ weight.t()
    (pred.float() * z).sum().backward()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = ["| dim | fp32 | bf16 autocast | bf16 stored |", "| ---: | ---: | ---: | ---: |"]
    for d in (8192, 4096):
        g = torch.Generator().manual_seed(0)
        w32 = torch.nn.Parameter(torch.randn(d, d, generator=g) / d**0.5)
        w16 = torch.nn.Parameter(w32.detach().bfloat16())
        r, z = torch.randn(ROWS, d, generator=g), torch.randn(ROWS, d, generator=g)
        cases = {"fp32": (w32, r, False), "bf16 autocast": (w32, r, True), "bf16 stored": (w16, r.bfloat16(), False)}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for w, x, cast in cases.values():
            one_step(w, x, z, cast)  # warm-up
        for _ in range(args.reps):
            for k, (w, x, cast) in cases.items():
                times[k].append(one_step(w, x, z, cast))
        med = {k: statistics.median(v) for k, v in times.items()}
        lines.append(f"| {d} | " + " | ".join(f"{med[k]:.3f} s" for k in cases) + " |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        cmd = "python benchmarks/b_precision.py " + " ".join(
            [*([f"--threads {args.threads}"] if args.threads else []), f"--reps {args.reps}"]
        )
        append_to_section(
            Path(args.results),
            f"\n### {datetime.date.today().isoformat()} — B precision: `{cmd}`\n\n"
            f"Machine: {machine_description()}, shared. One B map, forward + weight gradient, {ROWS} rows; "
            f"median process CPU seconds of {args.reps} alternating repetitions.\n\n{table}\n",
        )


if __name__ == "__main__":
    main()
