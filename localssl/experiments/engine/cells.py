"""A study's unit of work, the cell, and what the engine can tell of a cell from the disk and the scheduler.

A :class:`Cell` is one independent piece of a study: a train + probe run of a table, an RHM point, a speedrun
budget chain, a theory figure's computation. It has

* a ``key``, unique in its study and safe as a file name, which names its records;
* the work: ``fn(item)`` (a module-level function, or a ``functools.partial`` of one, and plain data, so that it
  can run in another process or as a SLURM job);
* how its result is found on disk: ``result``, a JSON file the engine writes the cell's result to and reads
  back instead of running the cell again (an RHM point), or ``finished()``, for work that keeps its own results
  (a run folder trained and probed, a budget chain's probes: running the cell again reuses them); without
  either, only the cell's own SLURM record can say it finished;
* ``run_dir``: the run folder it logs its steps in (``steps.csv``), if any, for the last logged step.

Under ``--launcher slurm`` each cell's job writes ``FOLDER/cells/<key>.json`` (running with its job id and
restart count, requeued, failed with its error line, finished) and the submitter records what it submitted in
``FOLDER/submitted.json`` (``FOLDER`` is ``OUT/slurm``). :func:`cell_status` reads them, with the scheduler's
queue, into one :class:`CellStatus` per cell: finished, pending, running (job id, last logged step),
requeued N times, failed (the error line), ended (its job ended without finishing it), or not submitted.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localssl.safe_files import read_text
from localssl.utils import CSV_LIMIT, atomic_write_json

# the scheduler's states of a job that may still run
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Cell:
    """One piece of a study's work: ``fn(item)``, named ``key`` (records) and ``label`` (progress, errors);
    ``finished()`` whether its work is on disk already, or ``result`` the JSON file that holds its result;
    ``run_dir`` the run folder it logs steps in."""

    key: str
    label: str
    fn: Callable[[Any], Any]
    item: Any
    finished: Callable[[], bool] | None = dataclasses.field(default=None, compare=False)
    run_dir: Path | None = None
    result: Path | None = None

    def done(self) -> bool:
        if self.result is not None:
            return self.result.exists()
        return self.finished is not None and self.finished()

    @property
    def on_disk(self) -> bool:
        """Whether the disk can tell that this cell finished (a ``result`` file or a ``finished()`` test)."""
        return self.result is not None or self.finished is not None


@dataclasses.dataclass(frozen=True)
class CellStatus:
    label: str
    state: str  # finished | pending | running | requeued | failed | ended | not submitted
    detail: str = ""


# --------------------------------------------------------------------------------------- records
def read_json(path: Path) -> dict[str, Any]:
    return json.loads(read_text(path)) if path.exists() else {}


def write_state(path: Path, state: str, **info: Any) -> None:
    """Merge ``info`` and ``state`` into the record ``path`` (a cell's job writes its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = read_json(path)
    atomic_write_json({**old, **info, "state": state, "at": time.strftime("%F %T")}, path)


def queue() -> dict[str, str]:
    """Every job the scheduler knows: id -> state (array tasks as ``ARRAY_TASK``); empty without SLURM."""
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


def last_step(run_dir: Path | None) -> str:
    """The global step of the last logged row of ``run_dir/steps.csv`` ('' before the first)."""
    path = Path(run_dir) / "steps.csv" if run_dir is not None else None
    if path is None or not path.exists():
        return ""
    lines = read_text(path, CSV_LIMIT).splitlines()
    if len(lines) < 2:
        return ""
    header = lines[0].split(",")
    return lines[-1].split(",")[header.index("step")] if "step" in header else ""


def last_line(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------- status
def cell_status(cells: Sequence[Cell], folder: Path, jobs: Mapping[str, str] | None = None) -> list[CellStatus]:
    """What each cell is now (see the module docstring); ``folder``: the launcher's records (``OUT/slurm``);
    ``jobs``: the scheduler's queue (read when not given)."""
    submitted = read_json(Path(folder) / "submitted.json")
    jobs = queue() if jobs is None else jobs
    return [_one(cell, submitted.get(cell.key), Path(folder), jobs) for cell in cells]


def _one(cell: Cell, sub: dict[str, Any] | None, folder: Path, jobs: Mapping[str, str]) -> CellStatus:
    record = read_json(folder / "cells" / f"{cell.key}.json")
    if cell.done():
        return CellStatus(cell.label, "finished", str(cell.run_dir or cell.result or ""))
    if sub is None:
        return CellStatus(cell.label, "not submitted")
    job = sub["job_id"]
    own = record.get("job_id", job) == job  # the record is this submission's, not an earlier one's
    restarts = int(record.get("restarts", 0)) if own else 0
    queued = jobs.get(job, "")
    final = record.get("state") if own and record.get("job_id") == job else None  # what the job itself wrote last
    if final == "failed":  # (the scheduler may list it a moment longer)
        return CellStatus(cell.label, "failed", f"job {job}: {record.get('error', '')}")
    if final == "finished" and not cell.on_disk:  # no result on disk to look at
        return CellStatus(cell.label, "finished", f"job {job}")
    if queued in ACTIVE:
        again = f"requeued {restarts}×, " if restarts else ""
        if queued in ("RUNNING", "COMPLETING"):
            step = last_step(cell.run_dir)
            at = f", last logged step {step}" if step else (", no step logged yet" if cell.run_dir else "")
            return CellStatus(cell.label, "running", f"{again}job {job}{at}")
        if restarts:
            return CellStatus(cell.label, "requeued", f"requeued {restarts}×, job {job} {queued.lower()}")
        return CellStatus(cell.label, "pending", f"job {job}")
    why = last_line(Path(sub.get("log", ""))) or record.get("note", "")
    return CellStatus(cell.label, "ended", f"job {job} ended without finishing it: {why}")


def format_status(statuses: Sequence[CellStatus]) -> str:
    """One line per cell, then the counts."""
    width = max((len(s.label) for s in statuses), default=0)
    lines = [f"{s.label:<{width}}  {s.state:<13} {s.detail}".rstrip() for s in statuses]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()) or "no cells")
    return "\n".join(lines)
