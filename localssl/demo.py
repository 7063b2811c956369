"""``localssl demo``: the main job on a fresh offline machine, in minutes on 2 CPU cores.

Pretrains CLAPP++ (local) and BP-CLAPP++ (backprop) briefly on real CIFAR-10 images — the 4000/1000
image subset shipped with the package, or a full CIFAR-10 under ``--data-dir`` — then linear-probes
them and a random-init encoder, prints a table and writes ``demo.png`` and ``demo.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from localssl.config import load_config
from localssl.evaluate.probe import probe
from localssl.train import pretrain

METHODS = (("random", "random init"), ("clapp++", "CLAPP++ (local)"), ("bp-clapp++", "BP-CLAPP++ (backprop)"))

# Small-budget settings (stated in the printed table): VGG-6 at width 1/8.
# ``random`` keeps its preset's ``train.epochs: 0``; the epochs apply to the trained presets.
DEMO_SUBSET = ["model.width=0.125", "probe.epochs=40", "probe.val_size=500"]
DEMO_FULL = ["model.width=0.125", "probe.epochs=20", "probe.train_subset=20000"]
EPOCHS_SUBSET, EPOCHS_FULL = 8, 1


def run_demo(data_dir: str | None = None, out_dir: Path = Path("runs/demo")) -> dict[str, dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if data_dir:
        base, epochs = ["data.name=cifar10", f"data.root={data_dir}", *DEMO_FULL], EPOCHS_FULL
        data_desc = f"CIFAR-10 from {data_dir}"
    else:
        base, epochs = ["data.name=cifar10-mini", *DEMO_SUBSET], EPOCHS_SUBSET
        data_desc = "CIFAR-10 subset shipped with localssl (4000 train / 1000 test)"
    results: dict[str, dict] = {}
    for i, (preset, label) in enumerate(METHODS, 1):
        t0 = time.perf_counter()
        trained = [] if preset == "random" else [f"train.epochs={epochs}"]
        cfg = load_config(preset, [*base, *trained, f"out_dir={out_dir}"])
        print(f"[{i}/{len(METHODS)}] {label}: pretrain {cfg.train.epochs} epoch(s)", file=sys.stderr, flush=True)
        run_dir = pretrain(cfg)
        t1 = time.perf_counter()
        print(f"[{i}/{len(METHODS)}] {label}: linear probe, {cfg.probe.epochs} epochs", file=sys.stderr, flush=True)
        res = probe(run_dir)
        results[preset] = {
            "label": label,
            "run_dir": str(run_dir),
            "test_acc": res["test_acc"],
            "val_acc": res["val_acc"],
            "pretrain_s": round(t1 - t0, 1),
            "probe_s": round(time.perf_counter() - t1, 1),
            "epochs": cfg.train.epochs,
        }
    print(f"\nlocalssl demo — {data_desc}; VGG-6 width 1/8; linear probe on all 6 layers")
    print(f"{'method':<24} {'epochs':>6} {'test acc':>9} {'val acc':>8} {'pretrain s':>11}")
    for r in results.values():
        print(
            f"{r['label']:<24} {r['epochs']:>6} {100 * r['test_acc']:>8.2f}% {100 * r['val_acc']:>7.2f}% "
            f"{r['pretrain_s']:>11.1f}"
        )
    (out_dir / "demo.json").write_text(json.dumps(results, indent=2))
    budget = f"VGG-6 ×1/8, {epochs} epoch(s) of pretraining, 1 seed"
    _plot(results, out_dir / "demo.png", f"{data_desc}\n{budget}; linear probe on all 6 layers")
    print(f"\nwrote {out_dir / 'demo.json'} and {out_dir / 'demo.png'}")
    return results


def _plot(results: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in results.values()]
    accs = [100 * r["test_acc"] for r in results.values()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, accs, color=["#999999", "#1f77b4", "#ff7f0e"][: len(accs)])
    ax.bar_label(bars, fmt="%.1f")
    ax.axhline(10.0, color="k", ls=":", lw=1, label="chance (10 %)")
    if "random" in results:
        ax.axhline(100 * results["random"]["test_acc"], color="#999999", ls="--", lw=1, label="random init")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("linear-probe test accuracy (%)")
    ax.set_title(title, fontsize=8)
    ax.set_ylim(0, max(accs) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
