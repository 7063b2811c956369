"""Appending a measured section to ``benchmarks/RESULTS.md``: a dated title, the command that produced
it, the machine, what was measured, then the table. Shared by the benchmark scripts."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine(threads: int) -> str:
    import torch

    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {threads} torch thread(s)"


def append_section(title: str, threads: int, setup: str, table: list[str], results: Path = RESULTS) -> None:
    """Append ``## TITLE — DATE`` with the invoking command, the machine, ``setup`` and ``table``."""
    command = "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    lines = ["", f"## {title} — {datetime.date.today()}", "", f"Command: `{command}`. {machine(threads)}.", setup, ""]
    with open(results, "a") as fh:
        fh.write("\n".join([*lines, *table]) + "\n")
