"""Speed and memory of every image preset at one budget: one ``localssl bench`` process per preset.

Each preset is built on the same encoder (VGG-6 at ``--width``), the same batch (``--batch-size``
source images; SimCLR presets make two views of each, patch-grid presets a grid of patches) and the
same CIFAR-10 input shape, fed random uint8 images (no data needed), and timed by
:func:`localssl.bench.run_bench` in its own process, so that the process's memory high-water mark
belongs to that preset alone. Reported per preset (see ``localssl/bench.py`` for the definitions):

* ``cpu img/s`` — source images per second of *process CPU time* of one optimisation step (views made
  beforehand); with one thread this is the work of the step, robust to a shared machine;
* ``img/s`` — the same per second of wall-clock time (depends on the load of the machine);
* ``GFLOP/step`` — forward + backward FLOPs counted by ``torch.utils.flop_counter``;
* ``peak MB`` — parameters + optimizer state + input + the allocator's peak rise during a step;
* ``activation MB`` — the peak rise during forward + backward alone (saved activations, gradients of
  activations, temporaries).

    python benchmarks/zoo_speed_memory.py --width 0.25                 # every image preset
    python benchmarks/zoo_speed_memory.py --presets clapp++ bp-clapp++ --no-append

Appends a Markdown table to ``benchmarks/RESULTS.md`` (unless ``--no-append``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from record import append_section

ROOT = Path(__file__).resolve().parents[1]


def image_presets() -> list[str]:
    """Every trained preset whose default dataset holds images (audio presets and the never-trained
    ``frozen`` baselines, which have no training step to time, are left out)."""
    from localssl.config import available_presets, load_config
    from localssl.data import dataset_info

    cfgs = {p: load_config(p) for p in available_presets()}
    return [p for p, c in cfgs.items() if dataset_info(c.data.name).kind != "sequence" and c.rule.name != "frozen"]


def bench_one(preset: str, overrides: list[str], rounds: int, steps: int, threads: int) -> dict:
    """``localssl bench PRESET --vs none`` in a child process; its JSON row for ``preset``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "localssl", "bench", preset, *overrides, "--vs", "none"]
        cmd += ["--rounds", str(rounds), "--steps", str(steps), "--threads", str(threads), "--out", str(out)]
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " / ".join(tail)}
        data = json.loads(out.read_text())
    return next(iter(data["presets"].values()))


def fmt(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: dict[str, dict]) -> list[str]:
    lines = [
        "| preset | cpu img/s | img/s | GFLOP/step | peak MB | activation MB | parameters MB | optimizer state MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for preset, r in rows.items():
        if "error" in r:
            lines.append(f"| `{preset}` | failed: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| `{preset}` | {fmt(r, 'cpu_images_per_s', 1)} | {fmt(r, 'images_per_s', 1)} | "
            f"{fmt(r, 'gflop_per_step', 2)} | {fmt(r, 'peak_mem_mb', 0)} | {fmt(r, 'peak_activation_mb', 0)} | "
            f"{fmt(r, 'param_mb', 1)} | {fmt(r, 'optimizer_state_mb', 1)} |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--presets", nargs="+", default=None, help="default: every image preset")
    p.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    a = p.parse_args()

    presets = a.presets or image_presets()
    overrides = ["data.name=cifar10", f"model.width={a.width}", f"train.batch_size={a.batch_size}", "train.device=cpu"]
    rows: dict[str, dict] = {}
    for preset in presets:
        rows[preset] = bench_one(preset, overrides, a.rounds, a.steps, a.threads)
        print(
            preset,
            json.dumps({k: rows[preset].get(k) for k in ("cpu_images_per_s", "peak_mem_mb", "error")}),
            flush=True,
        )

    lines = table(rows)
    print("\n".join(lines))
    if a.no_append:
        return
    append_section(
        "Every image preset: speed and memory of one training step",
        a.threads,
        f"VGG-6 width {a.width}, {a.batch_size} CIFAR-10-shaped source images per step (random uint8 pixels), each "
        f"preset in its own process; {a.rounds} timed rounds of {a.steps} steps after one warm-up step, median; "
        "memory measured once per preset after the timing.",
        lines,
    )


if __name__ == "__main__":
    main()
