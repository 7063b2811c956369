"""``localssl demo``: a local rule learning what a random network does not, beside backprop, on 2 CPU cores.

Two tasks, every method trained and linear-probed with several seeds (``train.seed = probe.seed = s``;
the seed also draws the pretraining subset), offline:

* **speech with real phonetics**: the eSpeak NG corpus ``espeak-demo`` (:mod:`localssl.data.espeak`, 0.2 h,
  100 speakers, 39 folded TIMIT phones per 10 ms), generated on first use (about 6 CPU-seconds) and kept
  under the data root. GIM's audio encoder at width 1/16; random init vs CLAPP (Illing et al. 2021,
  every layer its own hinge loss, no error between layers) vs the same hinge loss trained end to end by
  backprop (hinge CPC) vs CPC (InfoNCE, backprop). Frame-level probe on the GRU output (layer 6). Without
  the ``[speech]`` extra (eSpeak NG) the panel falls back to the synthetic toy of
  :mod:`localssl.data.speech` (8 vowel-like classes) and says so in its title.
* **CIFAR-10 as it is** at this budget: the 4000/1000-image subset shipped with the package (or a full
  CIFAR-10 with ``data_dir``); VGG-6 at width 1/16, random init vs CLAPP++ (local) vs BP-CLAPP++
  (backprop); linear probe on all six layers; 4 epochs (500 steps), what the default fast path (bf16 where
  the CPU computes it natively) affords inside the demo's few minutes. At a few hundred steps neither trained
  encoder is expected far above random init (a strong floor on CIFAR); the figure says what it measured.

The learning rate of each method was chosen on the probe's validation split (held out from the train
utterances/images; for speech on ``espeak-demo`` itself, seed 0, four rates per method; the toy fallback uses the
same rates), never on the test split; see
``benchmarks/RESULTS.md`` ("Demo"). Writes
``OUT/demo.png``, ``OUT/demo.json`` and one run folder per method and seed under ``OUT/runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from localssl.demo_figure import plot_demo
from localssl.experiments.engine.local import run_jobs
from localssl.safe_files import read_text

CHANCE = {"speech": 100 / 39, "cifar": 10.0}
TASK_TITLES = {"speech": "speech: eSpeak NG corpus (39 phones, 100 speakers)", "cifar": "CIFAR-10 as it is"}
TOY_CHANCE = 100 / 8
TOY_TITLE = "synthetic toy speech (8 classes): eSpeak NG absent,\npip install 'localssl[speech]' for real phones"


@dataclasses.dataclass(frozen=True)
class Method:
    """One bar: a preset plus the overrides that make it this method (after the task's common ones)."""

    key: str
    label: str
    preset: str
    overrides: tuple[str, ...] = ()
    weights: str | None = None  # a shipped encoder's name: not trained here, probed on the task's images
    reference: str = "random"  # the random init it is compared with (the same network)


METHODS = {
    "speech": (
        Method("random", "random init", "cpc-audio", ("rule.name=frozen", "train.epochs=0")),
        Method("clapp", "CLAPP (local)", "clapp-audio", ("train.lr=3e-3",)),
        Method("hinge-cpc", "CLAPP loss, end-to-end BP", "clapp-audio", ("rule.splits=1", "train.lr=1e-3")),
        Method("cpc", "CPC (end-to-end BP)", "cpc-audio", ("train.lr=1e-3",)),
    ),
    "cifar": (
        Method("random", "random init", "random", ("train.epochs=0",)),
        Method("clapp++", "CLAPP++ (local)", "clapp++"),
        Method("bp-clapp++", "BP-CLAPP++ (backprop)", "bp-clapp++"),
    ),
}


# the speech panel's settings, on the eSpeak NG corpus or (without the [speech] extra) the synthetic toy
SPEECH_SETTINGS = (
    "data.train_subset=256",
    "model.width=0.0625",
    "views.window=6400",
    "train.epochs=6",
    "probe.layers=6",
    "probe.epochs=20",
    "probe.val_size=64",
)


@dataclasses.dataclass(frozen=True)
class Budget:
    """The demo's settings per task (``key=value`` overrides applied to every method of the task)."""

    speech: tuple[str, ...] = ("data.name=espeak-demo", *SPEECH_SETTINGS)
    speech_toy: tuple[str, ...] = ("data.name=synthetic-speech", *SPEECH_SETTINGS)  # without the [speech] extra
    cifar: tuple[str, ...] = (  # 4 epochs (500 steps): what the fast path (bf16, issue 26) affords in the 5 minutes
        "data.name=cifar10-mini",
        "model.width=0.0625",
        "train.epochs=4",
        "probe.epochs=40",
        "probe.val_size=500",
    )
    cifar_full: tuple[str, ...] = (
        "data.name=cifar10",
        "model.width=0.0625",
        "train.epochs=1",
        "data.train_subset=4000",
        "probe.epochs=20",
        "probe.train_subset=10000",
        "probe.val_size=2000",
    )
    seeds: int = 3
    tasks: tuple[str, ...] = ("speech", "cifar")
    shipped: bool = True  # the CIFAR panel adds the shipped encoders (and random init of their network)


DEFAULT_BUDGET = Budget()


def shipped_methods() -> tuple[Method, ...]:
    """The encoders shipped with the package (``localssl/weights/``, their hashes checked), each probed on the
    CIFAR panel's images as the panel's runs are, and before them random init of the same network (every model
    setting the shipped file records) probed the same way; none when nothing is shipped."""
    from localssl.evaluate.pretrained import read_exported, shipped

    randoms: dict[str, Method] = {}
    encoders = []
    for name, path in sorted(shipped().items()):
        exported = read_exported(path)
        model = exported.info["config"]["model"]
        width = f"1/{round(1 / float(model['width']))}" if float(model["width"]) < 1 else str(model["width"])
        overrides = ("train.epochs=0", *(f"model.{k}={json.dumps(v)}" for k, v in sorted(model.items())))
        ref = randoms.setdefault(
            json.dumps(model, sort_keys=True),
            Method(f"random-{len(randoms) + 1}", f"random init ×{width}", "random", overrides),
        )
        card = exported.card or {}
        training = card.get("training", {})
        rule = RULE_LABELS.get(exported.info["config"]["name"], exported.info["config"]["name"])
        wall = training.get("wall_s")
        spent = f", {wall / 60:.0f} min" if isinstance(wall, (int, float)) else ""
        label = f"{rule} ×{width}\nshipped: {exported.info['global_step']} steps{spent}"
        encoders.append(Method(f"shipped-{name}", label, "", weights=name, reference=ref.key))
    return (*randoms.values(), *encoders)


RULE_LABELS = {"clapp++": "CLAPP++ (local)", "bp-clapp++": "BP-CLAPP++ (backprop)"}


def methods(task: str, budget: Budget) -> tuple[Method, ...]:
    """The task's bars: its trained methods, and for CIFAR-10 the shipped encoders (``budget.shipped``)."""
    return METHODS[task] + (shipped_methods() if task == "cifar" and budget.shipped else ())


def describe(budget: Budget, task: str, full_cifar: bool) -> str:
    """The budget in words, for the figure's title and the printed table."""
    ov = dict(o.split("=", 1) for o in getattr(budget, "cifar_full" if task == "cifar" and full_cifar else task))
    width = f"×1/{round(1 / float(ov['model.width']))}"
    if task == "speech":
        n = ov.get("data.train_subset", "512")
        return f"GIM audio encoder {width}, {ov['train.epochs']} epochs on {n} utterances; probe on the GRU"
    n = ov.get("data.train_subset", "4000" if not full_cifar else "50000")
    return f"VGG-6 {width}, {ov['train.epochs']} epoch(s) on {n} images; probe on all 6 layers"


@dataclasses.dataclass(frozen=True)
class Job:
    task: str
    method: Method
    seed: int
    overrides: tuple[str, ...]
    run_dir: str


def _run_job(job: Job) -> dict:
    """Pretrain and probe one method with one seed (in a worker process: one torch thread)."""
    import torch

    from localssl.config import load_config
    from localssl.evaluate.probe import probe
    from localssl.train import pretrain

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    if job.method.weights:  # a shipped encoder: probed on the task's images with the task's probe settings
        from localssl.evaluate.pretrained import read_exported, resolve

        epochs, steps = 0, int(read_exported(resolve(job.method.weights)).info["global_step"])
        t1 = time.perf_counter()
        res = probe(job.method.weights, list(job.overrides), out_dir=job.run_dir)
    else:
        cfg = load_config(job.method.preset, [*job.overrides, *job.method.overrides])
        run = pretrain(cfg, Path(job.run_dir))
        t1 = time.perf_counter()
        epochs = cfg.train.epochs
        steps = json.loads(read_text(run / "summary.json"))["global_step"] if cfg.train.epochs else 0
        res = probe(run)
    return {
        "task": job.task,
        "method": job.method.key,
        "seed": job.seed,
        "test_acc_pct": res["test_acc_pct"],
        "val_acc_pct": res["val_acc_pct"],
        "epochs": epochs,
        "steps": steps,
        "pretrain_s": round(t1 - t0, 1),
        "probe_s": round(time.perf_counter() - t1, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "run_dir": job.run_dir,
    }


def plan(budget: Budget) -> dict[str, tuple[Method, ...]]:
    """Each task's methods, read once per demo (the shipped encoders' files are hashed when read)."""
    return {task: methods(task, budget) for task in budget.tasks}


def make_jobs(
    budget: Budget, out_dir: Path, data_dir: str | None, task_methods: dict[str, tuple[Method, ...]] | None = None
) -> list[Job]:
    task_methods = task_methods or plan(budget)
    jobs = []
    for task in budget.tasks:
        common = list(getattr(budget, "cifar_full" if task == "cifar" and data_dir else task))
        if task == "cifar" and data_dir:
            common.append(f"data.root={data_dir}")
        for seed in range(budget.seeds):
            for m in task_methods[task]:
                run_dir = out_dir / "runs" / f"{task}-{m.key}-seed{seed}"
                ov = (*common, f"train.seed={seed}", f"probe.seed={seed}", "train.progress=false")
                if m.weights:
                    ov = probe_settings(ov)
                jobs.append(Job(task, m, seed, ov, str(run_dir)))
    # the slowest jobs first, so that two workers finish together
    return sorted(jobs, key=lambda j: j.method.key in ("random",))


def probe_settings(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The task's data and every probe setting its runs are probed with (those of the ``random`` preset under
    ``overrides``), as overrides of a shipped encoder's own config."""
    from localssl.config import load_config

    cfg = load_config("random", list(overrides))
    probe = dataclasses.asdict(cfg.probe)
    data = [f"data.name={cfg.data.name}", *([f"data.root={cfg.data.root}"] if cfg.data.root else [])]
    return (*data, *(f"probe.{k}={json.dumps(v)}" for k, v in probe.items() if k != "progress"), "probe.progress=false")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have exited."""
    import resource

    usage = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


def percent(row: dict, split: str) -> float:
    """A run row's ``test``/``val`` accuracy in percent (``<split>_acc_pct``; a file written before the unit was
    in the name holds the fraction ``<split>_acc``)."""
    return row[f"{split}_acc_pct"] if f"{split}_acc_pct" in row else 100 * row[f"{split}_acc"]


def summarize(
    rows: list[dict], budget: Budget, task_methods: dict[str, tuple[Method, ...]] | None = None
) -> dict[str, dict[str, dict]]:
    """Per task and method: mean and sample standard deviation (n-1) of the test accuracy over seeds."""
    task_methods = task_methods or plan(budget)
    out: dict[str, dict[str, dict]] = {}
    for task in budget.tasks:
        out[task] = {}
        for m in task_methods[task]:
            accs = [percent(r, "test") for r in rows if r["task"] == task and r["method"] == m.key]
            vals = [percent(r, "val") for r in rows if r["task"] == task and r["method"] == m.key]
            mean = sum(accs) / len(accs)
            std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
            out[task][m.key] = {
                "label": m.label,
                "reference": m.reference,
                "steps": max(r["steps"] for r in rows if r["task"] == task and r["method"] == m.key),
                "test_mean": mean,
                "test_std": std,
                "test": accs,
                "val_mean": sum(vals) / len(vals),
            }
    return out


def speech_source(budget: Budget) -> tuple[Budget, str, float]:
    """The speech panel's data: the eSpeak NG corpus the budget names (generated now if missing), or, without
    the ``[speech]`` extra, the synthetic toy (``budget.speech_toy``); returns the budget to run, the panel's
    title and its chance level."""
    name = dict(o.split("=", 1) for o in budget.speech).get("data.name", "")
    if "speech" not in budget.tasks or not name.startswith("espeak-"):
        return budget, "synthetic toy speech (8 classes, generated offline)", TOY_CHANCE
    from localssl.config import default_data_root
    from localssl.data.espeak import EXTRA_MISSING, ensure_corpus, espeak_available

    if not espeak_available():
        print(f"localssl demo: {EXTRA_MISSING}; the speech panel uses the synthetic toy", file=sys.stderr, flush=True)
        return dataclasses.replace(budget, speech=budget.speech_toy), TOY_TITLE, TOY_CHANCE
    root = default_data_root()
    if not (root / name / "manifest.json").exists():
        print(f"localssl demo: generating {name} under {root} (once; kept for later runs)", file=sys.stderr, flush=True)
    ensure_corpus(root, name.removeprefix("espeak-"))
    return budget, TASK_TITLES["speech"], CHANCE["speech"]


def run_demo(
    data_dir: str | None = None,
    out_dir: Path = Path("runs/demo"),
    budget: Budget = DEFAULT_BUDGET,
    workers: int | None = None,
) -> dict:
    """Run every job (``workers`` processes, default: up to 2 cores), print a table, write
    ``demo.json`` and ``demo.png``; returns the summary (see :func:`summarize`)."""
    out_dir = Path(out_dir)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    budget, speech_title, speech_chance = speech_source(budget)
    titles, chance = {**TASK_TITLES, "speech": speech_title}, {**CHANCE, "speech": speech_chance}
    task_methods = plan(budget)
    jobs = make_jobs(budget, out_dir, data_dir, task_methods)
    labels = {(j.task, j.method.key): j.method.label.replace("\n", " ") for j in jobs}
    for job in jobs:  # the demo's own run folders are replaced on every run
        if (Path(job.run_dir) / "config.yaml").exists():
            shutil.rmtree(job.run_dir)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    print(
        f"localssl demo: {len(jobs)} runs (pretrain + linear probe) over {budget.seeds} seed(s), {workers} process(es);"
        " a line as each run ends",
        file=sys.stderr,
        flush=True,
    )
    for task in budget.tasks:
        line = f"  {titles[task]}: {describe(budget, task, bool(data_dir))}".replace("\n", " ")
        print(line, file=sys.stderr, flush=True)
    rows: list[dict] = []

    def done(_: int, r: dict) -> None:
        rows.append(r)
        label = labels[r["task"], r["method"]]
        print(
            f"[{len(rows)}/{len(jobs)}] {r['task']}: {label}, seed {r['seed']}: test {r['test_acc_pct']:.1f}% "
            f"(pretrain {r['pretrain_s']:.0f} s, probe {r['probe_s']:.0f} s; {time.perf_counter() - t0:.0f} s so far)",
            file=sys.stderr,
            flush=True,
        )

    names = [f"{job.task}-{job.method.key}-seed{job.seed}" for job in jobs]
    run_jobs(_run_job, jobs, workers, names=names, threads=1, on_result=done)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - c0  # this process and its finished workers
    summary = summarize(rows, budget, task_methods)
    full = bool(data_dir)
    print(f"\nlocalssl demo — linear-probe test accuracy (%), mean ± std over {budget.seeds} seed(s)")
    for task in budget.tasks:
        print(f"\n{titles[task]}: {describe(budget, task, full)}; chance {chance[task]:.1f}%".replace(",\n", ", "))
        print(f"{'method':<27} {'test acc':>14} {'val acc':>8}   per seed")
        for s in summary[task].values():
            seeds = " ".join(f"{a:.1f}" for a in s["test"])
            label = s["label"].replace("\n", " ")
            print(f"{label:<27} {s['test_mean']:>7.1f} ± {s['test_std']:<4.1f} {s['val_mean']:>8.1f}   {seeds}")
    print(f"\n{wall:.0f} s wall, {cpu / 60:.1f} CPU-minutes, load average {os.getloadavg()[0]:.1f}")
    result = {
        "summary": summary,
        "runs": sorted(rows, key=lambda r: (r["task"], r["method"], r["seed"])),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "seeds": budget.seeds,
        "chance": {t: chance[t] for t in budget.tasks},
        "titles": {t: titles[t] for t in budget.tasks},
        "budget": {t: describe(budget, t, full) for t in budget.tasks},
    }
    (out_dir / "demo.json").write_text(json.dumps(result, indent=2))
    plot_demo(summary, out_dir / "demo.png", titles, chance, result["budget"], budget.seeds)
    print(f"wrote {out_dir / 'demo.json'} and {out_dir / 'demo.png'}")
    return result
