"""The SLURM backend of the engine, through submitit (``--launcher slurm``).

**A study's cells on SLURM.** :func:`submit` hands the cells that need it to SLURM as one job array
(submitit's ``map_array``), one task per cell, each task running the cell's work
(:class:`~localssl.experiments.engine.slurm_jobs.CellTask`); what was submitted is recorded in
``OUT/slurm/submitted.json`` (a cell whose job is still queued or running is never submitted again) and each
job records its state in ``OUT/slurm/cells/<key>.json``. A table's cells are submitted and left to run (the
same command run again after the jobs end reuses them and writes the report); the other studies' cells are
waited for here (:func:`wait`), their results handed back in order as a local run would.

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
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from localssl.experiments.engine.cells import (
    ACTIVE,
    Cell,
    CellStatus,
    cell_status,
    last_line,
    queue,
    read_json,
)
from localssl.experiments.engine.slurm_jobs import CellTask, PretrainJob
from localssl.registry import ConfigError
from localssl.safe_files import open_fd
from localssl.utils import atomic_write_json


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


# --------------------------------------------------------------------------------------- a study's cells
@contextlib.contextmanager
def _submission_lock(folder: Path) -> Iterator[None]:
    """One submitter of a study at a time (two commands at once must not submit a cell twice)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_fd(folder / ".submit.lock", os.O_WRONLY | os.O_CREAT), "w") as fh:  # no planted link
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def submit(
    name: str, cells: Sequence[Cell], folder: Path, options: Mapping[str, Any], wanted: set[str]
) -> list[CellStatus]:
    """Submit the cells whose state is in ``wanted`` (e.g. not submitted, ended) as one job array, under
    ``folder`` (``OUT/slurm``); returns every cell's status after the submission."""
    folder = Path(folder)
    with _submission_lock(folder):
        todo = [c for c, s in zip(cells, cell_status(cells, folder)) if s.state in wanted]
        if todo:
            executor = make_executor(folder / "logs", {"name": f"localssl-{name}", **options})
            by_fn: dict[int, list[Cell]] = {}
            for cell in todo:  # one array per function (a study's cells share one)
                by_fn.setdefault(id(cell.fn), []).append(cell)
            submitted = read_json(folder / "submitted.json")
            arrays = []
            for group in by_fn.values():
                task = CellTask(group[0].fn, folder / "cells")
                jobs = executor.map_array(
                    task, [c.item for c in group], [c.key for c in group], [c.run_dir for c in group]
                )
                arrays.append(str(jobs[0].job_id).split("_")[0])
                for cell, job in zip(group, jobs):
                    (folder / "cells" / f"{cell.key}.json").unlink(missing_ok=True)  # a new job: its own record
                    submitted[cell.key] = {
                        "job_id": str(job.job_id),
                        "label": cell.label,
                        "log": str(job.paths.stderr),
                        "result": str(job.paths.result_pickle),
                        "submitted": time.strftime("%F %T"),
                    }
            atomic_write_json(submitted, folder / "submitted.json")
            print(
                f"submitted {len(todo)} cell(s) as job array {', '.join(arrays)}",
                file=sys.stderr,
                flush=True,
            )
        return cell_status(cells, folder)


def wait(
    cells: Sequence[Cell],
    folder: Path,
    on_result: Callable[[int, Any], Any] | None,
    error: Callable[[str, BaseException], BaseException],
    poll_s: float = 2.0,
) -> list[Any]:
    """The results of the submitted ``cells`` in their order, waited for; ``on_result(i, result)`` as each ends.
    A cell whose job raised (or ended without a result: cancelled, killed) cancels the others and raises
    ``error(label, RuntimeError(why))``."""
    from submitit.core.utils import pickle_load

    submitted = read_json(Path(folder) / "submitted.json")
    records = [submitted[c.key] for c in cells]
    results: list[Any] = [None] * len(cells)
    waiting = set(range(len(cells)))
    while waiting:
        time.sleep(poll_s)
        jobs = queue()
        for i in sorted(waiting):
            rec = records[i]
            path = Path(rec["result"])
            if path.exists():
                outcome, value = pickle_load(path)
                if outcome != "success":
                    line = next((x for x in reversed(str(value).splitlines()) if x.strip()), "error")
                    _cancel(records)
                    raise error(cells[i].label, RuntimeError(f"job {rec['job_id']}: {line.strip()}"))
                results[i] = value
                waiting.discard(i)
                if on_result is not None:
                    on_result(i, value)
            elif _ended(rec, jobs):
                _cancel(records)
                why = last_line(Path(rec["log"])) or "no log"
                raise error(cells[i].label, RuntimeError(f"job {rec['job_id']} ended without a result: {why}"))
    return results


def _ended(rec: Mapping[str, str], jobs: Mapping[str, str]) -> bool:
    """Whether a job ended without a result: the scheduler lists it in a final state or no longer lists it, and
    its result pickle (written just before the task exits) has not appeared a moment later."""
    if jobs.get(rec["job_id"], "") in ACTIVE:
        return False
    time.sleep(1.0)
    return not Path(rec["result"]).exists()


def _cancel(records: Sequence[Mapping[str, str]]) -> None:
    arrays = sorted({r["job_id"].split("_")[0] for r in records})
    if arrays:
        subprocess.run(["scancel", *arrays], capture_output=True, check=False)
