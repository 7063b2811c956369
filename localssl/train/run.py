"""Start a run (:func:`pretrain`) or continue one (:func:`resume`), on one process or under ``torchrun``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from localssl import distributed
from localssl.build import resolve_device
from localssl.checkpoint import (
    RESUME_OVERRIDABLE,
    check_config_unchanged,
    check_format,
    remove_partial_writes,
)
from localssl.config import RunConfig, read_run_config, save_config
from localssl.data.run_data import check_run_data, pretrain_splits, record_run_data
from localssl.distributed import World
from localssl.runlock import RunLock, RunLockedError
from localssl.train.fast_path import resume_precision_note
from localssl.train.pipeline import PipelineTrainer
from localssl.train.setup import RunSetup
from localssl.train.stop import StopRequested
from localssl.train.trainer import Trainer
from localssl.utils import atomic_write_json, trim_csv

T = TypeVar("T")


def new_run_dir(cfg: RunConfig) -> Path:
    """A fresh directory ``out_dir/NAME-YYYYmmdd-HHMMSS[-k]``."""
    base = Path(cfg.out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = base / f"{cfg.name}-{stamp}"
    k = 1
    while run.exists():
        k += 1
        run = base / f"{cfg.name}-{stamp}-{k}"
    run.mkdir(parents=True)
    return run


def _join_world(cfg: RunConfig) -> tuple[World, bool]:
    """This process's rank (from ``torchrun``'s environment) and whether we started the process group."""
    world = distributed.world_from_env()
    started = world.distributed and not torch.distributed.is_initialized()
    timeout = cfg.train.stage_timeout if cfg.train.parallel == "layers" else None  # also bounds the collectives
    distributed.init(world, distributed.rank_device(resolve_device(cfg.train.device), world), timeout)
    return world, started


def make_trainer(setup: RunSetup, run_dir: Path) -> Trainer:
    """The trainer of this process: a stage of a layer-parallel run (``train.parallel=layers`` under
    ``torchrun``), else the trainer (one process, or a data-parallel rank)."""
    if setup.cfg.train.parallel == "layers" and setup.world.distributed:
        return PipelineTrainer(setup, run_dir)
    return Trainer(setup, run_dir)


def _on_main_then_share(world: World, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except (FileExistsError, FileNotFoundError, ValueError, RunLockedError, OSError) as err:
            error = err
    result, error = distributed.broadcast_object((result, error))
    if error is not None:
        raise error
    return result


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT), or a stop signal, stopped a run; the message says where its last checkpoint is. Still a
    ``KeyboardInterrupt``: callers that stop on Ctrl-C (the reproduction harness, job runners) still do."""


def _fit(trainer: Trainer) -> None:
    """``trainer.fit()``, turning Ctrl-C or a stop signal (:mod:`localssl.train.stop`) into a
    :class:`RunInterrupted` that names the last checkpoint and the command that continues the run."""
    try:
        trainer.fit()
    except KeyboardInterrupt as err:  # Ctrl-C, or a stop signal after its checkpoint (StopRequested)
        run = trainer.run_dir
        kept = (
            f"the last checkpoint ({trainer.checkpoint_at}) is kept in {run}"
            if trainer.checkpoint_at is not None
            else "no checkpoint was written yet (the run restarts from step 0, identically)"
        )
        what = str(err) if isinstance(err, StopRequested) else "interrupted"
        raise RunInterrupted(f"{what}; {kept}. Continue with: localssl pretrain --resume {run}") from None


def pretrain(cfg: RunConfig, run_dir: Path | None = None) -> Path:
    """Train a fresh run of ``cfg``; returns the run directory (under ``torchrun``: on every rank).

    Rank 0 holds the run's lock (:class:`~localssl.runlock.RunLock`) from before ``config.yaml`` is
    written until training ends."""
    world, started = _join_world(cfg)
    lock: RunLock | None = None  # rank 0's, once the run directory exists
    try:
        setup = RunSetup.prepare(cfg, world)  # bad settings or data fail here, before a run directory exists

        def prepare() -> str:
            nonlocal lock
            fresh = run_dir is None or not Path(run_dir).exists()
            path = Path(run_dir) if run_dir is not None else new_run_dir(setup.cfg)
            path.mkdir(parents=True, exist_ok=True)
            try:
                lock = RunLock(path).acquire()
                if (path / "checkpoint.pt").exists() or (path / "checkpoint.prev.pt").exists():
                    raise FileExistsError(f"{path} already holds a run; use `localssl pretrain --resume {path}`")
                remove_partial_writes(path)
                save_config(setup.cfg, path / "config.yaml")
                record_run_data(path, setup.cfg.data, atomic_write_json)  # checked by --resume and probe
            except BaseException:
                if fresh:  # refused before training: leave no run folder behind
                    _remove_new_run(path, lock)
                    lock = None
                raise
            return str(path)

        path = Path(_on_main_then_share(world, prepare))
        _fit(make_trainer(setup, path))
    finally:
        if lock is not None:
            lock.release()
        if started:
            distributed.shutdown()
    return path


