"""Where runs run: this machine, or a SLURM cluster through submitit (``--launcher slurm``).

**A grid on SLURM.** ``localssl reproduce NAME --launcher slurm`` hands the grid's unfinished cells to
:func:`submit_cells`: one job array (``submitit``'s ``map_array``), one task per cell, each task training
and probing its cell as a local run would (:class:`CellJob`: :func:`~localssl.experiments.runs.run_or_reuse`
and :func:`~localssl.experiments.runs.probe_or_reuse` under the cell's :class:`~localssl.experiments.runs.RunLock`).
The submitting command returns at once; ``--status`` lists each cell (:func:`grid_status`); the same command
run again after the jobs end finds every cell finished, reuses them and writes the report, as a local grid
does. What was submitted is recorded in ``OUT/slurm/submitted.json`` (a cell whose job is still queued or
running is never submitted again); each job records its state in ``OUT/slurm/cells/<key>.json``.

**One run on SLURM.** ``localssl pretrain ... --launcher slurm --nodes N`` submits one job of ``N`` nodes ×
``tasks_per_node`` tasks (one per GPU with ``--gpus-per-node G``); :class:`PretrainJob` sets each task's
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from ``submitit.JobEnvironment``,
as ``torchrun`` would, and trains data-parallel (or layer-parallel with ``train.parallel=layers``) over them.

**Time limits and preemption.** submitit asks SLURM for ``--signal=USR2@90`` (the signal: the ``signal``
setting, default ``USR2``, also a localssl stop signal: :mod:`localssl.train.stop`). Every task receives it;
the ranks stop at one step and write the exact-resume checkpoint; then task 0 hands over to submitit's own
handler, which calls the job's ``checkpoint()`` (the same call again: it resumes from the checkpoint) and
requeues the job (``scontrol requeue``: the job's ``Restarts`` count grows). A time limit requeues at most
``max_num_timeout`` times (submitit's setting, default 3); a preemption always. A job that raises (a bad
setting, a diverged run) is recorded as failed with its error line and is not requeued nor resubmitted
(``--retry-failed`` submits it again). ``SIGTERM`` (``scancel``, the scheduler's own requeue) stops the run
with its checkpoint and leaves the decision to the scheduler.

Executor settings are submitit's names for its ``AutoExecutor`` (``timeout_min``, ``nodes``,
``tasks_per_node``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_partition``,
``slurm_account``, ``slurm_constraint``, ``slurm_array_parallelism``, ``slurm_additional_parameters``,
``slurm_signal_delay_s``, ``slurm_max_num_timeout``, ...), given as ``--executor KEY=VALUE`` or in a YAML file
(``--executor-file lab.yaml``); ``signal`` (a name, e.g. ``USR1``) is localssl's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from localssl.config import RunConfig
from localssl.experiments.runs import find_run_dir, finished_epochs, probe_done, run_key
from localssl.experiments.slurm_jobs import CellJob, PretrainJob, Requeueable
from localssl.registry import ConfigError
from localssl.safe_files import open_fd, read_text
from localssl.utils import CSV_LIMIT, atomic_write_json

LAUNCHERS = ("local", "slurm")
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}  # fmt: skip


@dataclasses.dataclass
class Launcher:
    """How ``localssl reproduce`` runs a study's pieces: ``kind`` local or slurm; ``executor``: submitit
    settings; ``status``: list a table's cells and run nothing; ``retry_failed``: submit failed cells again."""

    kind: str = "local"
    executor: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: bool = False
    retry_failed: bool = False
    folder: Path | None = None  # submitit's logs and the launcher's records (default: OUT/slurm, ./slurm)


_CURRENT = Launcher()


def use(launcher: Launcher) -> None:
    """Make ``launcher`` the one every grid of this process goes through (set by the CLI)."""
    global _CURRENT
    if launcher.kind not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher.kind}: not one of {', '.join(LAUNCHERS)}")
    _CURRENT = launcher


def current() -> Launcher:
    return _CURRENT


