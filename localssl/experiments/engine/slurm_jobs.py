"""The job side of the SLURM launcher (:mod:`localssl.experiments.engine.slurm`): what runs inside a submitit job.

* :class:`CellTask`: one cell of any study (:class:`~localssl.experiments.engine.cells.Cell`): its ``fn(item)``,
  its state (running, requeued, failed with its error line, finished) recorded in ``OUT/slurm/cells/<key>.json``;
* :class:`PretrainJob`: ``localssl pretrain`` over the job's tasks, each task one rank (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` from ``submitit.JobEnvironment``, as ``torchrun`` sets them).

Each has ``checkpoint()`` (the same call again), which submitit calls on the preemption signal before it
requeues the job. A run inside the job stops on that signal at a step with its exact-resume checkpoint
(:mod:`localssl.train.stop`); :func:`hand_over` then calls submitit's handler, which requeues the job (task 0)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from localssl.experiments.engine.cells import write_state


def _stop_signal_of(err: BaseException) -> int | None:
    """The signal number of the :class:`~localssl.train.stop.StopRequested` behind ``err``: -1 when another rank's
    signal stopped this one, ``None`` when ``err`` is no stop signal's (Ctrl-C)."""
    from localssl.train.stop import StopRequested

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, StopRequested):
            return seen.signum if seen.signum is not None else -1
        seen = seen.__context__
    return None


def hand_over(err: BaseException, record: Path | None = None, restarts: int = 0) -> NoReturn:
    """After a run stopped on a signal with its checkpoint written: on the preemption signal, call submitit's
    handler (task 0: ``checkpoint()`` then ``scontrol requeue``; other tasks: nothing), then end this task.
    Any other signal (``SIGTERM``: a cancel or the scheduler's own requeue) ends it with 128 + the signal."""
    from submitit.core.job_environment import JobEnvironment

    signum = _stop_signal_of(err)
    if signum is None:  # Ctrl-C in a job (never from the scheduler): as any interruption
        raise err
    usr = JobEnvironment._usr_sig()
    if signum in (usr, -1):
        if record is not None:
            write_state(record, "requeued", restarts=restarts + 1, note=str(err).splitlines()[0])
        handler = signal.getsignal(usr)
        print(f"localssl: {err}; handing over to submitit's requeue", file=sys.stderr, flush=True)
        if callable(handler):
            handler(usr, None)  # task 0: requeues the job and exits; other tasks: returns
        raise SystemExit(0)
    if record is not None:
        write_state(record, "stopped", restarts=restarts, note=str(err).splitlines()[0])
    raise SystemExit(128 + signum)


def job_ids() -> tuple[str, int]:
    """This SLURM job's id (``ARRAY_TASK`` for an array task) and how often it was requeued."""
    env = os.environ
    job = env.get("SLURM_JOB_ID", "")
    if env.get("SLURM_ARRAY_JOB_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return job, int(env.get("SLURM_RESTART_COUNT", "0") or 0)


def cpus_of_task() -> None:
    """Torch threads = the CPUs SLURM gave this task (``cpus_per_task``), not every core of the node."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


class CellTask:
    """Any cell's work as a SLURM job: ``fn(item)``, its state recorded in ``state_dir/<key>.json`` (running
    with its job id and restart count, requeued, failed with its error line, finished). ``checkpoint()``
    (called by submitit on the preemption signal) resubmits the same call: a run inside ``fn`` stops at a step
    with its checkpoint and resumes from it; work without checkpoints is done again from its start."""

    def __init__(self, fn: Any, state_dir: Path) -> None:
        self.fn = fn
        self.state_dir = Path(state_dir)

    def __call__(self, item: Any, key: str, run_dir: Path | None = None) -> Any:
        cpus_of_task()
        job, restarts = job_ids()
        record = self.state_dir / f"{key}.json"
        write_state(record, "running", job_id=job, restarts=restarts, run_dir=str(run_dir or ""))
        try:
            result = self.fn(item)
        except KeyboardInterrupt as err:
            hand_over(err, record, restarts)
        except Exception as err:
            line = f"{type(err).__name__}: {err}".splitlines()[0]
            write_state(record, "failed", error=line)
            print(f"localssl: error: {line}", file=sys.stderr, flush=True)
            raise
        write_state(record, "finished")
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same call again: the requeued job resumes the run from the checkpoint it wrote."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class PretrainJob:
    """``localssl pretrain`` as one job of one or more tasks: each task one rank (rendezvous on the job's
    first node), a fresh run in ``run_dir`` or, once it has a checkpoint, ``--resume run_dir``."""

    def __call__(self, preset: str, overrides: list[str], run_dir: Path) -> str:
        import submitit

        from localssl.config import load_config
        from localssl.train import pretrain, resume

        cpus_of_task()
        env = submitit.JobEnvironment()
        job, restarts = job_ids()
        os.environ.update(
            RANK=str(env.global_rank),
            WORLD_SIZE=str(env.num_tasks),
            LOCAL_RANK=str(env.local_rank),
            MASTER_ADDR=str(env.hostnames[0]),
            MASTER_PORT=str(rendezvous_port(job, restarts)),
        )
        run_dir = Path(run_dir)
        resuming = (run_dir / "checkpoint.pt").exists() or (run_dir / "config.yaml").exists()
        try:
            if resuming:
                resume(run_dir)
            else:
                pretrain(load_config(preset, overrides), run_dir)
        except KeyboardInterrupt as err:
            hand_over(err)
        return str(run_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def rendezvous_port(job: str, restarts: int) -> int:
    """A port for the job's process group, the same on every task: from the job id and its restart count."""
    digits = int("".join(c for c in job if c.isdigit()) or "0")
    return 20000 + (digits * 7 + restarts * 131) % 20000
