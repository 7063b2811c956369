"""Which RHM settings show the published contrast (layer-wise SSL ≈ BP, direct feedback fails)?

One axis at a time away from the cpu-scale setting (v=8, n_c=8, m=4, s=2, L=3; width 128, Adam,
default init): depth L, multiplicity m, initial weight scale, optimiser. For each setting, the recipes
``bp``, ``dfa`` and ``clapp`` of ``localssl reproduce rhm`` are trained at P = MULT·P* (one seed) and
tested on held-out inputs (bp/dfa: their read-out; clapp: linear probe on all frozen layers).

    python benchmarks/rhm_settings.py [--mult 4] [--rules bp,dfa,clapp] [--settings base,L2,...]

Prints a Markdown table and appends it to benchmarks/RESULTS.md (section "Random Hierarchy Model").
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from localssl.data.rhm import RHMParams
from localssl.experiments.rhm import RECIPES, Job, run_jobs

BASE = RHMParams(v=8, n_c=8, m=4, s=2, L=3)
SETTINGS = {
    "base": (BASE, {}),
    "L2": (RHMParams(v=8, n_c=8, m=4, s=2, L=2), {}),
    "L4": (RHMParams(v=8, n_c=8, m=4, s=2, L=4), {}),
    "m6": (RHMParams(v=8, n_c=8, m=6, s=2, L=3), {}),
    "init0.1": (BASE, {"model": {"init_scale": 0.1}}),
    "sgd": (BASE, {"train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}}),
}
N_TEST = 4096


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mult", type=float, default=4.0, help="P / P*")
    ap.add_argument("--rules", default="bp,dfa,clapp")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args()
    rules, settings = args.rules.split(","), args.settings.split(",")
    jobs, skipped = [], set()
    for name in settings:
        params, change = SETTINGS[name]
        for rule in rules:
            recipe = RECIPES[rule]
            for key, value in change.items():
                recipe = recipe.replace(**{key: value})
            n_train = round(args.mult * params.p_star)
            if params.pmax - n_train < 256:  # e.g. L2 at 4·P*: P* = 128 but Pmax = 512, no room for a test set
                skipped.add(name)
                continue
            jobs.append(Job(recipe, params, n_train, min(N_TEST, params.pmax - n_train), seed=0))
    results = run_jobs(jobs, args.workers)
    keys = [(s, r) for s in settings if s not in skipped for r in rules]
    acc = {key: res["result"]["test_acc"] for key, res in zip(keys, results)}
    lines = [
        f"### RHM settings at P = {args.mult:g}·P* (one seed)",
        "",
        f"`python benchmarks/rhm_settings.py --mult {args.mult:g}`",
        "",
        f"{datetime.date.today()}, {os.cpu_count()}-core CPU, {args.workers} worker(s). Test accuracy on up to "
        f"{N_TEST} held-out inputs (fewer where Pmax − P is smaller) "
        "(supervised rules: their read-out; self-supervised: linear probe on all frozen layers).",
        "",
        "| setting | RHM (v, n_c, m, s, L) | P* | " + " | ".join(rules) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in rules) + " |",
    ]
    for name in settings:
        p, change = SETTINGS[name]
        lines.append(
            f"| {name} {change or ''} | ({p.v}, {p.n_c}, {p.m}, {p.s}, {p.L}) | {p.p_star} | "
            + " | ".join("P ≥ Pmax − 256: not run" if name in skipped else f"{acc[(name, r)]:.3f}" for r in rules)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.results, "a") as fh:
        fh.write("\n" + text)
    print(f"appended to {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
