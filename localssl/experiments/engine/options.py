"""The command-line options of the engine's launcher (:mod:`localssl.experiments.engine.run`), kept apart from it so
that building the ``localssl`` parser imports nothing heavy."""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def launcher_options(s: argparse.ArgumentParser, one_run: bool) -> None:
    """``--launcher``, ``--executor KEY=VALUE``, ``--executor-file``; for ``pretrain`` (``one_run``) also
    ``--nodes`` and ``--gpus-per-node``, for ``reproduce`` ``--status`` and ``--retry-failed``."""
    s.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: this machine (default); slurm: submit through submitit (requeued on a time limit or preemption)",
    )
    s.add_argument(
        "--executor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a submitit executor setting (repeatable): timeout_min, slurm_partition, gpus_per_node, cpus_per_task, "
        "mem_gb, slurm_account, slurm_constraint, slurm_array_parallelism, slurm_additional_parameters, "
        "slurm_max_num_timeout, ...; signal=USR2 (what the cluster sends ahead of a limit)",
    )
    s.add_argument("--executor-file", metavar="FILE.yaml", help="executor settings as a YAML mapping (a lab's file)")
    if one_run:
        s.add_argument("--nodes", type=_positive_int, help="--launcher slurm: nodes of the job (submitit's nodes)")
        s.add_argument(
            "--gpus-per-node", type=int, help="--launcher slurm: GPUs per node, one task (rank) each (submitit's name)"
        )
        return
    s.add_argument(
        "--status",
        action="store_true",
        help="run nothing: each cell's state (pending, running with its job and step, requeued, finished, failed)",
    )
    s.add_argument("--retry-failed", action="store_true", help="--launcher slurm: submit failed cells again")