# --------------------------------------------------------------------------------------- settings
def executor_options(file: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    """Executor settings from a YAML file (a mapping) and ``KEY=VALUE`` pairs (values read as YAML; the
    pairs win)."""
    options: dict[str, Any] = {}
    if file:
        loaded = yaml.safe_load(Path(file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: executor settings must be a mapping (key: value), got {type(loaded).__name__}")
        options.update(loaded)
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--executor {pair}: give KEY=VALUE (e.g. slurm_partition=gpu, timeout_min=240)")
        options[key.strip()] = yaml.safe_load(value)
    return options


def preempt_signal(options: Mapping[str, Any]) -> str:
    """The signal name (``USR2``, ``USR1``, ...) the cluster sends ahead of a time limit or preemption."""
    name = str(options.get("signal", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))).upper()
    name = name.removeprefix("SIG")
    if f"SIG{name}" not in signal.Signals.__members__:
        raise ConfigError(f"signal={name}: not a signal name (e.g. USR2, USR1, TERM)")
    return name


def make_executor(folder: Path, options: Mapping[str, Any], kind: str = "slurm") -> Any:
    """A ``submitit.AutoExecutor`` writing its logs under ``folder``, with ``options`` (submitit's names).

    The preemption signal is exported to the jobs (``SUBMITIT_PREEMPT_SIGNAL``) and added to localssl's stop
    signals (``LOCALSSL_STOP_SIGNALS``), so a run checkpoints on the very signal submitit requeues on."""
    try:
        import submitit
        from submitit.slurm.slurm import SlurmJobEnvironment
    except ImportError as err:
        raise ConfigError("--launcher slurm needs submitit: pip install 'localssl[slurm]'") from err
    name = preempt_signal(options)
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = name
    SlurmJobEnvironment.USR_SIG = name  # read when the sbatch script is written (--signal=NAME@delay)
    from localssl.train.stop import SIGNALS_ENV, stop_signals

    wanted = {s.name.removeprefix("SIG") for s in stop_signals()} | {name}
    os.environ[SIGNALS_ENV] = ",".join(sorted(wanted))
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    params = {k: v for k, v in options.items() if k != "signal"}
    try:
        executor.update_parameters(**params)
    except (ValueError, TypeError, NameError) as err:
        raise ConfigError(f"executor settings: {str(err).splitlines()[0]}") from err
    return executor


# --------------------------------------------------------------------------------------- the command line
def use_from_cli(args: Any, experiments: Mapping[str, Any], out: Path) -> None:
    """``reproduce NAME --launcher slurm`` / ``--status``: check that SLURM reaches experiment ``NAME``, then make
    the launcher of this process the one the options describe (records and logs under ``OUT/slurm``)."""
    how = experiments[args.name].slurm
    if args.status and how != "cells":
        tables = ", ".join(sorted(n for n, e in experiments.items() if e.slurm == "cells"))
        raise ConfigError(f"--status lists the cells of a table; '{args.name}' is not one (tables: {tables})")
    if not how:
        reached = ", ".join(sorted(n for n, e in experiments.items() if e.slurm))
        raise ConfigError(f"experiment '{args.name}' runs on this machine only; --launcher slurm reaches: {reached}")
    options = executor_options(args.executor_file, args.executor)
    use(Launcher(args.launcher, options, args.status, args.retry_failed, Path(out) / "slurm"))


def pretrain_from_cli(args: Any) -> int:
    """``pretrain --launcher slurm``: submit the run as one job (its tasks the ranks); print job, log and run."""
    if args.resume or not args.preset:
        raise ConfigError("--launcher slurm starts a fresh run from a preset (a requeued job resumes by itself)")
    options = executor_options(args.executor_file, args.executor)
    job, run_dir, log = submit_pretrain(args.preset, args.overrides, options, args.nodes, args.gpus_per_node)
    print(f"submitted job {job}; log {log}", file=sys.stderr)
    print(run_dir)
    return 0


# --------------------------------------------------------------------------------------- one run
def submit_pretrain(
    preset: str, overrides: list[str], options: Mapping[str, Any], nodes: int | None, gpus_per_node: int | None
) -> tuple[str, Path, Path]:
    """Submit ``localssl pretrain PRESET OVERRIDES`` as one job; returns (job id, run directory, log)."""
    from localssl.config import load_config
    from localssl.train.run import new_run_dir

    cfg = load_config(preset, overrides)  # bad settings fail here, before anything is submitted
    run_dir = new_run_dir(cfg)
    opts = dict(options)
    if nodes is not None:
        opts["nodes"] = nodes
    if gpus_per_node is not None:
        opts["gpus_per_node"] = gpus_per_node
        opts.setdefault("tasks_per_node", max(1, gpus_per_node))
    opts.setdefault("name", f"localssl-{cfg.name}")
    executor = make_executor(Path(cfg.out_dir) / "slurm", opts)
    job = executor.submit(PretrainJob(), preset, list(overrides), run_dir)
    return str(job.job_id), run_dir, Path(job.paths.stderr)


# --------------------------------------------------------------------------------------- a grid
@dataclasses.dataclass(frozen=True)
class PlannedCell:
    """A cell of a grid as the launcher sees it: its label and config."""

    label: str
    cfg: RunConfig


@dataclasses.dataclass(frozen=True)
class CellStatus:
    label: str
    state: str  # finished | pending | running | requeued | failed | ended | not submitted
    detail: str = ""


def _queue() -> dict[str, str]:
    """Every job the scheduler knows: id -> state (array tasks as ``ARRAY_TASK``)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return {}
    jobs: dict[str, str] = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        jobs[job] = state
    return jobs


def _last_step(run_dir: Path) -> str:
    """The global step of the last logged row of ``run_dir/steps.csv`` ('' before the first)."""
    path = run_dir / "steps.csv"
    if not path.exists():
        return ""
    lines = read_text(path, CSV_LIMIT).splitlines()
    if len(lines) < 2:
        return ""
    header = lines[0].split(",")
    return lines[-1].split(",")[header.index("step")] if "step" in header else ""


def _state_dir(out: Path) -> Path:
    return Path(out) / "slurm"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(read_text(path)) if path.exists() else {}


def grid_status(cells: Sequence[PlannedCell], runs_dir: Path, out: Path) -> list[CellStatus]:
    """What each cell is now: finished (its run and probe are done), pending / running (its job id, the last
    logged step) / requeued N times, failed (its error line), ended (its job ended without finishing it and
    without an error: cancelled, killed), or not submitted."""
    folder = _state_dir(out)
    submitted = _read_json(folder / "submitted.json")
    queue = _queue()
    statuses = []
    for cell in cells:
        key = run_key(cell.cfg)
        run_dir = find_run_dir(cell.cfg, runs_dir)
        record = _read_json(folder / "cells" / f"{key}.json")
        sub = submitted.get(key)
        epochs = finished_epochs(run_dir)
        if epochs == cell.cfg.train.epochs and probe_done(cell.cfg, run_dir, epochs):
            statuses.append(CellStatus(cell.label, "finished", str(run_dir)))
            continue
        if sub is None:
            statuses.append(CellStatus(cell.label, "not submitted"))
            continue
        job = sub["job_id"]
        restarts = int(record.get("restarts", 0)) if record.get("job_id", job) == job else 0
        queued = queue.get(job, "")
        if queued in ACTIVE:
            again = f"requeued {restarts}×, " if restarts else ""
            if queued in ("RUNNING", "COMPLETING"):
                step = _last_step(run_dir)
                at = f", last logged step {step}" if step else ", no step logged yet"
                statuses.append(CellStatus(cell.label, "running", f"{again}job {job}{at}"))
            elif restarts:
                statuses.append(CellStatus(cell.label, "requeued", f"requeued {restarts}×, job {job} {queued.lower()}"))
            else:
                statuses.append(CellStatus(cell.label, "pending", f"job {job}"))
        elif record.get("state") == "failed" and record.get("job_id") == job:
            statuses.append(CellStatus(cell.label, "failed", f"job {job}: {record.get('error', '')}"))
        else:
            why = _last_line(Path(sub.get("log", ""))) or record.get("note", "")
            statuses.append(CellStatus(cell.label, "ended", f"job {job} ended without finishing it: {why}"))
    return statuses


def _last_line(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def format_status(statuses: Sequence[CellStatus]) -> str:
    """One line per cell, then the counts."""
    width = max((len(s.label) for s in statuses), default=0)
    lines = [f"{s.label:<{width}}  {s.state:<13} {s.detail}".rstrip() for s in statuses]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()) or "no cells")
    return "\n".join(lines)


@contextlib.contextmanager
def _submission_lock(folder: Path) -> Iterator[None]:
    """One submitter of a grid at a time (two commands at once must not submit a cell twice)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_fd(folder / ".submit.lock", os.O_WRONLY | os.O_CREAT), "w") as fh:  # no planted link
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def submit_cells(
    name: str,
    cells: Sequence[PlannedCell],
    runs_dir: Path,
    out: Path,
    options: Mapping[str, Any],
    retry_failed: bool = False,
    keep_features: bool = False,
) -> list[CellStatus]:
    """Submit the cells that are neither finished nor queued or running (and, with ``retry_failed``, the failed
    ones) as one job array; returns every cell's status after the submission."""
    folder = _state_dir(out)
    with _submission_lock(folder):
        statuses = grid_status(cells, runs_dir, out)
        wanted = {"not submitted", "ended", *(("failed",) if retry_failed else ())}
        todo = [c for c, s in zip(cells, statuses) if s.state in wanted]
        if todo:
            opts = {"name": f"localssl-{name}", **options}
            executor = make_executor(folder / "logs", opts)
            job = CellJob()
            n = len(todo)
            jobs = executor.map_array(
                job, [c.cfg for c in todo], [runs_dir] * n, [folder / "cells"] * n, [keep_features] * n
            )
            submitted = _read_json(folder / "submitted.json")
            for cell, j in zip(todo, jobs):
                key = run_key(cell.cfg)
                (folder / "cells" / f"{key}.json").unlink(missing_ok=True)  # a new job: its own record
                submitted[key] = {
                    "job_id": str(j.job_id),
                    "label": cell.label,
                    "log": str(j.paths.stderr),
                    "submitted": time.strftime("%F %T"),
                }
            atomic_write_json(submitted, folder / "submitted.json")
            print(f"submitted {n} cell(s) as job array {str(jobs[0].job_id).split('_')[0]}", file=sys.stderr)
        return grid_status(cells, runs_dir, out)


# --------------------------------------------------------------------------------------- any study's jobs
def run_on_slurm(
    fn: Any,
    items: Sequence[Any],
    labels: Sequence[str],
    launcher: Launcher,
    on_result: Any = None,
    error: Any = RuntimeError,
    poll_s: float = 2.0,
) -> list[Any]:
    """:func:`~localssl.experiments.jobs.run_jobs` on SLURM: ``items`` as one job array of ``fn``, waited for
    here; results in the order of ``items``, ``on_result(i, result)`` as each ends. A job that raised (or ended
    without a result: cancelled, killed) cancels the others and raises ``error(label, RuntimeError(why))``
    (``run_jobs`` passes its ``JobError``)."""
    from submitit.core.utils import pickle_load

    folder = launcher.folder or Path("slurm")
    executor = make_executor(folder / "logs", {"name": "localssl-jobs", **launcher.executor})
    jobs = executor.map_array(Requeueable(fn), list(items))
    array = str(jobs[0].job_id).split("_")[0] if jobs else ""
    print(f"submitted {len(jobs)} job(s) as array {array}; logs in {folder / 'logs'}", file=sys.stderr, flush=True)
    results: list[Any] = [None] * len(jobs)
    waiting = set(range(len(jobs)))
    while waiting:
        time.sleep(poll_s)
        queue = _queue()
        for i in sorted(waiting):
            path = Path(jobs[i].paths.result_pickle)
            if path.exists():
                outcome, value = pickle_load(path)
                if outcome != "success":
                    line = next((x for x in reversed(str(value).splitlines()) if x.strip()), "error")
                    _cancel(array)
                    raise error(labels[i], RuntimeError(f"job {jobs[i].job_id}: {line.strip()}"))
                results[i] = value
                waiting.discard(i)
                if on_result is not None:
                    on_result(i, value)
            elif _ended(jobs[i], queue):
                _cancel(array)
                why = _last_line(Path(jobs[i].paths.stderr)) or "no log"
                raise error(labels[i], RuntimeError(f"job {jobs[i].job_id} ended without a result: {why}"))
    return results


def _ended(job: Any, queue: Mapping[str, str]) -> bool:
    """Whether ``job`` ended without a result: the scheduler lists it in a final state or no longer lists it, and
    its result pickle (written just before the task exits) has not appeared a moment later."""
    if queue.get(str(job.job_id), "") in ACTIVE:
        return False
    time.sleep(1.0)
    return not Path(job.paths.result_pickle).exists()


def _cancel(array: str) -> None:
    if array:
        subprocess.run(["scancel", array], capture_output=True, check=False)
