"""The engine: run or reuse a study's cells on this machine or on SLURM, or list their state.

A study declares its cells (:class:`~localssl.experiments.engine.cells.Cell`) and hands them to
:func:`run_cells`; the launcher of this process (:class:`Launcher`, set from ``localssl reproduce``'s options)
decides what happens to them:

* ``--launcher local`` (the default): the cells' work through :func:`~localssl.experiments.engine.local.run_jobs`,
  in order, in ``jobs`` processes at once (``threads`` torch threads each), ``on_result(i, result)`` as each
  ends, a failing cell named by its label (:class:`~localssl.experiments.engine.local.JobError`);
* ``--launcher slurm``: the cells as one job array (:func:`~localssl.experiments.engine.slurm.submit`), waited
  for (``wait=True``: results in order, as locally) or left to run (a table: the same command again, once
  the jobs have ended, reuses the finished cells and writes the report);
* ``--status``: nothing runs; each cell's state is printed (:func:`~localssl.experiments.engine.cells.cell_status`)
  and :class:`StatusListed` ends the study there.

Each cell's work reuses what is on disk (a finished run, a result file), so running a study again continues it.

The local backend is :func:`~localssl.experiments.engine.local.run_jobs`, not submitit's local executor: that one
starts every job as a subprocess of its own at once (no bound like ``--jobs N``, no threads per worker), has no
in-process mode (``--jobs 1`` runs the cells in this process, with its thread setting and no start-up cost), and
hands results back through pickles on disk that would have to be polled for ``on_result``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from localssl.experiments.engine import slurm
from localssl.experiments.engine.cells import Cell, CellStatus, cell_status, format_status
from localssl.experiments.engine.local import JobError, run_jobs
from localssl.registry import ConfigError
from localssl.safe_files import read_text
from localssl.utils import atomic_write_json

LAUNCHERS = ("local", "slurm")


@dataclasses.dataclass
class Launcher:
    """How ``localssl reproduce`` runs a study's cells: ``kind`` local or slurm; ``executor``: submitit
    settings; ``status``: list the cells and run nothing; ``retry_failed``: submit failed cells again."""

    kind: str = "local"
    executor: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: bool = False
    retry_failed: bool = False
    folder: Path | None = None  # submitit's logs and the launcher's records (the CLI: OUT/slurm)

    @property
    def records(self) -> Path:
        """The records folder; never a default relative to the working directory (a study's records sit beside
        its report, ``OUT/slurm``)."""
        if self.folder is None:
            raise RuntimeError("this launcher has no records folder: give Launcher(folder=OUT / 'slurm')")
        return self.folder


_CURRENT = Launcher()


def use(launcher: Launcher) -> None:
    """Make ``launcher`` the one every study of this process goes through (set by the CLI)."""
    global _CURRENT
    if launcher.kind not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher.kind}: not one of {', '.join(LAUNCHERS)}")
    _CURRENT = launcher


def current() -> Launcher:
    return _CURRENT


class StatusListed(Exception):
    """``--status``: the study's cells were listed; nothing ran (the command ends here, successfully)."""


def use_from_cli(args: Any, experiments: Mapping[str, Any], out: Path) -> None:
    """``reproduce NAME --launcher slurm`` / ``--status``: check that the engine runs experiment ``NAME`` (not one
    that measures this machine), then make the launcher of this process the one the options describe (records
    and logs under ``OUT/slurm``)."""
    if experiments[args.name].local:
        reached = ", ".join(sorted(n for n, e in experiments.items() if not e.local))
        raise ConfigError(
            f"experiment '{args.name}' runs on this machine only (it measures it); --launcher slurm and --status "
            f"reach: {reached}"
        )
    options = slurm.executor_options(args.executor_file, args.executor)
    use(Launcher(args.launcher, options, args.status, args.retry_failed, Path(out) / "slurm"))


def show_status(
    title: str, cells: Sequence[Cell], statuses: Sequence[CellStatus] | None = None, folder: Path | None = None
) -> None:
    """Print ``title, N cell(s):`` and one line per cell (their states now, from the records in ``folder``
    (default: the launcher's), unless given)."""
    statuses = cell_status(cells, folder or current().records) if statuses is None else statuses
    print(f"{title}, {len(cells)} cell(s):\n{format_status(statuses)}", flush=True)


def run_cells(
    study: str,
    cells: Sequence[Cell],
    jobs: int = 1,
    *,
    threads: int | None = None,
    on_result: Callable[[int, Any], Any] | None = None,
) -> list[Any]:
    """The results of ``cells`` in their order, each cell run (or its work reused) by the launcher of this
    process (see the module docstring); ``study`` names them in the status list and the SLURM job names.
    A cell whose ``result`` file exists is read back and not run; the others run, their results written to
    their ``result`` files as they end, ``on_result(i, result)`` called (``i``: the cell's index)."""
    launcher = current()
    if len({c.key for c in cells}) != len(cells):
        raise ValueError(f"{study}: two cells with one key")
    if launcher.status:
        show_status(study, cells)
        raise StatusListed(study)
    results: list[Any] = [None] * len(cells)
    todo = []
    for i, cell in enumerate(cells):
        if cell.result is not None and cell.result.exists():  # its result on disk: read back, not run again
            results[i] = json.loads(read_text(cell.result))
        else:
            todo.append(i)

    def ended(k: int, value: Any) -> None:
        i = todo[k]
        results[i] = value
        if cells[i].result is not None:
            atomic_write_json(value, cells[i].result)
        if on_result is not None:
            on_result(i, value)

    pending = [cells[i] for i in todo]
    if launcher.kind == "slurm" and pending:
        wanted = {"not submitted", "ended", "failed", "finished"}  # all but those queued or running already
        statuses = slurm.submit(study, pending, launcher.records, launcher.executor, wanted)
        show_status(study, pending, statuses)
        slurm.wait(pending, launcher.records, ended, error=JobError)
    elif pending:
        pieces = [(c.fn, c.item) for c in pending]
        run_jobs(_work, pieces, jobs, names=[c.label for c in pending], threads=threads, on_result=ended)
    return results


def _work(piece: tuple[Callable[[Any], Any], Any]) -> Any:
    fn, item = piece
    return fn(item)


def submit_table(name: str, cells: Sequence[Cell], folder: Path) -> list[CellStatus]:
    """A table's cells on SLURM: submit those not finished, queued or running (failed ones with ``--retry-failed``)
    and leave them to run, recorded in ``folder`` (``OUT/slurm``); every cell's status after the submission."""
    launcher = current()
    wanted = {"not submitted", "ended", *(("failed",) if launcher.retry_failed else ())}
    return slurm.submit(name, cells, folder, launcher.executor, wanted)
