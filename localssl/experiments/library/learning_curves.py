"""``localssl reproduce learning_curves``: CPU learning curves with the online probe (issue 17 item 7).

CLAPP++ variants vs backprop vs random init on full CIFAR-10: one ``pretrain`` per preset with the online
probe (``train.online_probe=true``: the offline honest probe's read-outs fitted on pretraining images, their
held-out accuracy scored at every epoch's end and every ``train.online_probe_every`` steps), the presets
``--jobs`` at a time (one cell each, :mod:`localssl.experiments.engine`), one torch thread each. A run folder
``OUT/runs/<preset>`` that exists is continued (``resume``), so a stopped invocation continues where it
stopped. The report is rewritten from the runs' ``steps.csv``/``metrics.csv`` whenever a run ends:
``curves.csv`` (every scoring), ``curves.png`` and ``results.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import time
from pathlib import Path

from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, run_cells
from localssl.experiments.engine.runs import finished_epochs
from localssl.registry import ConfigError
from localssl.utils import machine_name, save_figure

PRESETS = ("clapp++", "clapp++both", "bp-clapp++", "clapp++nospatial", "random")


@dataclasses.dataclass(frozen=True)
class Budget:
    protocol: str
    common: tuple[str, ...]
    epochs: int  # trained presets
    random_epochs: int  # random init trains only its read-outs (cheap)
    batch: int = 32


SCALES = {
    "smoke": Budget(
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl, 256 images (64 held "
        "out for the read-outs), VGG-6 at width 1/16, 1 epoch, scored every 2 steps.",
        (
            "data.name=cifar10-mini",
            "data.train_subset=256",
            "model.width=0.0625",
            "train.online_probe=true",
            "train.online_probe_every=2",
            "train.online_probe_holdout=64",
            "train.log_every=2",
            "train.progress=false",
        ),
        epochs=1,
        random_epochs=1,
    ),
    "cpu": Budget(
        "full CIFAR-10 (50 000 train images), VGG-6 at width 1/4, batch 32, each preset's own optimizer and "
        "learning rate, seed 0; the online probe at its defaults (fitted on 45 000 pretraining images, scored on "
        "the 5000 others) every 781 steps (half an epoch); 4 epochs (random init: the frozen initial encoder).",
        (
            "model.width=0.25",
            "train.online_probe=true",
            "train.online_probe_every=781",
            "train.log_every=71",
            "train.progress=false",
        ),
        epochs=4,
        random_epochs=4,
    ),
}


def train(preset: str, budget: Budget, runs: Path) -> str:
    """Pretrain ``preset`` into ``runs/<preset>`` (continued when it exists): ``'trained'`` or ``'resumed'``."""
    from localssl.config import load_config
    from localssl.train import pretrain, resume

    run_dir = runs / preset
    if (run_dir / "checkpoint.pt").exists():
        resume(run_dir)
        return "resumed"
    epochs = budget.random_epochs if preset == "random" else budget.epochs
    pretrain(load_config(preset, [*budget.common, f"train.epochs={epochs}"]), run_dir)
    return "trained"


def _finished(run_dir: Path, budget: Budget, preset: str) -> bool:
    return finished_epochs(run_dir) == (budget.random_epochs if preset == "random" else budget.epochs)


def _rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV file; online-probe columns from before the unit was in their names
    (``probe_acc_l1``, percent then as now) under their names of now (``probe_acc_pct_l1``)."""
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [{_pct_name(k): v for k, v in row.items()} for row in csv.DictReader(fh)]


def _pct_name(key: str) -> str:
    old = "probe_acc_"
    return "probe_acc_pct_" + key[len(old) :] if key.startswith(old) and not key.startswith("probe_acc_pct_") else key


def collect(runs: Path, batch: int) -> list[dict[str, object]]:
    """One row per held-out scoring: preset, epoch, step, images seen, accuracy of every read-out (%). A scoring
    at an epoch's end that is also due by ``train.online_probe_every`` is in both ``steps.csv`` and
    ``metrics.csv`` (the same numbers: the probe scores a step once): it is one row here."""
    out: list[dict[str, object]] = []
    for preset in PRESETS:
        run = runs / preset
        scored = [r for r in _rows(run / "steps.csv") if r.get("probe_acc_pct_all")]
        scored += [r for r in _rows(run / "metrics.csv") if r.get("probe_acc_pct_all")]
        by_step = {int(r["step"]): r for r in reversed(scored)}  # the steps.csv row where both have one
        for step, r in sorted(by_step.items()):
            accs = {k: float(v) for k, v in r.items() if k.startswith("probe_acc_pct_")}
            out.append({"preset": preset, "epoch": int(r["epoch"]), "step": step, "images_seen": step * batch, **accs})
    return out