def _remove_new_run(path: Path, lock: RunLock | None) -> None:
    """Remove the run folder this process just created and the files it wrote there (nothing else)."""
    if lock is not None:
        lock.release()
    for name in (".lock", "config.yaml", "dataset.json"):
        (path / name).unlink(missing_ok=True)
    remove_partial_writes(path)
    try:
        path.rmdir()
    except OSError:
        pass  # something else is in it: leave it


def check_overrides(overrides: list[str] | None) -> None:
    """Refuse a resume override of a setting the run must keep to continue exactly."""
    for item in overrides or []:
        key = item.split("=", 1)[0]
        if key not in RESUME_OVERRIDABLE:
            raise ValueError(
                f"'{key}' cannot change on resume (the run must continue exactly); "
                f"allowed: {', '.join(sorted(RESUME_OVERRIDABLE))}"
            )


def resume(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint (``train.epochs=N`` extends it).

    A run killed before its first checkpoint (it has a ``config.yaml`` but no checkpoint) is trained
    again from step 0, which gives the same run: the initialisation is seeded by ``train.seed``."""
    run_dir = Path(run_dir)
    has_checkpoint = (run_dir / "checkpoint.pt").exists() or (run_dir / "checkpoint.prev.pt").exists()
    if not has_checkpoint and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(
            f"{run_dir / 'checkpoint.pt'} does not exist: nothing to resume (start with `localssl pretrain`)"
        )
    check_overrides(overrides)
    cfg = read_run_config(run_dir, overrides)
    if any(item.split("=", 1)[0] == "train.precision" for item in overrides or []):
        cfg.train.precision_requested = None  # told explicitly now (auto: resolved afresh below)
    world, started = _join_world(cfg)
    lock = RunLock(run_dir)
    try:
        _on_main_then_share(world, lambda: bool(lock.acquire()))  # before anything of the run is read or written
        note = resume_precision_note(cfg.train, distributed.rank_device(resolve_device(cfg.train.device), world))
        if note and world.is_main:
            print(note, file=sys.stderr)
        setup = RunSetup.prepare(cfg, world)
        check_run_data(run_dir, setup.cfg.data, pretrain_splits(setup.cfg.data), "resumed: it pretrained on them")
        trainer = make_trainer(setup, run_dir)
        if has_checkpoint:
            ckpt, path = trainer.read_checkpoint()  # a layer-parallel stage: its own slice read
            check_format(ckpt, path)  # a hand-edited or foreign file: refused by name, not a traceback
            check_config_unchanged(ckpt, trainer.cfg, run_dir)
            trainer.load_state(ckpt)
        elif world.is_main:
            print(
                f"{run_dir}: no checkpoint was written before the run stopped; training it from step 0", file=sys.stderr
            )
        trains = trainer.comp.rule.trains_encoder or trainer.online_probe is not None
        if trainer.epoch >= cfg.train.epochs and trains:
            if world.is_main:  # nothing to train: leave every file of the run as it is
                print(
                    f"{run_dir}: already trained for {trainer.epoch} epochs (train.epochs={cfg.train.epochs}); "
                    f"nothing to do, nothing changed. To continue: --resume {run_dir} train.epochs={trainer.epoch + 1}",
                    file=sys.stderr,
                )
            return run_dir
        if world.is_main:
            remove_partial_writes(run_dir)  # temporary files of writes cut short by the crash
            for log in ("steps.csv", "metrics.csv"):  # rows logged after the checkpoint are trained again
                trim_csv(run_dir / log, trainer.global_step)
            save_config(trainer.cfg, run_dir / "config.yaml")
        _fit(trainer)
    finally:
        lock.release()
        trainer = None  # its DDP reducer holds the process group: dropped here, the group can be freed
        if started:
            distributed.shutdown()
    return run_dir
