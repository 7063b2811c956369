"""CLAPP (2021) / CPC / GIM presets vs random init on a small CIFAR-10 budget (CPU).

Every preset is pretrained and linearly probed in its own subprocess (so that its peak resident memory
is its own), at one stated budget: the shipped CIFAR-10 subset (``cifar10-mini``), VGG-6 at width 1/8,
patch grid of 3×3 patches (32 px crop of the 32 px image, 16 px patches, stride 8; one prediction step),
the same epochs, subset and probe for all. Throughput under a shared CPU is only comparable between
presets measured alternately in one process: the ``rel_speed`` column is that ratio (vs ``cpc``).

    python benchmarks/cpc_cifar10.py [--epochs 5] [--subset 1024] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ("random-patch", "cpc", "hinge-cpc", "gim", "clapp2021", "clapp2021-asym")
PUBLISHED_STL10 = {
    "random-patch": 21.8,
    "cpc": 81.1,
    "hinge-cpc": 80.3,
    "gim": 78.3,
    "clapp2021": 74.0,
    "clapp2021-asym": 74.1,
}

CHILD = r"""
import csv, json, resource, sys, time, torch
torch.set_num_threads(1)
from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain
preset, overrides = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
run = pretrain(load_config(preset, overrides))
t1 = time.perf_counter()
res = probe(run)
summary = json.loads((run / "summary.json").read_text())
rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
loss = [sum(float(v) for k, v in r.items() if k.startswith("loss")) for r in rows]
print(json.dumps({"test_acc": res["test_acc"], "val_acc": res["val_acc"], "images_per_s": summary["images_per_s"],
                  "loss_first": loss[0] if loss else None, "loss_last": loss[-1] if loss else None,
                  "pretrain_s": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SPEED = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from localssl.build import build
from localssl.config import load_config
presets, overrides = sys.argv[1].split(","), sys.argv[2:]
comps = {p: build(load_config(p, overrides)) for p in presets}
opt = {p: torch.optim.Adam(list(c.encoder.parameters()) + list(c.rule.parameters()), lr=2e-4) for p, c in comps.items()}
images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
labels = torch.zeros(32, dtype=torch.long)
times = {p: [] for p in presets}
for _ in range(4):  # alternate presets so that they see the same machine load
    for p, c in comps.items():
        t = time.perf_counter()
        for _ in range(3):
            opt[p].zero_grad()
            c.rule.step(c.encoder, c.views(images, labels))
            opt[p].step()
        times[p].append(3 * 32 / (time.perf_counter() - t))
print(json.dumps({p: sorted(v)[len(v) // 2] for p, v in times.items()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--subset", type=int, default=1024)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="cpc-bench-")
    common = [
        "data.name=cifar10-mini",
        f"data.train_subset={args.subset}",
        f"model.width={args.width}",
        "views.crop_size=32",
        "views.resize=null",
        "objective.steps=1",
        f"train.epochs={args.epochs}",
        "train.batch_size=32",
        "train.progress=false",
        "probe.epochs=30",
        "probe.val_size=500",
        f"out_dir={out_dir}",
    ]
    rows = {}
    for preset in PRESETS:
        proc = subprocess.run([sys.executable, "-c", CHILD, preset, *common], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{preset} failed:\n{proc.stderr[-3000:]}")
        rows[preset] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(preset, rows[preset], flush=True)
    trained = [p for p in PRESETS if p != "random-patch"]
    proc = subprocess.run([sys.executable, "-c", SPEED, ",".join(trained), *common], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"speed phase failed:\n{proc.stderr[-3000:]}")
    speed = json.loads(proc.stdout.strip().splitlines()[-1])
    cmd = f"python benchmarks/cpc_cifar10.py --epochs {args.epochs} --subset {args.subset} --width {args.width}"
    lines = [
        f"\n### {time.strftime('%Y-%m-%d')} — 2-core CPU, shared (load ≫ 2); torch {_torch()}, "
        f"Python {platform.python_version()}",
        f"`{cmd}` — cifar10-mini, {args.subset} pretraining images, {args.epochs} epochs, batch 32, VGG-6 width "
        f"{args.width}, grey 32 px image → 3×3 grid of 16 px patches (stride 8), 1 prediction step; linear probe "
        "on layer 6 averaged over the grid (30 epochs, 500 held-out validation images, 1000 test images).",
        "",
        "| preset | loss first → last epoch | probe test acc (%) | val acc (%) | images/s (contended) "
        "| rel. speed vs cpc (alternating, one process) | peak RSS (MB) | published STL-10 (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in PRESETS:
        r = rows[p]
        loss = "—" if r["loss_first"] is None else f"{r['loss_first']:.3f} → {r['loss_last']:.3f}"
        ips = "—" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"
        rel = f"{speed[p] / speed['cpc']:.2f}" if p in speed else "—"
        lines.append(
            f"| `{p}` | {loss} | {100 * r['test_acc']:.1f} | {100 * r['val_acc']:.1f} | {ips} | {rel} | "
            f"{r['peak_rss_mb']:.0f} | {PUBLISHED_STL10[p]} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    path = Path(args.out)
    if not path.exists():
        path.write_text("# Benchmark results\n")
    body = path.read_text()
    if "## CLAPP (2021), CPC, GIM on CIFAR-10 (CPU budget)" not in body:
        body += "\n## CLAPP (2021), CPC, GIM on CIFAR-10 (CPU budget)\n"
    path.write_text(body + text)


def _torch() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
