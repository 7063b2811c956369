"""CLAPP++ Table A3 (BP vs incremental predictive coding on CIFAR-10) at a stated scale; prints the table
and appends it to benchmarks/RESULTS.md under "## Predictive coding and DFA (CLAPP++ Table A3)".

    LOCALSSL_DATA=/path/to/data python benchmarks/tableA3.py --scale cpu --out results/tableA3/cpu

Finished runs under OUT/runs are reused, so an interrupted invocation continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from localssl.experiments.tableA3 import run

SECTION = "## Predictive coding and DFA (CLAPP++ Table A3)"


def append(results_md: Path, out: Path, scale: str, seeds: int) -> None:
    body = (out / "results.md").read_text().split("\n", 2)[2]  # drop the title line
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[1]
    entry = (
        f"\n### {time.strftime('%Y-%m-%d')} — {cores}-core CPU, shared (load average {load:.0f} at the end); "
        f"torch {torch.__version__}, Python "
        f"{platform.python_version()}\n`localssl reproduce tableA3 --scale {scale} --seeds {seeds}` "
        f"(or `python benchmarks/tableA3.py --scale {scale}`)\n{body}"
    )
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n"
    results_md.write_text(text.rstrip("\n") + "\n" + entry)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="cpu", choices=("smoke", "cpu", "paper"))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args()
    out = Path(args.out or f"results/tableA3/{args.scale}")
    out.mkdir(parents=True, exist_ok=True)
    run(out, args.scale, args.seeds)
    append(Path(args.results), out, args.scale, args.seeds)


if __name__ == "__main__":
    main()