def common_step(rows: list[dict[str, object]]) -> int:
    """The last step every run has been scored at (runs compared at equal training)."""
    last: dict[object, int] = {}
    for r in rows:
        last[r["preset"]] = max(last.get(r["preset"], 0), int(r["step"]))
    return min(last.values())


def at_step(rows: list[dict[str, object]], preset: str, step: int) -> dict[str, object] | None:
    """``preset``'s last scoring at or before ``step``."""
    mine = [r for r in rows if r["preset"] == preset and int(r["step"]) <= step]
    return mine[-1] if mine else None


def plot(rows: list[dict[str, object]], path: Path, title: str, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({k for r in rows for k in r if str(k).startswith("probe_acc_pct_l")}, key=lambda k: int(k[15:]))
    step = common_step(rows)
    trained = [int(r["step"]) for r in rows if r["preset"] != "random"]
    xmax = 1.05 * max(trained or [step]) * batch / 1000
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, preset in enumerate(PRESETS):
        mine = [r for r in rows if r["preset"] == preset and r["images_seen"] / 1000 <= xmax]
        if not mine:
            continue
        style = {"color": "0.4", "ls": "--"} if preset == "random" else {"color": f"C{i}"}
        label = "random init (frozen encoder)" if preset == "random" else preset
        xs = [r["images_seen"] / 1000 for r in mine]
        axes[0].plot(xs, [r["probe_acc_pct_all"] for r in mine], marker=".", label=label, **style)
        at = at_step(rows, preset, step)
        if at is not None:
            axes[1].plot(range(1, len(layers) + 1), [at[k] for k in layers], marker="o", label=label, **style)
    # no chance line: it would squeeze the few points between the curves (chance is 10 %)
    axes[0].set(xlabel="pretraining images seen (thousands)", ylabel="held-out accuracy (%)")
    axes[0].set_title("online probe, all layers concatenated", fontsize=10)
    axes[1].set(xlabel="layer", ylabel="held-out accuracy (%)")
    axes[1].set_title(f"online probe of each layer at step {step} ({step * batch // 1000}k images)", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=120)


def report(out: Path, scale: str, budget: Budget) -> None:
    """``curves.csv``, ``curves.png`` and ``results.md`` from the runs under ``out/runs`` (as far as they got)."""
    rows = collect(out / "runs", budget.batch)
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "curves.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    step = common_step(rows)
    title = f"CIFAR-10 learning curves, online probe, scale `{scale}`, seed 0; {time.strftime('%Y-%m-%d')}"
    plot(rows, out / "curves.png", title, budget.batch)
    lines = [
        f"# Learning curves with the online probe (scale `{scale}`)",
        "",
        f"Machine: {machine_name()}, one torch thread per run. Generated {time.strftime('%Y-%m-%d %H:%M')} "
        f"by `localssl reproduce learning_curves --scale {scale}` (a stopped invocation continues its runs).",
        "",
        f"Settings: {budget.protocol} Overrides: " + " ".join(budget.common) + ".",
        "",
        f"Held-out accuracy (%; chance 10) at step {step} (the last step every run reached), and at each run's last "
        "scoring:",
        "",
        f"| preset | all layers, step {step} | per layer l1..l6, step {step} | last step | all layers, last step |",
        "| --- | --- | --- | --- | --- |",
    ]
    for preset in PRESETS:
        mine = [r for r in rows if r["preset"] == preset]
        at = at_step(rows, preset, step)
        if mine and at is not None:
            last = mine[-1]
            per = " / ".join(f"{at[f'probe_acc_pct_l{i}']:.1f}" for i in range(1, 7) if f"probe_acc_pct_l{i}" in at)
            now, end = at["probe_acc_pct_all"], last["probe_acc_pct_all"]
            lines.append(f"| {preset} | {now:.1f} | {per} | {last['step']} | {end:.1f} |")
    lines += ["", "![curves](curves.png)", "", "Every scoring: `curves.csv`."]
    (out / "results.md").write_text("\n".join(lines) + "\n")


@experiment(
    "learning_curves",
    "online-probe learning curves of CLAPP++ variants, backprop, random init",
    tuple(SCALES),
)
def run(out: Path, scale: str, seeds: int) -> None:
    if seeds != 1:
        raise ConfigError("learning_curves runs one seed (seed 0) per preset; leave out --seeds")
    budget = SCALES[scale]
    runs = Path(out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    job = functools.partial(train, budget=budget, runs=runs)
    workers = worker_count(len(PRESETS))
    cells = [Cell(p, p, job, p, functools.partial(_finished, runs / p, budget, p), runs / p) for p in PRESETS]
    run_cells("learning_curves", cells, workers, threads=1, on_result=lambda *_: report(out, scale, budget))
    report(out, scale, budget)
    print((out / "results.md").read_text())
