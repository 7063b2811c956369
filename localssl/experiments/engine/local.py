"""The engine's local backend: independent jobs, one after another or in a pool of processes.

The engine (:func:`localssl.experiments.engine.run.run_cells`) runs a study's cells locally through
:func:`run_jobs`; what stays on this machine by design calls it directly (the runs of the demo, a bench suite
that wants a fresh process per preset, a table's cells trained in parallel):

* ``jobs=1`` runs them in this process, in the given order;
* ``jobs=N`` runs them in ``N`` processes at once (``spawn``: a fresh interpreter each, so CUDA works in
  them and nothing of this process's state leaks in), each with ``threads`` torch threads (default:
  the CPU count divided by ``N``, so ``N`` = the core count gives one thread per core);
* ``fresh=True`` gives every job a process of its own, even with ``jobs=1``, so that its peak memory
  (``ru_maxrss``) is its own.

Results come back in the order of the jobs, whatever order they finish in; ``on_result(i, result)``
is called in this process as each job ends (for progress lines, caches and reports rewritten as the
work goes). A job that raises stops the run: the jobs not yet started are cancelled and
:class:`JobError` names the job that failed, chained to its exception.

``fn`` and the jobs must be picklable when processes are used: a module-level function (or a
``functools.partial`` of one) and plain data.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class JobError(RuntimeError):
    """A job raised; the message names it and the job's own exception is the ``__cause__``."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"job {name} failed: {type(error).__name__}: {error}")
        self.job = name


def default_threads(jobs: int) -> int:
    """Torch threads for each of ``jobs`` worker processes: the CPU count shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_jobs(
    fn: Callable[[T], R],
    items: Sequence[T],
    jobs: int = 1,
    *,
    names: Sequence[str] | None = None,
    threads: int | None = None,
    on_result: Callable[[int, R], Any] | None = None,
    fresh: bool = False,
) -> list[R]:
    """``[fn(item) for item in items]``, in ``jobs`` processes at once (see the module docstring).

    ``names``: a label per job for :class:`JobError` (default ``str(item)``). ``threads``: torch threads
    in each worker process (default :func:`default_threads`); jobs run in this process keep its setting."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    labels = list(names) if names is not None else [str(item) for item in items]
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} names for {len(items)} jobs")
    results: list[Any] = [None] * len(items)
    if jobs == 1 and not fresh:
        for i, item in enumerate(items):
            try:
                results[i] = fn(item)
            except Exception as err:
                raise JobError(labels[i], err) from err
            if on_result is not None:
                on_result(i, results[i])
        return results
    workers = max(1, min(jobs, len(items)))
    ctx = multiprocessing.get_context("spawn")
    threads = default_threads(workers) if threads is None else threads
    pool = cf.ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads,),
        max_tasks_per_child=1 if fresh else None,
    )
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as err:
                raise JobError(labels[i], err) from err
            if on_result is not None:
                on_result(i, results[i])
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
