"""Numbers for the theory / gradient-alignment figures (CLAPP++ Fig. 2, A1, 3A, 3B, 4B, 4C).

Runs the registered experiments at a scale (default ``cpu``), times each with the CPU time of this
process (wall time on a shared machine is not comparable), and runs one ablation: Fig. 3B with the
paper text's type-2 loss ``softplus(s⁻ − s⁺)`` instead of the official code's type-1 margin-1 loss.
Prints a Markdown section and, with ``--append``, adds it to benchmarks/RESULTS.md.

    LOCALSSL_DATA=/path/to/data python benchmarks/theory_alignment.py --figs fig2,fig3a --ablation --append
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import torch

from localssl.experiments import load_all

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_figure(name: str, scale: str, seeds: int, out: Path) -> tuple[str, float, float]:
    out.mkdir(parents=True, exist_ok=True)
    c0, w0 = cpu_seconds(), time.perf_counter()
    load_all()[name].run(out, scale, seeds)
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - w0
    md = (out / "results.md").read_text()
    return md, cpu, wall


def loss_type_ablation(seeds: int) -> str:
    """Fig. 3B at cpu scale, local vs DFB, with the type-1 margin-1 loss and the type-2 loss."""
    from localssl.experiments.alignment_figs import FIG3B_OBJECTIVE, fig3b_setting, mean_below_top, measure_fig3b
    from localssl.experiments.theory_figs import mnist_images

    setting, width = fig3b_setting("cpu", None)
    train, test = mnist_images("train"), mnist_images("test", 32 * setting.test_batches)
    type2 = dict(FIG3B_OBJECTIVE, loss_type=2, margin=0.0)
    lines = [
        "| loss | seed | local | DFB | DFB − local |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, obj in (
        ("type 1, softplus(1 − s⁺) + softplus(1 + s⁻) (official code)", FIG3B_OBJECTIVE),
        ("type 2, softplus(s⁻ − s⁺) (paper text)", type2),
    ):
        for seed in range(seeds):
            rows = measure_fig3b(setting, width, [seed], train, test, rules=["local", "dfb"], objective=obj)
            m = {g: mean_below_top(rows, "rule", g, 6, setting.steps) for g in ("local", "dfb")}
            lines.append(f"| {label} | {seed} | {m['local']:.3f} | {m['dfb']:.3f} | {m['dfb'] - m['local']:+.3f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figs", default="fig2,figA1,fig3a,fig4b,fig3b,fig4c")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--ablation", action="store_true", help="also run the Fig. 3B loss-type ablation")
    p.add_argument("--ablation-seeds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "bench-theory"))
    p.add_argument("--append", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = p.parse_args()
    load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    parts = [
        f"### {time.strftime('%Y-%m-%d')} — 2-core CPU, shared (load average {load} at the end); "
        f"torch {torch.__version__}, Python {platform.python_version()}, 1 thread per simulation",
        f"`python benchmarks/theory_alignment.py --figs {args.figs} --scale {args.scale} --seeds {args.seeds}"
        + (f" --ablation --ablation-seeds {args.ablation_seeds}" if args.ablation else "")
        + "`",
    ]
    timings = ["| figure | CPU time (s) | wall (s, contended) |", "| --- | --- | --- |"]
    for name in [f for f in args.figs.split(",") if f]:
        md, cpu, wall = run_figure(name, args.scale, args.seeds, Path(args.out) / name)
        timings.append(f"| `{name}` | {cpu:.0f} | {wall:.0f} |")
        body = md.split("\n", 2)[2] if md.startswith("#") else md
        parts.append(f"#### `localssl reproduce {name} --scale {args.scale} --seeds {args.seeds}`\n\n{body.strip()}")
        print(timings[-1], flush=True)
    parts.append("#### Time per command\n\n" + "\n".join(timings))
    if args.ablation:
        parts.append(
            "#### Fig. 3B: which loss gives the published ordering\n\n"
            "Same cpu-scale setting as `fig3b` (width 128, 1200 steps, Adam 5e-5), mean cosine over layers 1–5 "
            "after the last step.\n\n" + loss_type_ablation(args.ablation_seeds)
        )
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.append:
        results = ROOT / "benchmarks" / "RESULTS.md"
        old = results.read_text() if results.exists() else "# Benchmark results\n"
        header = "## Theory and gradient alignment (CLAPP++ Fig. 2, A1, 3A, 3B, 4B, 4C)"
        if header not in old:
            old = old.rstrip() + f"\n\n{header}\n"
        results.write_text(old.rstrip() + "\n\n" + text)


if __name__ == "__main__":
    main()
