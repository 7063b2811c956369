"""CLAPP++ Table A3 (Delrocq et al. 2026, App. C): backprop vs incremental predictive coding on CIFAR-10
for a supervised loss (cross-entropy), the CLAPP objective and the LPL objective.

For each objective: one backprop run and the paper's PC grid (Table A4: ``T ∈ {1, 9, 17}`` inference
iterations × ``α ∈ {0.01, 0.1, 0.5}`` activity step sizes), each linear-probed on the encoder's top
layer. The PC grid point reported is the one with the best *validation* accuracy (held out from the
labelled train split, and never used for pretraining); the test set is evaluated once per run and
never used to choose anything (the paper reported the best test accuracy over epochs). A random-init
encoder is probed as the floor.

``localssl reproduce tableA3 --scale smoke|cpu|paper`` writes ``results.csv`` (long form: one value per
row), ``results.md`` (ours beside the published numbers, protocol stated) and ``tableA3.png``. Runs
live in ``OUT/runs/<job>-<digest>`` (the digest hashes the job's settings, so a changed protocol never
reuses an earlier run); a finished run (``result.json`` present) is reused, so an interrupted reproduction
continues where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from localssl.experiments import experiment, worker_count
from localssl.experiments.engine import Cell, run_cells
from localssl.utils import save_figure

GRID_T = (1, 9, 17)
GRID_ALPHA = (0.01, 0.1, 0.5)

OBJECTIVES = {  # table row -> (PC preset, label)
    "cross_entropy": ("pc-supervised", "Cross-entropy (supervised)"),
    "clapp": ("pc-clapp", "CLAPP objective (self-supervised)"),
    "lpl": ("pc-lpl", "LPL objective (self-supervised)"),
}
PUBLISHED = {  # CLAPP++ Table A3, CIFAR-10 (%)
    ("cross_entropy", "BP"): 72.41,
    ("cross_entropy", "PC"): 71.92,
    ("clapp", "BP"): 65.68,
    ("clapp", "PC"): 45.62,
    ("lpl", "BP"): 73.65,
    ("lpl", "PC"): 47.68,
}


@dataclasses.dataclass(frozen=True)
class Protocol:
    description: str
    common: tuple[str, ...]  # overrides for every run
    per_objective: dict[str, tuple[str, ...]]  # extra overrides per table row
    grid_T: tuple[int, ...] = GRID_T
    grid_alpha: tuple[float, ...] = GRID_ALPHA
    workers: int = 1  # parallel runs (one CPU thread each when > 1)


PROBE = "probe.layers=6"  # the encoder's output: what the top objective trained
PROTOCOLS = {
    "smoke": Protocol(
        "pipeline check only, not a measurement: the CIFAR-10 subset shipped with localssl (cifar10-mini), VGG-6 "
        "at width 1/32, 64 pretraining images, 1 epoch; grid reduced to T ∈ {1, 2}, α = 0.1; probe: 200 train / "
        "100 validation images, 2 epochs.",
        (
            "data.name=cifar10-mini",
            "model.width=0.03125",
            "data.train_subset=64",
            "train.epochs=1",
            PROBE,
            "probe.epochs=2",
            "probe.train_subset=200",
            "probe.val_size=100",
        ),
        {"cross_entropy": ("train.batch_size=32",), "clapp": ("train.batch_size=16",), "lpl": ("train.batch_size=32",)},
        grid_T=(1, 2),
        grid_alpha=(0.1,),
    ),
    "cpu": Protocol(
        "reduced for 2 CPU cores: VGG-6 at width 1/32 (4-8-8-16-32-32 channels), pretraining on 5000 CIFAR-10 "
        "train images (drawn with the seed, disjoint from the probe's validation images) for 3 epochs with Adam "
        "lr 1e-3, no weight decay, for BP and PC alike; batch 64 images (cross-entropy; paper 128), 32 (CLAPP, as "
        "the paper) and 128 (LPL; paper 1024); the paper's PC grid T ∈ {1, 9, 17} × α ∈ {0.01, 0.1, 0.5}, "
        "activity momentum 0.5; linear probe (`localssl probe`: 30 epochs of Adam 1e-3) on the top layer's "
        "pooled output, trained on 10 000 labelled train images, its epoch and the PC grid point chosen on 2000 "
        "held-out train images, tested once on the 10 000 test images. Two runs in parallel, one thread each.",
        (
            "data.name=cifar10",
            "model.width=0.03125",
            "data.train_subset=5000",
            "train.epochs=3",
            "train.lr=1e-3",
            "train.optimizer=adam",
            "train.weight_decay=0.0",
            PROBE,
            "probe.train_subset=10000",
            "probe.val_size=2000",
        ),
        {
            "cross_entropy": ("train.batch_size=64",),
            "clapp": ("train.batch_size=32",),
            "lpl": ("train.batch_size=128",),
        },
        workers=2,
    ),
    "paper": Protocol(
        "the presets as in CLAPP++ Table A4: full-width VGG-6 on all CIFAR-10 train images except the probe's "
        "5000 validation images; cross-entropy batch 128 × 50 epochs, CLAPP batch 32 × 300 epochs, LPL batch "
        "1024 × 800 epochs, Adam without weight decay; PC grid T ∈ {1, 9, 17} × α ∈ {0.01, 0.1, 0.5}; linear "
        "probe on the top layer's pooled output, chosen on the validation images, tested once.",
        ("data.name=cifar10", PROBE),
        {"cross_entropy": (), "clapp": (), "lpl": ()},
    ),
}


@dataclasses.dataclass(frozen=True)
class Job:
    objective: str  # a key of OBJECTIVES, or 'random'
    rule: str  # BP | PC | random
    T: int | None
    alpha: float | None
    seed: int
    preset: str
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        if self.rule == "PC":
            return f"{self.objective}-PC-T{self.T}-a{self.alpha:g}-s{self.seed}"
        return f"{self.objective}-{self.rule}-s{self.seed}"

    @property
    def run_name(self) -> str:
        """The run folder: ``name`` plus a digest of the overrides (a run is reused only for equal settings)."""
        digest = hashlib.sha1("\n".join([self.preset, *self.overrides]).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"

    @property
    def cost(self) -> int:
        return self.T if self.rule == "PC" else (0 if self.rule == "random" else 1)


def make_jobs(protocol: Protocol, seeds: int) -> list[Job]:
    jobs = []
    for seed in range(seeds):
        base = (*protocol.common, f"train.seed={seed}")
        jobs.append(Job("random", "random", None, None, seed, "random", base))
        for obj, (preset, _) in OBJECTIVES.items():
            over = (*base, *protocol.per_objective[obj])
            jobs.append(Job(obj, "BP", None, None, seed, preset, (*over, "rule.name=backprop")))
            for t in protocol.grid_T:
                for a in protocol.grid_alpha:
                    jobs.append(Job(obj, "PC", t, a, seed, preset, (*over, f"rule.T={t}", f"rule.alpha={a}")))
    return sorted(jobs, key=lambda j: -j.cost)  # longest first: better packing on parallel workers


def pretrain_excluding_validation(cfg: Any, run_dir: Path) -> None:
    """``pretrain`` on the labelled train split minus the probe's validation images (then the seeded
    ``data.train_subset``): labels of the images that choose the model are never trained on."""
    import torch

    from localssl.config import save_config
    from localssl.data import dataset_info, load_split
    from localssl.evaluate.probe import split_train_val
    from localssl.train import Trainer, resolve_config

    info = dataset_info(cfg.data.name)
    if info.pretrain_split != info.probe_train_split:
        raise ValueError(f"tableA3 expects pretraining on the probe's train split; {cfg.data.name} differs")
    data = load_split(cfg.data.name, info.pretrain_split, cfg.data.root)
    _, keep = split_train_val(len(data), cfg.probe)
    if cfg.data.train_subset is not None:
        g = torch.Generator().manual_seed(cfg.train.seed)
        keep = keep[torch.randperm(len(keep), generator=g)[: cfg.data.train_subset]]
    cfg = resolve_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    Trainer(cfg, run_dir, data=data.subset(keep)).fit()


def run_job(job: Job, runs_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Pretrain and probe one job (or reuse its finished run)."""
    import torch

    from localssl.config import load_config
    from localssl.evaluate.probe import probe
    from localssl.train import NonFiniteLossError

    if threads is not None:
        torch.set_num_threads(threads)
    run_dir = runs_dir / job.run_name
    done = run_dir / "result.json"
    if done.exists():
        return {**json.loads(done.read_text()), "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run restarts from scratch
    cfg = load_config(job.preset, [*job.overrides, "train.progress=false", f"out_dir={runs_dir}"])
    result: dict[str, Any] = {**dataclasses.asdict(job), "name": job.name, "diverged": False}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        pretrain_excluding_validation(cfg, run_dir)
    except NonFiniteLossError as err:  # a diverged grid point: reported, never selected
        result.update(diverged=True, error=str(err), test_acc=None, val_acc=None, final_loss=None)
    t1, c1 = time.perf_counter(), time.process_time()
    result.update(pretrain_s=t1 - t0, pretrain_cpu_s=c1 - c0)
    if not result["diverged"]:
        res = probe(run_dir)
        final = json.loads((run_dir / "summary.json").read_text()).get("final", {})
        top_loss = [v for k, v in final.items() if k.startswith("loss_l")]
        result.update(
            test_acc=res["test_acc_pct"],
            val_acc=res["val_acc_pct"],
            final_loss=top_loss[0] if top_loss else None,  # last epoch's mean top-objective loss (forward pass)
            probe_s=time.perf_counter() - t1,
        )
    done.write_text(json.dumps(result, indent=2))
    return result


def run_jobs(jobs: list[Job], runs_dir: Path, workers: int, study: str = "tableA3") -> list[dict[str, Any]]:
    """Every job as a cell of the engine (its result in job order; finished once its ``result.json`` is written):
    ``workers`` at once (at most ``$LOCALSSL_WORKERS``), one torch thread each when more than one."""
    workers = max(1, min(worker_count(workers), len(jobs)))
    fn = functools.partial(run_job, runs_dir=runs_dir)
    cells = [
        Cell(j.name, j.name, fn, j, (runs_dir / j.run_name / "result.json").exists, runs_dir / j.run_name) for j in jobs
    ]
    return run_cells(study, cells, workers, threads=1)


def select(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Per (objective, rule, seed): the BP run, or the PC grid point with the best validation accuracy."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in results:
        key = (r["objective"], r["rule"], r["seed"])
        if r["val_acc"] is None:
            continue
        if key not in best or r["val_acc"] > best[key]["val_acc"]:
            best[key] = r
    return best


def grid_runs(results: list[dict[str, Any]], objective: str, T: int, alpha: float) -> list[dict[str, Any]]:
    return [
        r for r in results if r["objective"] == objective and r["rule"] == "PC" and r["T"] == T and r["alpha"] == alpha
    ]


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


METRICS = ("val_acc", "test_acc", "final_loss", "pretrain_s", "pretrain_cpu_s")


def mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.mean(values) if values else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_results(out: Path, scale: str, protocol: Protocol, results: list[dict[str, Any]], seconds: float) -> None:
    """``results.csv`` (one value per row), ``results.md`` (ours beside the paper) and the figure."""
    best = select(results)
    chosen = {id(r) for r in best.values()}
    order = sorted(results, key=lambda r: (r["objective"], r["rule"], r["T"] or 0, r["alpha"] or 0, r["seed"]))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "scale", "objective", "rule", "T", "alpha", "seed", "selected", "metric", "value"])
        for r in order:
            keys = ["cifar10", scale, r["objective"], r["rule"], r["T"] or "", r["alpha"] or "", r["seed"]]
            for metric in METRICS:
                if r.get(metric) is not None:
                    w.writerow([*keys, id(r) in chosen, metric, round(r[metric], 4)])
            if r.get("diverged"):
                w.writerow([*keys, False, "diverged", 1])
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "# CLAPP++ Table A3 — backprop (BP) vs incremental predictive coding (PC), CIFAR-10",
        "",
        f"Scale `{scale}`: {protocol.description}",
        "",
        f"Linear-probe test accuracy (%), {len(seeds)} seed(s){' (mean ± std)' if len(seeds) > 1 else ''}. "
        "PC: the grid point with the best validation accuracy (per seed). Top loss: the objective's mean training "
        "loss in the last epoch, at the forward pass (BP / chosen PC).",
        "",
        "| loss | BP (ours) | PC (ours) | PC chosen (T, α) | top loss BP / PC | BP (paper) | PC (paper) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for obj, (_, label) in OBJECTIVES.items():
        bps = [best[(obj, "BP", s)] for s in seeds if (obj, "BP", s) in best]
        pcs = [best[(obj, "PC", s)] for s in seeds if (obj, "PC", s) in best]
        picks = ", ".join(f"({r['T']}, {r['alpha']:g})" for r in pcs)
        lines.append(
            f"| {label} | {mean_std([r['test_acc'] for r in bps])} | {mean_std([r['test_acc'] for r in pcs])} | "
            f"{picks} | {fmt(mean_of(bps, 'final_loss'), 3)} / {fmt(mean_of(pcs, 'final_loss'), 3)} | "
            f"{PUBLISHED[(obj, 'BP')]:.2f} | {PUBLISHED[(obj, 'PC')]:.2f} |"
        )
    rnd = [best[("random", "random", s)]["test_acc"] for s in seeds if ("random", "random", s) in best]
    lines += [f"| random init (floor) | {mean_std(rnd)} | | | | – | – |", ""]
    lines += [
        "## PC grid: validation / test accuracy (%) and last-epoch top loss, mean over seeds",
        "",
        "| loss | T | " + " | ".join(f"α = {a:g}" for a in protocol.grid_alpha) + " |",
        "| --- | --- | " + " | ".join("---" for _ in protocol.grid_alpha) + " |",
    ]
    for obj, (_, label) in OBJECTIVES.items():
        for t in protocol.grid_T:
            cells = []
            for a in protocol.grid_alpha:
                rs = grid_runs(results, obj, t, a)
                if not rs:
                    cells.append("–")
                elif all(r.get("diverged") for r in rs):
                    cells.append("diverged")
                else:
                    cells.append(
                        f"{fmt(mean_of(rs, 'val_acc'))} / {fmt(mean_of(rs, 'test_acc'))} "
                        f"(loss {fmt(mean_of(rs, 'final_loss'), 3)})"
                    )
            lines.append(f"| {label} | {t} | " + " | ".join(cells) + " |")
    cpu = sum(r["pretrain_cpu_s"] for r in results)
    reused = sum(bool(r.get("reused")) for r in results)
    lines += [
        "",
        f"{len(results)} runs ({reused} reused from an earlier invocation); pretraining CPU time {cpu / 60:.1f} min "
        f"in total; this invocation took {seconds / 60:.1f} min of wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    plot(out / "tableA3.png", scale, protocol, results)


def plot(path: Path, scale: str, protocol: Protocol, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OBJECTIVES), figsize=(4 * len(OBJECTIVES), 3.4), sharey=True)
    rnd = [r["test_acc"] for r in results if r["rule"] == "random"]
    for ax, (obj, (_, label)) in zip(axes, OBJECTIVES.items()):
        for t in protocol.grid_T:
            xs, ys = [], []
            for a in protocol.grid_alpha:
                rs = [r["test_acc"] for r in grid_runs(results, obj, t, a) if r["test_acc"] is not None]
                if rs:
                    xs.append(a)
                    ys.append(statistics.mean(rs))
            ax.plot(xs, ys, "o-", label=f"PC, T = {t}")
        bp = [
            r["test_acc"] for r in results if r["objective"] == obj and r["rule"] == "BP" and r["test_acc"] is not None
        ]
        if bp:
            ax.axhline(statistics.mean(bp), color="k", label="BP")
        if rnd:
            ax.axhline(statistics.mean(rnd), color="grey", ls=":", label="random init")
        ax.set_xlim(min(protocol.grid_alpha) / 2, max(protocol.grid_alpha) * 2)
        ax.set_xscale("log")
        ax.set_xlabel("activity step size α")
        ax.set_title(label, fontsize=9)
    axes[0].set_ylabel("top-layer linear probe, test %")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"CLAPP++ Table A3 on CIFAR-10, scale '{scale}'", fontsize=10)
    save_figure(fig, path, dpi=120)


@experiment(
    "tableA3",
    "CLAPP++ Table A3: backprop vs predictive coding for cross-entropy, CLAPP and LPL (CIFAR-10)",
)
def run(out: Path, scale: str, seeds: int) -> None:
    protocol = PROTOCOLS[scale]
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run_jobs(make_jobs(protocol, seeds), runs_dir, protocol.workers)
    write_results(out, scale, protocol, results, time.perf_counter() - t0)
    print((out / "results.md").read_text())
