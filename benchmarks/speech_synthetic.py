"""CPC, CLAPP (BPTT) and CLAPP (e-prop) on the synthetic speech task vs random init (CPU).

Each preset is pretrained and frame-probed in its own subprocess (peak resident memory is its own) at one
stated budget: ``synthetic-speech`` (8 classes: silence + 7 formant vowels, 1 s utterances, labels per
10 ms), GIM's audio encoder at width 1/16 (32 conv channels, 16 GRU units), 0.4 s windows, the same
epochs and learning rate for all; linear probe on the GRU output (layer 6) and on the last conv layer.

    python benchmarks/speech_synthetic.py [--epochs 6] [--subset 256] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {  # label: (preset, extra overrides)
    "random init": ("cpc-audio", ["rule.name=frozen", "train.epochs=0"]),
    "CPC": ("cpc-audio", []),
    "CLAPP (BPTT)": ("clapp-audio", []),
    "CLAPP (e-prop)": ("clapp-audio-eprop", []),
}
PUBLISHED = {"random init": 27.7, "CPC": 64.3, "CLAPP (BPTT)": 61.7, "CLAPP (e-prop)": 58.6}

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
gru, conv = probe(run, ["probe.layers=6"]), probe(run, ["probe.layers=5"])
summary = json.loads((run / "summary.json").read_text())
rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
loss = [sum(float(v) for k, v in r.items() if k.startswith("loss")) for r in rows]
print(json.dumps({"gru": gru["test_acc"], "conv": conv["test_acc"], "seq_per_s": summary["images_per_s"],
                  "loss_first": loss[0] if loss else None, "loss_last": loss[-1] if loss else None,
                  "pretrain_s": t1 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--subset", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()
    out_dir = tempfile.mkdtemp(prefix="speech-bench-")
    common = [
        "data.name=synthetic-speech",
        f"data.train_subset={args.subset}",
        "model.width=0.0625",
        "views.window=6400",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        "train.progress=false",
        "probe.epochs=20",
        "probe.val_size=64",
        f"out_dir={out_dir}",
    ]
    torch_version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    rows = {}
    for label, (preset, extra) in RUNS.items():
        proc = subprocess.run([sys.executable, "-c", CHILD, preset, *common, *extra], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
        rows[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(label, rows[label], flush=True)
    cmd = f"python benchmarks/speech_synthetic.py --epochs {args.epochs} --subset {args.subset} --lr {args.lr}"
    lines = [
        f"\n### {time.strftime('%Y-%m-%d')} — {os.cpu_count()}-core {platform.machine()} CPU, torch {torch_version}, "
        f"1 thread per run; load average {os.getloadavg()[0]:.1f} at the end",
        f"`{cmd}` — synthetic-speech (8 classes, chance 12.5%), {args.subset} pretraining utterances, "
        f"{args.epochs} epochs, batch 8, Adam {args.lr}, GIM audio encoder at width 1/16, 6400-sample windows, "
        "12 prediction steps; frame-level linear probe (20 epochs, 64 held-out utterances, 128 test utterances).",
        "",
        "| method | preset | loss first → last epoch | probe GRU (layer 6) (%) | probe last conv (layer 5) (%) "
        "| sequences/s | peak RSS (MB) | published LibriSpeech (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, (preset, extra) in RUNS.items():
        r = rows[label]
        loss = "—" if r["loss_first"] is None else f"{r['loss_first']:.3f} → {r['loss_last']:.3f}"
        sps = "—" if r["seq_per_s"] is None else f"{r['seq_per_s']:.1f}"
        name = f"`{preset}`" + (" " + " ".join(f"`{e}`" for e in extra) if extra else "")
        lines.append(
            f"| {label} | {name} | {loss} | {100 * r['gru']:.1f} | {100 * r['conv']:.1f} | {sps} | "
            f"{r['peak_rss_mb']:.0f} | {PUBLISHED[label]} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    path = Path(args.out)
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    if "## Speech: CPC and CLAPP on the synthetic task (CPU budget)" not in body:
        body += "\n## Speech: CPC and CLAPP on the synthetic task (CPU budget)\n"
    path.write_text(body + text)


if __name__ == "__main__":
    main()
