"""Where a CLAPP++ training step spends its time: convolutions, the ``B`` matrices, the optimizer.

A script by nature (a profiler breakdown of operators, not a number a command reports). Measures: self CPU
time per operator category of one training step, on random CIFAR-10-shaped images (no data needed), on
the machine it runs on. Latest number (2026-11-22, 2-core x86_64 CPU, shared, 1 thread, full width,
batch 32; benchmarks/RESULTS.md, "Scale and speed"): ``clapp++`` 39.6 s per step, of which convolutions
63 %, the ``B`` products 22 %, the optimizer 3 %; ``bp-clapp++`` 55.9 s, convolutions 92 %.

For each preset (default ``clapp++`` and ``bp-clapp++``; same net, batch, random inputs of the
dataset's shape) this profiles ``--steps`` training steps after a warm-up with ``torch.profiler`` and
sums the *self* CPU time of every operator into categories by name (conv forward/backward; ReLU and
max-pool; matrix products = the ``B`` maps; the fused AdamW kernel; the rest of the objective and
autograd bookkeeping). The presets alternate step by step so that machine load hits them alike. It
then times the optimizer alone on the ``B`` parameters and on the encoder parameters (gradients set,
alternating, median of ``--opt-reps``), which splits the optimizer share between them.

    python benchmarks/clapp_breakdown.py [--presets clapp++ bp-clapp++] [--steps 2] [key=value ...]

Prints a table and appends it to benchmarks/RESULTS.md (``--results``; ``--no-record`` to skip).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from localssl.bench import Runner, Spec, append_entry, machine_description
from localssl.utils import make_optimizer

CATEGORIES = (
    ("conv", ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::_slow_conv2d")),
    ("relu + max-pool", ("aten::clamp_min", "aten::relu", "aten::threshold_backward", "aten::max_pool2d")),
    ("B (matmul)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("aten::_fused_adamw", "aten::_fused_adam", "aten::_foreach", "aten::_fused_sgd")),
)


def category(name: str) -> str:
    for cat, prefixes in CATEGORIES:
        if name.startswith(prefixes):
            return cat
    return "other (objective, views of tensors, autograd)"


def profile_steps(runners: list[Runner], steps: int) -> dict[str, dict[str, float]]:
    """Seconds per step and category, for each runner (steps alternate between runners)."""
    totals: dict[str, dict[str, float]] = {r.spec.label: defaultdict(float) for r in runners}
    wall: dict[str, list[float]] = {r.spec.label: [] for r in runners}
    for k in range(steps):
        for r in runners if k % 2 == 0 else runners[::-1]:
            vb = r.views()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                r.trainer.optimize(vb)
                wall[r.spec.label].append(time.perf_counter() - t0)
            for e in prof.key_averages():
                totals[r.spec.label][category(e.key)] += e.self_cpu_time_total / 1e6
    out = {}
    for lab, cats in totals.items():
        row = {c: v / steps for c, v in cats.items()}
        row["wall"] = statistics.median(wall[lab])
        out[lab] = row
    return out


def optimizer_split(runner: Runner, reps: int) -> dict[str, float]:
    """Median seconds of one optimizer step on the objectives' parameters (B) and on the encoder's."""
    t = runner.trainer.cfg.train
    enc = [p for p in runner.trainer.comp.encoder.parameters() if p.requires_grad]
    obj = [p for p in runner.trainer.comp.rule.parameters() if p.requires_grad]
    opts = {}
    for name, params in (("optimizer: B", obj), ("optimizer: encoder", enc)):
        if params:
            clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
            for c in clones:
                c.grad = torch.randn_like(c) * 1e-3
            opts[name] = make_optimizer(t.optimizer, clones, t.lr, float(t.weight_decay), t.momentum)
            opts[name].step()  # creates the state
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(reps):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--presets", nargs="+", default=["clapp++", "bp-clapp++"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--opt-reps", type=int, default=3)
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["train.device=cpu", *args.overrides]
    runners = [Runner(Spec(p, p), overrides) for p in args.presets]
    for r in runners:
        r.counted_step()  # warm-up: optimizer state, kernel caches
    rows = profile_steps(runners, args.steps)
    for r in runners:
        rows[r.spec.label].update(optimizer_split(r, args.opt_reps))
    cats = [c for c, _ in CATEGORIES] + ["other (objective, views of tensors, autograd)"]
    lines = [
        "| preset | step (wall) | " + " | ".join(cats) + " | optimizer alone: B | optimizer alone: encoder |",
        "| --- | ---: | " + " | ".join("---:" for _ in cats) + " | ---: | ---: |",
    ]
    for lab, row in rows.items():
        prof_total = sum(row.get(c, 0.0) for c in cats)
        cells = [f"{row.get(c, 0.0):.2f} s ({100 * row.get(c, 0.0) / prof_total:.0f}%)" for c in cats]
        opt = [f"{row[k]:.2f} s" if k in row else "–" for k in ("optimizer: B", "optimizer: encoder")]
        lines.append(f"| {lab} | {row['wall']:.2f} s | " + " | ".join(cells) + " | " + " | ".join(opt) + " |")
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        r0 = runners[0]
        threads = ["--threads", str(args.threads)] if args.threads else []
        cmd = "python benchmarks/clapp_breakdown.py " + " ".join(
            [*threads, "--presets", *args.presets, "--steps", str(args.steps), *args.overrides]
        )
        entry = (
            f"\n### {datetime.date.today().isoformat()} — step-time breakdown: `{cmd}`\n\n"
            f"Machine: {machine_description()}, shared with other jobs (absolute seconds are inflated by the load; "
            f"compare shares and presets). {r0.cfg.data.name} input {r0.info.image_size} px, batch {r0.batch_size}, "
            f"width {getattr(r0.cfg.model, 'width', None)}; self CPU time per category from torch.profiler, "
            f"mean of {args.steps} profiled steps per preset (alternating); percentages of the profiled total.\n\n"
            f"{table}\n"
        )
        append_entry(Path(args.results), entry)


if __name__ == "__main__":
    main()
