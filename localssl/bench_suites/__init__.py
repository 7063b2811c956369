"""Named speed studies: ``localssl bench --suite NAME [key=value ...] [--results FILE.md] [--out FILE.json]``.

A suite is a function registered with :func:`suite` in a module of this package (``steps.py``: whole
training steps of presets; ``parts.py``: parts of a step and of the probe; ``smoke.py``). It measures,
hands each finished piece of its report (Markdown: a dated ``### `` heading with the command, the
machine, the table) to ``opts.emit`` and returns its measurements as JSON. ``emit`` prints the piece
and, with ``--results``, appends it to that file with :func:`localssl.bench.append_entry` (the suite's
``section``; ``None``: at the end of the file, piece by piece, so that a run cut off keeps what it has).
``key=value`` overrides apply to every preset a suite builds, after the suite's own; ``--rounds``,
``--steps``, ``--warmup``, ``--memory-repeats``, ``--threads`` and ``--presets`` mean what they mean for
``localssl bench``. A suite whose JSON has a true ``failed`` makes the command exit with status 1.

The suites (their latest numbers: ``benchmarks/RESULTS.md``; the index: ``benchmarks/README.md``):

* ``b-cost``: ``clapp++``'s dense ``B`` against its cheaper variants, each against ``bp-clapp++``;
* ``b-precision``: one full-width ``B`` map in fp32, bf16 autocast and bf16 storage;
* ``streaming``: layer streaming vs the summed loss for ``clapp++dfb`` and ``clapp++both``;
* ``patch-grid``: the patch-grid presets (CLAPP 2021, CPC, GIM) against ``cpc`` on the small grid;
* ``zoo``: every image preset alone in a fresh process (speed, FLOPs, memory);
* ``table2-flops``: training FLOP per image of every Table 2 row, extrapolated to full width;
* ``online-probe``: the cost of the online read-outs against the rule's step;
* ``probe-memory``: peak RSS of the honest probe's feature storage, before and after 5903c00;
* ``fast-path``: the default precision (``auto``) vs fp32 of ``clapp++``, ``bp-clapp++``, ``clapp++nospatial``;
* ``smoke``: a few training steps of every preset on a device (``benchmarks/device_check.sh``'s stage 2);
* ``roofline``: this machine's peaks (matrix product, convolutions; the fast path's precision and fp32; one
  thread and all), then every image preset's step at widths 1/4 and 1: counted FLOP, time, fraction of the
  peak, the profile's top operators (``roofline.py``);
* ``speedrun-steps``: steps per minute of one core for every rule and width of ``localssl reproduce speedrun``
  (``--threads 2``: of the whole machine, for its record);
* ``layer-parallel``: ``clapp++`` in one process (1 and 2 threads), data-parallel 2×1, the layer pipeline 2×1 and
  ``bp-clapp++`` over ``torch.distributed.pipelining`` (``pp_backprop.py``), each in fresh processes;
* ``pipeline-model``: the cost model of :mod:`localssl.train.pipeline_cost` checked against ``layer-parallel``'s
  K=2 measurement, and its predictions for K = 2, 4, 6 on H100s (NVLink, InfiniBand).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localssl.bench import SECTION, Spec, append_entry, bench_entry, run_bench


@dataclasses.dataclass
class Options:
    """What a suite is given: the command line's settings and the writer of its report."""

    command: str
    overrides: list[str]
    rounds: int = 5
    steps: int = 2
    warmup: int = 1
    memory_repeats: int = 1
    threads: int | None = None
    presets: list[str] | None = None
    emit: Callable[[str], None] = print


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    run: Callable[[Options], dict[str, Any]]
    section: str | None = SECTION  # where its entries go in the results file (None: the end)


SUITES: dict[str, Suite] = {}


def suite(name: str, description: str, section: str | None = SECTION) -> Callable:
    def deco(fn: Callable[[Options], dict[str, Any]]) -> Callable[[Options], dict[str, Any]]:
        if name in SUITES:
            raise ValueError(f"bench suite '{name}' registered twice")
        SUITES[name] = Suite(name, description, fn, section)
        return fn

    return deco


def load_all() -> dict[str, Suite]:
    """Import every module of this package (each registers its suites)."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return SUITES


def run_suite(name: str, opts: Options, results: Path | None = None) -> dict[str, Any]:
    """Run suite ``name``; every piece of its report is printed and, with ``results``, appended there."""
    load_all()
    if name not in SUITES:
        raise ValueError(f"unknown bench suite '{name}'; suites: {', '.join(SUITES)}")
    chosen = SUITES[name]

    def emit(text: str) -> None:
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
        if results is not None:
            append_entry(results, text, chosen.section)

    return chosen.run(dataclasses.replace(opts, emit=emit))


def heading(opts: Options, what: str) -> str:
    return f"\n### {datetime.date.today().isoformat()} — {what}: `{opts.command}`\n\n"


def bench_and_emit(opts: Options, specs: list[Spec], overrides: list[str], note: str) -> dict[str, Any]:
    """:func:`~localssl.bench.run_bench` of ``specs`` (ratios against the last); its entry emitted."""
    log = functools.partial(print, file=sys.stderr)
    out = run_bench(specs, overrides, opts.rounds, opts.steps, opts.warmup, opts.memory_repeats, log=log)
    opts.emit(bench_entry(opts.command, out, note))
    return out
