"""The local job runner under its first name: :mod:`localssl.experiments.engine.local` (``run_jobs``), which
the demo and the speed suites use directly (they measure this machine and stay local)."""

from __future__ import annotations

from localssl.experiments.engine.local import JobError, default_threads, run_jobs

__all__ = ["JobError", "default_threads", "run_jobs"]
