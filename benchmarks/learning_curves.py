"""CPU learning curves with the online probe (issue 17 item 7): CLAPP++ variants vs backprop vs random init.

``launch`` starts one ``localssl pretrain`` per preset (full CIFAR-10, width 1/4, batch 32, online
probe scored every 250 steps on 1000 held-out train images), one thread each, in the background;
``report`` reads their ``steps.csv``/``metrics.csv`` (while they run or after) and writes
``curves.csv``, ``curves.png`` and ``results.md`` into ``--results``.

    python benchmarks/learning_curves.py launch --runs /tmp/curves          # starts 5 runs, returns
    python benchmarks/learning_curves.py report --runs /tmp/curves --results results/learning_curves/cpu
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

PRESETS = ["clapp++", "clapp++both", "bp-clapp++", "clapp++nospatial", "random"]
COMMON = [
    "model.width=0.25",
    "train.online_probe=true",
    "train.online_probe_every=250",
    "train.log_every=50",
    "train.progress=false",
]
BATCH = 32


def launch(runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for preset in PRESETS:
        epochs = 3 if preset == "random" else 20  # random init trains only its read-outs (cheap)
        cmd = [sys.executable, "-m", "localssl.cli", "pretrain", preset, *COMMON, f"train.epochs={epochs}"]
        cmd.append(f"out_dir={runs}")
        with open(runs / f"{preset}.log", "w") as log:
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        print(" ".join(cmd))


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _run_dir(runs: Path, preset: str) -> Path | None:
    found = sorted(d for d in runs.glob(f"{preset}-2*") if d.is_dir() and d.name[len(preset) + 1 :][:1].isdigit())
    return found[-1] if found else None


def collect(runs: Path) -> list[dict[str, object]]:
    """One row per held-out scoring: preset, epoch, step, images seen, accuracy of every read-out (%)."""
    out: list[dict[str, object]] = []
    for preset in PRESETS:
        run = _run_dir(runs, preset)
        if run is None:
            continue
        scored = [r for r in _rows(run / "steps.csv") if r.get("probe_acc_all")]
        scored += [r for r in _rows(run / "metrics.csv") if r.get("probe_acc_all")]
        for r in sorted(scored, key=lambda r: int(r["step"])):
            accs = {k: float(v) for k, v in r.items() if k.startswith("probe_acc_")}
            out.append(
                {
                    "preset": preset,
                    "epoch": int(r["epoch"]),
                    "step": int(r["step"]),
                    "images_seen": int(r["step"]) * BATCH,
                    **accs,
                }
            )
    return out


def common_step(rows: list[dict[str, object]]) -> int:
    """The last step every run has been scored at (runs compared at equal training)."""
    last = {}
    for r in rows:
        last[r["preset"]] = max(last.get(r["preset"], 0), int(r["step"]))
    return min(last.values())


def at_step(rows: list[dict[str, object]], preset: str, step: int) -> dict[str, object] | None:
    """``preset``'s last scoring at or before ``step``."""
    mine = [r for r in rows if r["preset"] == preset and int(r["step"]) <= step]
    return mine[-1] if mine else None


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({k for r in rows for k in r if str(k).startswith("probe_acc_l")}, key=lambda k: int(k[11:]))
    step = common_step(rows)
    trained = [int(r["step"]) for r in rows if r["preset"] != "random"]
    xmax = 1.05 * max(trained or [step]) * BATCH / 1000
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, preset in enumerate(PRESETS):
        mine = [r for r in rows if r["preset"] == preset and r["images_seen"] / 1000 <= xmax]
        if not mine:
            continue
        style = {"color": "0.4", "ls": "--"} if preset == "random" else {"color": f"C{i}"}
        label = "random init (read-outs only)" if preset == "random" else preset
        xs = [r["images_seen"] / 1000 for r in mine]
        axes[0].plot(xs, [r["probe_acc_all"] for r in mine], label=label, **style)
        at = at_step(rows, preset, step)
        if at is not None:
            axes[1].plot(range(1, len(layers) + 1), [at[k] for k in layers], marker="o", label=label, **style)
    axes[0].axhline(10, color="0.7", lw=0.8, ls=":", label="chance")
    axes[0].set(xlabel="pretraining images seen (thousands)", ylabel="held-out accuracy (%)")
    axes[0].set_title("online probe, all layers concatenated", fontsize=10)
    axes[1].set(xlabel="layer", ylabel="held-out accuracy (%)")
    axes[1].set_title(f"online probe of each layer at step {step} ({step * BATCH // 1000}k images)", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: Path, results: Path) -> None:
    rows = collect(runs)
    if not rows:
        raise SystemExit(f"no online-probe rows under {runs}: launch first")
    results.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (results / "curves.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    step = common_step(rows)
    title = (
        f"CIFAR-10, VGG-6 width 1/4, batch 32, one CPU thread per run on a shared 2-core machine, seed 0; "
        f"{time.strftime('%Y-%m-%d')}"
    )
    plot(rows, results / "curves.png", title)
    lines = [
        "# Learning curves on CPU, online probe (issue 17)",
        "",
        f"Machine: {platform.machine()} 2-core CPU (shared, loaded), one torch thread per run. Generated "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC by `python benchmarks/learning_curves.py report --runs RUNS "
        f"--results {results}` from runs started by `python benchmarks/learning_curves.py launch --runs RUNS`.",
        "",
        "Settings: " + " ".join(COMMON) + " (full CIFAR-10 JPEG copy, 50 000 train images, 1000 held out "
        "from the read-outs; random init: the frozen initial encoder, only the read-outs train).",
        "",
        f"Held-out accuracy (%) at step {step} (the last step every run reached), and at each run's last scoring:",
        "",
        f"| preset | all layers, step {step} | per layer l1..l6, step {step} | last step | all layers, last step |",
        "| --- | --- | --- | --- | --- |",
    ]
    for preset in PRESETS:
        mine = [r for r in rows if r["preset"] == preset]
        at = at_step(rows, preset, step)
        if mine and at is not None:
            last = mine[-1]
            per = " / ".join(f"{at[f'probe_acc_l{i}']:.1f}" for i in range(1, 7) if f"probe_acc_l{i}" in at)
            lines.append(
                f"| {preset} | {at['probe_acc_all']:.1f} | {per} | {last['step']} | {last['probe_acc_all']:.1f} |"
            )
    lines += ["", "![curves](curves.png)", "", "Every scoring: `curves.csv`."]
    (results / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["launch", "report"])
    ap.add_argument("--runs", type=Path, required=True, help="folder holding the run directories")
    ap.add_argument("--results", type=Path, default=Path("results/learning_curves/cpu"))
    args = ap.parse_args()
    launch(args.runs) if args.mode == "launch" else report(args.runs, args.results)


if __name__ == "__main__":
    main()
