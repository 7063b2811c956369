"""``localssl reproduce fault-injection``: ``kill -9`` a small ``localssl pretrain`` at random moments,
``--resume`` it each time, and compare the result with an uninterrupted run of the same config.

Every kill is a real ``SIGKILL`` of a real ``python -m localssl pretrain`` process; nothing in the library
knows it is being tested. Kills alternate between two kinds of moment:

* ``random``: a uniformly random delay after the process logged its first new step (up to
  ``max_delay_steps`` times the mean step time of the uninterrupted run, so that the kills spread over
  the steps whatever the machine's load), falling anywhere in training, CSV appends and checkpoint writes;
* ``write``: as soon as the temporary file of a checkpoint write (``.checkpoint.pt.*.tmp``) appears in
  the run directory, i.e. in the middle of writing a checkpoint.

A kill counts as "during a checkpoint write" when it left such a temporary file behind, or left
``checkpoint.pt`` moved to ``checkpoint.prev.pt`` with the new one not yet in place. For every kill the
driver records the last step logged in ``steps.csv`` (``train.log_every=1``: every step) and the global
step of the checkpoint the resume starts from; their difference is the number of steps lost (trained
again). At the end it compares every tensor of the two final checkpoints (encoder, rule, optimizer state)
with ``torch.equal`` and every row of ``steps.csv`` and ``metrics.csv`` (timing columns aside), and
counts duplicated and missing rows. The experiment writes ``results.md`` (the table) and ``results.json``
(every kill); ``--seeds N`` repeats it with N seeds of the kill moments.

The tests (``tests/test_fault_injection.py``) call :func:`inject_faults` on a generated dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localssl.experiments import experiment

REPO = Path(__file__).resolve().parents[3]  # the folder holding this localssl package
TIMING = {"seconds", "images_per_s"}


@dataclass
class Kill:
    kind: str  # 'random' or 'write'
    last_logged_step: int  # highest step in steps.csv when the process died
    resumed_from_step: int  # global step of the checkpoint the next resume starts from (0: none yet)
    during_write: bool  # the kill left a checkpoint write unfinished

    @property
    def steps_lost(self) -> int:
        return self.last_logged_step - self.resumed_from_step


@dataclass
class Report:
    kills: list[Kill] = field(default_factory=list)
    finished_early: int = 0  # processes that completed before their kill moment came
    recovered: bool = False  # every resume ran without error and the last one finished the run
    identical_weights: bool = False
    tensors_compared: int = 0
    rows_duplicated: int = 0
    rows_missing: int = 0
    rows_differing: int = 0
    total_steps: int = 0
    seconds: float = 0.0

    @property
    def max_steps_lost(self) -> int:
        return max((k.steps_lost for k in self.kills), default=0)


def _environ() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "localssl", "pretrain", *args]


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def _last_logged_step(run: Path) -> int:
    """The highest step among the complete rows of ``steps.csv`` (a row cut short by the kill is ignored)."""
    if not (run / "steps.csv").exists():
        return 0
    text = (run / "steps.csv").read_text()
    lines = text.splitlines()[1:]
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    steps = [int(line.split(",")[1]) for line in lines if line.count(",") >= 1 and line.split(",")[1].isdigit()]
    return max(steps, default=0)


def _writing(run: Path) -> bool:
    return any(run.glob(".checkpoint.pt.*.tmp"))


def _checkpoint_step(run: Path) -> int:
    """The global step a ``--resume`` of ``run`` starts from (0 when no checkpoint was written yet)."""
    from localssl.checkpoint import CHECKPOINT, PREVIOUS, CorruptCheckpointError, load_checkpoint

    for name in (CHECKPOINT, PREVIOUS):  # the order localssl.checkpoint.load_latest falls back in
        if (run / name).exists():
            try:
                return int(load_checkpoint(run / name)["global_step"])
            except CorruptCheckpointError:
                continue
    return 0


def _caught_writing(proc: subprocess.Popen, run: Path, step: int) -> bool:
    """Poll (every 0.5 ms) until the checkpoint after ``step`` is being written: True; False when the
    process ended or logged a later step first (the write was missed)."""
    size = -1
    while proc.poll() is None:
        if _writing(run):
            return True
        try:
            now = (run / "steps.csv").stat().st_size
        except FileNotFoundError:
            now = -1
        if now != size:  # re-read the log only when it changed
            size = now
            if _last_logged_step(run) > step:
                return False
        time.sleep(0.0005)
    return False


def _kill_at(
    proc: subprocess.Popen, run_dir: Any, kind: str, max_delay: float, rng: random.Random, checkpoint_every: int
) -> bool:
    """Wait for the moment of kind ``kind``, then SIGKILL ``proc``. False when it finished first.

    Polls every 20 ms; a ``write`` kill polls every 0.5 ms only while the step before a checkpoint is being
    trained (the temporary file lives for a few milliseconds), so the driver itself stays cheap."""
    start_step = None
    deadline = None
    while proc.poll() is None:
        run = run_dir()
        if run is None:
            time.sleep(0.02)
            continue
        step = _last_logged_step(run)
        if kind == "write":
            if (step + 1) % checkpoint_every == 0 and _caught_writing(proc, run, step + 1):
                break
            time.sleep(0.02)
            continue
        if start_step is None:
            start_step = step
        if deadline is None and step > start_step:
            deadline = time.monotonic() + rng.uniform(0.0, max_delay)
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _all_tensors(ckpt: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, value in ckpt.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_all_tensors(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out.update(_all_tensors(dict(enumerate(value)), f"{name}."))
    return out


def compare_runs(reference: Path, run: Path, report: Report) -> None:
    """Fill ``report``'s comparison fields: every tensor of the final checkpoints (``torch.equal``) and
    every row of ``steps.csv`` / ``metrics.csv`` against the uninterrupted ``reference`` run."""
    import torch

    from localssl.checkpoint import load_checkpoint

    a, b = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    report.total_steps = int(a["global_step"])
    report.recovered = int(b["global_step"]) == report.total_steps and "position" not in b
    ta, tb = (
        _all_tensors({k: a[k] for k in ("encoder", "rule", "optimizer")}),
        _all_tensors({k: b[k] for k in ("encoder", "rule", "optimizer")}),
    )
    report.tensors_compared = len(ta)
    report.identical_weights = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    for log in ("steps.csv", "metrics.csv"):
        want, got = _read_rows(reference / log), _read_rows(run / log)
        steps = [r["step"] for r in got]
        report.rows_duplicated += len(steps) - len(set(steps))
        report.rows_missing += len({r["step"] for r in want} - set(steps))
        by_step = {r["step"]: r for r in got}
        report.rows_differing += sum(1 for r in want if r["step"] in by_step and by_step[r["step"]] != r)


def inject_faults(
    preset: str,
    overrides: list[str],
    workdir: Path,
    kills: int,
    seed: int = 0,
    max_delay_steps: float = 3.0,
    write_every: int = 2,
    timeout: float = 3600.0,
) -> Report:
    """Train ``preset`` + ``overrides`` once uninterrupted and once killed ``kills`` times (every
    ``write_every``-th kill aimed at a checkpoint write, the others at random moments), resuming after
    each kill, then compare the two. ``overrides`` should set ``train.log_every=1`` and
    ``train.checkpoint_every``; ``out_dir`` is set here."""
    workdir = Path(workdir)
    every = [o.split("=", 1)[1] for o in overrides if o.startswith("train.checkpoint_every=")]
    if not every:
        raise ValueError("set train.checkpoint_every=N in overrides (the write kills aim at those checkpoints)")
    checkpoint_every = int(every[-1])
    rng = random.Random(seed)
    env = _environ()
    t0 = time.monotonic()
    report = Report()
    out = subprocess.run(
        _command(preset, *overrides, f"out_dir={workdir / 'reference'}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{out.stderr[-3000:]}")
    reference = Path(out.stdout.strip().splitlines()[-1])
    with open(reference / "metrics.csv", newline="") as fh:
        epochs = list(csv.DictReader(fh))
    step_seconds = sum(float(r["seconds"]) for r in epochs) / int(epochs[-1]["step"])

    faulty_root = workdir / "faulty"

    def run_dir() -> Path | None:
        found = [p for p in faulty_root.glob("*") if (p / "config.yaml").exists()] if faulty_root.exists() else []
        return found[0] if found else None

    args = [preset, *overrides, f"out_dir={faulty_root}"]
    for i in range(kills):
        kind = "write" if write_every and (i + 1) % write_every == 0 else "random"
        log = workdir / f"process-{i}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=err)
            try:
                killed = _kill_at(proc, run_dir, kind, max_delay_steps * step_seconds, rng, checkpoint_every)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        run = run_dir()
        if not killed and proc.returncode != 0:
            raise RuntimeError(f"process {i} ({' '.join(args[:2])}) failed by itself:\n{log.read_text()[-3000:]}")
        if not killed:  # the run finished before this kill's moment came
            report.finished_early += 1
        else:
            assert run is not None
            report.kills.append(
                Kill(
                    kind=kind,
                    last_logged_step=_last_logged_step(run),
                    resumed_from_step=_checkpoint_step(run),
                    during_write=_writing(run)
                    or (not (run / "checkpoint.pt").exists() and (run / "checkpoint.prev.pt").exists()),
                )
            )
        if run is not None:
            args = ["--resume", str(run)]
        if not killed:
            break
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"fault injection ran past {timeout:.0f} s")
    run = run_dir()
    if run is None:
        raise RuntimeError("the faulty run never created its run directory")
    out = subprocess.run(_command("--resume", str(run)), env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"the final resume failed:\n{out.stderr[-3000:]}")
    compare_runs(reference, run, report)
    report.seconds = time.monotonic() - t0
    return report


def table(report: Report, checkpoint_every: int) -> list[str]:
    n, during = len(report.kills), sum(k.during_write for k in report.kills)
    lost = [k.steps_lost for k in report.kills]
    return [
        "| faults injected (during a checkpoint write) | runs recovered | steps lost: max (mean), checkpoint_every "
        "| rows duplicated | rows missing | rows differing | final weights vs uninterrupted |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {n} ({during}) | {f'{n}/{n}' if report.recovered else f'the final run is incomplete ({n} kills)'} "
        f"| {max(lost, default=0)} ({sum(lost) / max(len(lost), 1):.1f}), {checkpoint_every} "
        f"| {report.rows_duplicated} | {report.rows_missing} | {report.rows_differing} "
        f"| {'identical' if report.identical_weights else 'DIFFERENT'} "
        f"({report.tensors_compared} tensors, torch.equal) |",
    ]


@dataclass(frozen=True)
class Budget:
    protocol: str
    preset: str
    overrides: tuple[str, ...]
    kills: int
    checkpoint_every: int
    max_delay_steps: float = 3.0


SCALES = {
    "smoke": Budget(
        "pipeline check: `clapp++` at width 1/16 on 56 images of the CIFAR-10 subset shipped with localssl, batch "
        "8, 2 epochs of 7 steps; 2 kills",
        "clapp++",
        ("data.name=cifar10-mini", "data.train_subset=56", "train.batch_size=8", "train.epochs=2"),
        kills=2,
        checkpoint_every=2,
    ),
    "cpu": Budget(
        "`clapp++` at width 1/16 on 256 CIFAR-10 train images, batch 16, 4 epochs of 16 steps; 12 kills (odd ones "
        "at a random moment up to 3 mean step times after the process's first new step, even ones the moment a "
        "checkpoint's temporary file appears)",
        "clapp++",
        ("data.train_subset=256", "train.batch_size=16", "train.epochs=4"),
        kills=12,
        checkpoint_every=5,
    ),
}


def budget_overrides(budget: Budget) -> list[str]:
    return [
        "model.width=0.0625",
        "train.device=cpu",
        "train.progress=false",
        "train.log_every=1",
        f"train.checkpoint_every={budget.checkpoint_every}",
        *budget.overrides,
    ]


@experiment(
    "fault-injection",
    "kill -9 a small pretraining at random moments, --resume: same weights as uninterrupted?",
    tuple(SCALES),
    local=True,
)
def run(out: Path, scale: str, seeds: int) -> None:
    budget = SCALES[scale]
    overrides = budget_overrides(budget)
    rows, runs = [], []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory(prefix="localssl-faults-") as tmp:
            report = inject_faults(budget.preset, overrides, Path(tmp), budget.kills, seed, budget.max_delay_steps)
        body = table(report, budget.checkpoint_every)
        rows += body if not rows else body[2:]
        per_kill = ", ".join(f"{k.kind}:{k.last_logged_step}->{k.resumed_from_step}" for k in report.kills)
        runs.append(
            {
                **dataclasses.asdict(report),
                "seed": seed,
                "kill_moments": per_kill,
                "max_steps_lost": report.max_steps_lost,
            }
        )
    lines = [
        f"# Fault injection: kill -9 and --resume (scale `{scale}`)",
        "",
        f"- **Command:** `localssl reproduce fault-injection --scale {scale} --seeds {seeds}`.",
        f"- **Setting:** {budget.protocol}; overrides {' '.join(overrides)}; each kill followed by "
        "`localssl pretrain --resume`, then a last `--resume` to the end.",
        *(
            f"- **Seed {r['seed']}:** {r['total_steps']} steps, {r['finished_early']} process(es) finished before "
            f"their kill moment, {r['seconds']:.0f} s wall; kills as kind:last logged step->step resumed from: "
            f"{r['kill_moments']}."
            for r in runs
        ),
        "",
        *rows,
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(runs, indent=2) + "\n")
    print("\n".join(lines))
