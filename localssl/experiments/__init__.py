"""Paper tables and figures as registered, runnable experiments (``localssl reproduce NAME``).

An experiment is a function ``run(out: Path, scale: str, seeds: int) -> None`` that writes
``results.csv`` (long form), ``results.md`` and its figures into ``out``. Register it with
:func:`experiment` in a module of this package; :func:`load_all` imports every module, so the CLI finds it.
Every study declares its work as cells that one engine runs or reuses, locally or on SLURM, and lists
(``--status``): :mod:`localssl.experiments.engine`. Paper tables are declared as data for the engine's
table harness (``engine/grid.py``, ``engine/harness.py``, ``engine/runs.py``, ``engine/report.py``; e.g.
``clapp_pp/table2.py``), whose cells are train +
probe runs; the other studies declare their own cells (an RHM point, a speedrun budget chain, a theory figure's
computation). The studies sit beside the engine, one package per paper: ``clapp_pp/`` (CLAPP++), ``clapp2021/``
(CLAPP 2021, its speech column included), ``rhm/`` (the Random Hierarchy Model), and ``library/`` for
this library's own studies (the accuracy studies that were benchmark scripts: ``benchmarks/README.md`` maps
each old script to its command).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path

SCALES = ("smoke", "cpu", "paper")


def worker_count(default: int) -> int:
    """Parallel single-threaded runs for experiments that run many small jobs: ``$LOCALSSL_WORKERS`` if
    set (e.g. 1 on a machine that is busy with something else), else ``default``, at most the CPU count."""
    value = os.environ.get("LOCALSSL_WORKERS", "")
    if value and not value.isdigit():
        raise ValueError(f"LOCALSSL_WORKERS must be a positive integer, got '{value}'")
    return max(1, min(int(value) if value else default, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    run: Callable[[Path, str, int], None]
    description: str
    scales: tuple[str, ...] = SCALES  # the --scale values it has
    local: bool = False  # it measures this machine: not through the engine's launcher (--launcher slurm, --status)


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(
    name: str, description: str, scales: tuple[str, ...] = SCALES, local: bool = False
) -> Callable[[Callable[[Path, str, int], None]], Callable]:
    """Register ``fn`` as experiment ``name``: it hands its cells to the engine
    (:func:`~localssl.experiments.engine.run.run_cells`, or :func:`~localssl.experiments.engine.harness.run_table` for a
    table), so it runs locally or on SLURM and ``--status`` lists its cells; ``local``: it measures this machine
    and runs here only."""

    def deco(fn: Callable[[Path, str, int], None]) -> Callable[[Path, str, int], None]:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment '{name}' registered twice")
        EXPERIMENTS[name] = Experiment(name, fn, description, tuple(scales), local)
        return fn

    return deco


def load_all() -> dict[str, Experiment]:
    """Import every module of this package and its subpackages (each registers its experiments)."""
    for mod in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(mod.name)
    return EXPERIMENTS
