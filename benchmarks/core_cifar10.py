"""Core presets on the full CIFAR-10 JPEG copy at a CPU budget: probe accuracy per epoch and speed.

For each preset: pretrain one epoch at a time (``--resume``), linear-probe after every epoch, record
the first epoch at which the preset beats random init. Then the training throughput of ``clapp++``
vs ``bp-clapp++`` measured in one process, alternating, after warm-up. Appends a section to
``benchmarks/RESULTS.md``.

    python benchmarks/core_cifar10.py --epochs 3 --width 0.25           # the issue's protocol
    python benchmarks/core_cifar10.py --epochs 1 --subset 2000 --dry    # quick check, no RESULTS entry
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from localssl.build import build
from localssl.checkpoint import load_checkpoint
from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain, resume

PRESETS = ["clapp++", "bp-clapp++", "clapp++nospatial", "clapp++dfb", "clapp++both", "bp-infonce"]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def run_preset(preset: str, args: argparse.Namespace, out: Path) -> list[dict]:
    """Pretrain ``preset`` epoch by epoch (reusing finished epochs) and probe after each."""
    run_dir = out / preset
    overrides = [
        f"model.width={args.width}",
        f"train.batch_size={args.batch}",
        f"train.seed={args.seed}",
        f"probe.epochs={args.probe_epochs}",
        "train.progress=false",
        f"out_dir={out}",
        *args.override,
    ]
    if args.subset:
        overrides.append(f"data.train_subset={args.subset}")
    if args.probe_subset:
        overrides.append(f"probe.train_subset={args.probe_subset}")
    rows: list[dict] = []
    epochs = 0 if preset == "random" else args.epochs
    if args.report_only:  # the epochs already probed, nothing trained
        files = [run_dir / f"probe_epoch{e}.json" for e in (range(1, epochs + 1) if epochs else [0])]
        return [json.loads(f.read_text()) for f in files if f.exists()]
    for epoch in range(1, epochs + 1) if epochs else [0]:
        probe_file = run_dir / f"probe_epoch{epoch}.json"
        if probe_file.exists():
            rows.append(json.loads(probe_file.read_text()))
            continue
        ckpt = run_dir / "checkpoint.pt"
        if not ckpt.exists():
            pretrain(load_config(preset, [*overrides, f"train.epochs={epoch}"]), run_dir=run_dir)
        elif load_checkpoint(ckpt)["epoch"] < epoch:
            resume(run_dir, [f"train.epochs={epoch}"])
        res = probe(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        row = {
            "preset": preset,
            "epoch": epoch,
            "test_acc": res["test_acc"],
            "val_acc": res["val_acc"],
            "train_images_per_s": summary.get("images_per_s"),
        }
        probe_file.write_text(json.dumps(row))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def throughput(presets: list[str], width: float, batch: int, rounds: int, steps: int) -> dict[str, float]:
    """Images/s of a full training step (views + rule.step + optimizer), alternating presets."""
    from localssl.utils import make_optimizer

    comps, opts = {}, {}
    for p in presets:
        comps[p] = build(load_config(p, [f"model.width={width}"]))
        params = list(comps[p].rule.parameters_to_train(comps[p].encoder))
        opts[p] = make_optimizer("adamw", params, 2e-4, 0.0)
    imgs = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    times: dict[str, list[float]] = {p: [] for p in presets}
    for r in range(rounds + 1):
        for p in presets:
            c, opt = comps[p], opts[p]
            t0 = time.perf_counter()
            for _ in range(steps):
                vb = c.views(imgs)
                opt.zero_grad(set_to_none=True)
                c.rule.step(c.encoder, vb)
                opt.step()
            if r > 0:  # round 0 is warm-up
                times[p].append(steps * batch / (time.perf_counter() - t0))
    return {p: statistics.median(v) for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", type=int, default=None, help="pretraining images (default: all 50000)")
    ap.add_argument("--probe-epochs", type=int, default=30)
    ap.add_argument("--probe-subset", type=int, default=None)
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--override", nargs="*", default=[], help="extra key=value for every preset")
    ap.add_argument("--out", default="benchmarks/runs/core_cifar10")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--dry", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--report-only", action="store_true", help="report the epochs already probed; train nothing")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    table = {"random": run_preset("random", args, out)}
    for preset in args.presets:
        table[preset] = run_preset(preset, args, out)
    rand = table["random"][0]["test_acc"]
    speed = {} if args.no_throughput else throughput(["clapp++", "bp-clapp++"], args.width, args.batch, 5, 10)

    lines = [
        f"\n## Core presets on CIFAR-10 (JPEG copy) — {time.strftime('%Y-%m-%d')}\n",
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} threads (shared with other work); torch "
        f"{torch.__version__}.",
        f"Protocol: VGG-6 width {args.width}, batch {args.batch} images, AdamW lr per preset, "
        f"{args.subset or 50000} pretraining images, {args.epochs} epochs, seed {args.seed}; linear probe on all 6 "
        f"layers (pooled 4-4-4-2-2-1), {args.probe_epochs} epochs Adam 1e-3, 5000 train images held out for "
        "validation, test accuracy at the best-validation epoch.",
        f"Command: `python benchmarks/core_cifar10.py --epochs {args.epochs} --width {args.width}"
        + (f" --subset {args.subset}" if args.subset else "")
        + (f" --override {' '.join(args.override)}" if args.override else "")
        + "`\n",
        "| preset | " + " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1)) + " | first epoch > random |",
        "| --- | " + " | ".join("---" for _ in range(args.epochs)) + " | --- |",
        f"| random init | {100 * rand:.2f} (no training) |" + " |" * args.epochs,
    ]
    for preset in args.presets:
        accs = [r["test_acc"] for r in table[preset]]
        first = next((i + 1 for i, a in enumerate(accs) if a > rand), None)
        cells = [f"{100 * a:.2f}" for a in accs] + ["not run"] * (args.epochs - len(accs))
        verdict = first or ("not within budget" if len(accs) == args.epochs else f"not in {len(accs)} epoch(s) run")
        lines.append(f"| {preset} | " + " | ".join(cells) + f" | {verdict} |")
    if speed:
        ratio = speed["clapp++"] / speed["bp-clapp++"]
        lines.append(
            f"\nThroughput (training step incl. views and optimizer, batch {args.batch}, width {args.width}, "
            f"alternating, median of 5 rounds): clapp++ {speed['clapp++']:.1f} img/s, bp-clapp++ "
            f"{speed['bp-clapp++']:.1f} img/s, ratio {ratio:.2f}."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.dry:
        with open(RESULTS, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
