"""Stop on a scheduler's signal: checkpoint where the run is, then exit.

A cluster scheduler that preempts or times out a job sends ``SIGTERM`` (SLURM, Kubernetes, ``torchrun``
forwarding its own), then ``SIGKILL`` after a grace period. Killed at once, a run keeps only its last
checkpoint (by default the end of the last epoch). While a run trains, :class:`StopSignals` turns
``SIGTERM`` (and ``SIGUSR1``, which ``sbatch --signal=USR1@SECONDS`` sends ahead of the time limit) into a
request the training loop reads at the next step boundary: it writes a mid-epoch checkpoint there (the
same exact-resume checkpoint as ``train.checkpoint_every``) and raises :class:`StopRequested`; ``localssl
pretrain --resume RUN`` then continues bit for bit. Who decides: one process at once; data-parallel ranks
at the next logged row (``train.log_every`` steps at most: the ranks agree there, so that they save the
same step); layer-parallel stages at the batch stage 0 marks, once the signal reached any stage (stage 0
itself, or another stage, which reports it to stage 0 with its next logged row): every stage saves after
that one batch, one checkpoint for the group. A ``SIGKILL`` that arrives before the save is committed leaves
the previous checkpoint, as any kill does (the save is atomic). Handlers are installed only in the main
thread and restored afterwards.

**Which signals.** ``SIGTERM``, ``SIGUSR1`` and ``SIGUSR2`` (submitit's and many SLURM sites' warning
ahead of a time limit or preemption, ``--signal=USR2@90``), or the comma-separated names in
``$LOCALSSL_STOP_SIGNALS`` (e.g. ``TERM,USR1``), read each time a run starts (:func:`stop_signals`); a
caller may pass its own set as ``StopSignals(signals=...)``."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)  # the default set
SIGNALS_ENV = "LOCALSSL_STOP_SIGNALS"


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run at a step: ``$LOCALSSL_STOP_SIGNALS`` (names, with or without ``SIG``,
    comma-separated) if set, else :data:`SIGNALS`. An unknown name is a one-line ``ValueError``."""
    names = [n.strip().upper() for n in os.environ.get(SIGNALS_ENV, "").split(",") if n.strip()]
    if not names:
        return SIGNALS
    out = []
    for n in names:
        full = n if n.startswith("SIG") else f"SIG{n}"
        if full not in signal.Signals.__members__:
            raise ValueError(f"{SIGNALS_ENV}: unknown signal '{n}' (e.g. TERM,USR1,USR2)")
        out.append(signal.Signals[full])
    return tuple(out)


class StopRequested(KeyboardInterrupt):
    """The run saved a checkpoint and stopped on a signal. A ``KeyboardInterrupt``, as Ctrl-C: callers
    that stop a job on Ctrl-C stop on this too. ``signum``: the signal this process received (``None`` when
    another rank's signal stopped the group)."""

    def __init__(self, message: str = "", signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """While entered, the ``signals`` (default :func:`stop_signals`) set :attr:`signum` instead of ending the
    process."""

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        self.signals = tuple(signals) if signals is not None else stop_signals()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous = {}
