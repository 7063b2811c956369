"""One engine under every study: a study declares its cells, the engine runs or reuses them, locally or on
SLURM, and lists their state.

* :mod:`~localssl.experiments.engine.cells`: the :class:`Cell` (a key, ``fn(item)``, how its result is found
  on disk) and its state from the disk and the scheduler (``--status``);
* :mod:`~localssl.experiments.engine.run`: :func:`run_cells`, the :class:`Launcher` of this process;
* :mod:`~localssl.experiments.engine.local`: the local backend (``run_jobs``: in order, in processes);
* :mod:`~localssl.experiments.engine.slurm` and :mod:`~localssl.experiments.engine.slurm_jobs`: the SLURM backend
  through submitit (job arrays of cells, one run over a job's tasks, requeue on a time limit or preemption);
* :mod:`~localssl.experiments.engine.options`: the launcher's command-line options;
* the table harness, whose cells are train + probe runs: :mod:`~localssl.experiments.engine.grid` (a table
  declared as data: rows, columns, scales), :mod:`~localssl.experiments.engine.runs` (a cell's run and its
  reuse), :mod:`~localssl.experiments.engine.harness` (:func:`run_table`) and
  :mod:`~localssl.experiments.engine.report` (``results.md``, the figure, the provenance).

The studies are declarations beside it (the tables of :mod:`localssl.experiments.engine.harness`, the RHM grid, the
speedrun, the theory figures, ...); the demo and the speed suites measure this machine and stay local.
"""

from __future__ import annotations

from localssl.experiments.engine.cells import Cell, CellStatus
from localssl.experiments.engine.run import Launcher, StatusListed, current, run_cells, use

__all__ = ["Cell", "CellStatus", "Launcher", "StatusListed", "current", "run_cells", "use"]
